"""Reverse-mode automatic differentiation: Tensor, Function and backward.

A :class:`Tensor` wraps a backend array (``numpy.ndarray`` or
``cupy.ndarray``). Calling a :class:`Function` on tensors computes the result
on the raw arrays and, when a gradient is wanted, records the function as the
result's ``creator``. ``loss.backward()`` then visits the recorded functions
from the newest to the oldest and hands each one the gradient of its output.

Three rules keep this small and correct:

* Order by *generation* (one more than the newest input, :func:`backward_order`), never by
  recursion: a node reused by several consumers receives all of their
  gradients before it passes its own on, and deep graphs cannot overflow the
  Python stack.
* Broadcasting is undone in one place (:func:`unbroadcast`), so no op has to
  remember which of its inputs was broadcast.
* Each gradient is checked against its input (array module, dtype, shape)
  right after the op that produced it, so a mistake names the op.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import backend


# ----------------------------------------------------------------------------
# Gradient mode

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block, operations record no graph (inference, updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


# ----------------------------------------------------------------------------
# Tensor


def default_dtype(array) -> np.dtype:
    """float32 for any floating input (the house default), else keep the dtype."""
    dtype = np.dtype(array.dtype)
    return np.dtype(np.float32) if dtype.kind == "f" else dtype


class Tensor:
    """An array with an optional gradient and a link to the op that made it.

    Build one with :func:`minigen.tensor`; the constructor wraps an existing
    backend array as it is.
    """

    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        self.data = data
        self.grad = None
        self.creator = None  # the Function that produced this tensor
        self.generation = 0
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- description ---------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20)
        extra = ", requires_grad=True" if self.requires_grad else ""
        device = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({body}, dtype={self.dtype}{device}{extra})"

    # -- conversion ----------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_device(self.data, "cpu")

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(-1)[0].item()

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device``: ``self`` if already there, else a new leaf copy."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        out = Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)
        if self.grad is not None:
            out.grad = backend.to_device(self.grad, device)
        return out

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no gradient will flow through it)."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and np.dtype(self.dtype).kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype}; "
                "create it with dtype='float32'"
            )
        self.requires_grad = bool(flag)
        return self

    # -- backward ------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` defaults to 1 for a one-element tensor. The graph is freed
        afterwards unless ``retain_graph`` is true.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad; create the inputs with "
                "requires_grad=True and do not compute it under no_grad()"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward(): the tensor has shape {self.shape}; pass grad= of that shape, "
                    "or reduce it to one element first (e.g. .sum())"
                )
            grad = xp.ones_like(self.data)
        else:
            given = grad.data if isinstance(grad, Tensor) else grad
            if isinstance(given, np.ndarray) or backend.is_cupy_array(given):  # no silent copy to this device
                backend.check_same_device([self.data, given], "backward(grad=...)")
            grad = given if isinstance(grad, Tensor) else xp.asarray(given, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"backward(): grad has shape {tuple(grad.shape)}, expected {self.shape}")
        run_backward(self, grad, retain_graph)

    # Operators, reductions and the rest are attached in ops.py.


def _accumulate_leaf(leaf: Tensor, grad) -> None:
    # A fresh copy on first write: several ops return the very array they were
    # given (add's backward, reshape's view), and leaf gradients must not alias.
    leaf.grad = grad.copy() if leaf.grad is None else _add(leaf.grad, grad)


def _add(a, b):
    """a + b as an array: NumPy turns the sum of two 0-d arrays into a scalar, which
    an optimizer could not update in place."""
    return backend.get_array_module(a).asarray(a + b)


def backward_order(root: "Function") -> list:
    """Every function that ``root``'s gradient must pass through, each exactly once,
    consumers before producers: newest generation first (ties in discovery order).

    What you may use: a Function ``fn`` has ``fn.inputs`` (a tuple of the
    Tensors it was called on; empty or None once its graph is freed) and
    ``fn.generation`` (an int); a Tensor ``x`` has ``x.requires_grad`` and
    ``x.creator`` (the Function that made it, None for a leaf). Returns a list
    of Functions starting with ``root``.

    A function's generation is one more than its newest input's, so every
    function that uses a tensor comes before the function that made it: when a
    function's turn comes, all of its output's gradient has arrived. Only inputs
    that require grad are followed. A loop over a to-do list, not recursion, so
    deep graphs cannot overflow the Python stack.
    """
    ### BEGIN SOLUTION
    order, seen, todo = [], {id(root)}, [root]
    while todo:
        fn = todo.pop()
        order.append(fn)
        for x in fn.inputs or ():  # a freed graph has no inputs; run_backward reports it
            if x.requires_grad and x.creator is not None and id(x.creator) not in seen:
                seen.add(id(x.creator))
                todo.append(x.creator)
    order.sort(key=lambda fn: -fn.generation)  # a stable sort keeps ties in discovery order
    return order
    ### END SOLUTION


def run_backward(root: Tensor, grad, retain_graph: bool = False) -> None:
    """Propagate ``grad`` from ``root`` to every leaf, in :func:`backward_order`."""
    if root.creator is None:
        _accumulate_leaf(root, grad)
        return
    # Gradients of non-leaf tensors not yet consumed, keyed by the function
    # that made the tensor (each function has exactly one output).
    pending = {id(root.creator): grad}
    for fn in backward_order(root.creator):
        if fn.inputs is None:
            raise RuntimeError(
                f"{fn.name}: backward through a freed graph; call backward(retain_graph=True) "
                "the first time to go through the graph twice"
            )
        grads_in = fn.backward(pending.pop(id(fn)))
        if not isinstance(grads_in, tuple):
            grads_in = (grads_in,)
        for index, (x, gx) in enumerate(zip(fn.inputs, grads_in)):
            if not x.requires_grad:
                continue
            if gx is not None:  # NumPy may hand back 0-d results as scalars
                gx = unbroadcast(backend.get_array_module(x.data).asarray(gx), x.shape)
            _check_grad(fn, index, gx, x)
            if x.creator is None:
                _accumulate_leaf(x, gx)
            else:
                key = id(x.creator)
                pending[key] = gx if key not in pending else _add(pending[key], gx)
        if not retain_graph:
            fn.release()


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting to grad.shape.

    Broadcasting adds leading axes and stretches axes of size 1; their
    gradient is the sum over the copies, so sum the extra leading axes away
    and sum each stretched axis keeping it as size 1.
    """
    if grad is None or tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return grad  # cannot be a broadcast; _check_grad reports the mismatch
    ### BEGIN SOLUTION
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad
    ### END SOLUTION


def _check_grad(fn, index: int, grad, x: Tensor) -> None:
    """Chainer's type check: a gradient must look exactly like its input."""
    problem = None
    if grad is None:
        problem = "returned None for an input that requires grad"
    elif backend.get_array_module(grad) is not backend.get_array_module(x.data):
        problem = f"returned a {type(grad).__module__} array for an input on {x.device}"
    elif grad.dtype != x.dtype:
        problem = f"returned dtype {grad.dtype} for an input of dtype {x.dtype}"
    elif tuple(grad.shape) != x.shape:
        problem = f"returned shape {tuple(grad.shape)} for an input of shape {x.shape}"
    if problem:
        raise TypeError(f"{fn.name}.backward {problem} (input {index})")


# ----------------------------------------------------------------------------
# Function


class DtypeError(TypeError):
    """Two different floating dtypes met in one op (convert one with ``astype``)."""


def float_dtype(inputs, what: str):
    """The floating dtype an op on ``inputs`` computes in, or None when nothing is floating.

    Type promotion as in PyTorch, in this one place: Python and NumPy scalars,
    constant arrays and integer or boolean tensors never widen a float tensor
    (they are cast to its dtype, so float32 stays float32); with no float
    tensor, a float constant gives float32, the default. Two float tensors of
    different dtypes are an error here, naming the op (``what``), rather than a
    dtype mismatch that would surface only later, in backward.
    """
    first = None  # (index, dtype) of the first float tensor; a plain loop, as every op call passes here
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.data.dtype.kind == "f":
            if first is None:
                first = (i, x.data.dtype)
            elif x.data.dtype != first[1]:
                raise DtypeError(
                    f"{what}: cannot mix {first[1]} (input {first[0]}) and {x.data.dtype} (input {i}); "
                    f"convert one first, e.g. x.astype({str(first[1])!r})"
                )
    if first is not None:
        return first[1]
    constants = [x if hasattr(x, "dtype") else np.asarray(x) for x in inputs if not isinstance(x, Tensor)]
    return np.dtype(np.float32) if any(c.dtype.kind == "f" for c in constants) else None


def as_tensor(value, like: Tensor | None = None, dtype=None) -> Tensor:
    """A Tensor for an op input: tensors pass through, constants are wrapped.

    Constants take the device of ``like`` and the floating dtype ``dtype``
    (default: ``like``'s if floating, else float32 for float data), so ``x * 2``
    stays float32 and stays on x's device. Given a floating ``dtype``, an
    integer or boolean tensor is cast to it too (a constant of the float op).
    """
    if isinstance(value, Tensor):
        if dtype is not None and value.data.dtype.kind in "iub":
            return Tensor(value.data.astype(dtype))
        return value
    xp = np
    if like is not None:
        xp = backend.get_array_module(like.data)
        if not isinstance(value, (int, float, bool, np.number)) and backend.device_of(value) != like.device:
            raise backend.DeviceError(
                f"a {backend.device_of(value)} array was mixed with a {like.device} tensor; "
                "wrap it with mg.tensor(..., device=...) on one device first"
            )
    array = xp.asarray(value)
    if dtype is None:
        dtype = like.dtype if like is not None and like.dtype.kind == "f" else default_dtype(array)
    if array.dtype.kind in "fiub" and np.dtype(dtype).kind == "f":
        array = array.astype(dtype, copy=False)
    return Tensor(array)


class Function:
    """One differentiable operation on raw backend arrays.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(grad) -> tuple of arrays`` (one per input, in order; ``None``
    for an input that needs no gradient, see ``self.needs_input_grad``).
    ``forward`` stores on ``self`` only what ``backward`` needs. The inputs'
    dtypes are settled by :func:`float_dtype` (integer tensors join a float op
    as floats), so an op that needs an integer or boolean array as it is (an
    index, a mask) takes it as a constructor argument, as Where and GetItem do.
    """

    inputs = None
    generation = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, *inputs) -> Tensor:
        like = next((x for x in inputs if isinstance(x, Tensor)), None)
        dtype = float_dtype(inputs, self.name)  # raises on mixed float dtypes
        tensors = [as_tensor(x, like, dtype) for x in inputs]
        backend.check_same_device([t.data for t in tensors], self.name)
        self.needs_input_grad = tuple(t.requires_grad for t in tensors)
        xp = backend.get_array_module(tensors[0].data)
        # asarray: NumPy turns 0-d results into scalars; keep them arrays.
        output = Tensor(xp.asarray(self.forward(*(t.data for t in tensors))))
        if _grad_enabled and any(self.needs_input_grad):
            self.inputs = tensors
            self.generation = max(t.generation for t in tensors)
            output.requires_grad = True
            output.creator = self
            output.generation = self.generation + 1
        return output

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self) -> None:
        """Drop the inputs and saved arrays once backward has used them."""
        generation = self.generation
        self.__dict__.clear()  # inputs, saved arrays and parameters
        self.generation = generation

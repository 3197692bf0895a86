"""The elementary differentiable operations, and Tensor's operators.

Each op is one small class: ``forward`` on raw arrays, ``backward`` returning
one gradient per input. Gradients of broadcast inputs come back at the
broadcast shape; the engine sums them down (``autograd.unbroadcast``).
"""

from __future__ import annotations

import numpy as np

from . import backend
from .backend import get_array_module
from .autograd import Function, Tensor, as_tensor



# ----------------------------------------------------------------------------
# Backward rules written as functions (graded exercises 2.2 and 2.3)


def mul_backward(grad, a, b, needs=(True, True)):
    """Gradients of y = a * b (elementwise, maybe broadcast): dL/da = dL/dy * b, dL/db = dL/dy * a.

    Returns ``(ga, gb)`` at the broadcast shape (the engine sums them down to
    each input's shape); an entry is None where ``needs`` says that input
    wants no gradient.
    """
    ### BEGIN SOLUTION
    ga = grad * b if needs[0] else None
    gb = grad * a if needs[1] else None
    return ga, gb
    ### END SOLUTION


def matmul_backward(grad, a, b, needs=(True, True)):
    """Gradients of Y = A @ B for matrices (or stacks of them, batch axes first):
    dA = dY B^T and dB = A^T dY, transposing the last two axes only.

    Returns ``(ga, gb)``; an entry is None where ``needs`` says that input
    wants no gradient. Broadcast batch axes come back at the broadcast shape.
    """
    ### BEGIN SOLUTION
    ga = grad @ b.swapaxes(-1, -2) if needs[0] else None
    gb = a.swapaxes(-1, -2) @ grad if needs[1] else None
    return ga, gb
    ### END SOLUTION


# ----------------------------------------------------------------------------
# Arithmetic


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        return mul_backward(grad, self.a, self.b, self.needs_input_grad)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        ga = grad / self.b
        gb = -ga * self.a / self.b if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


class Pow(Function):
    """a ** b; the gradient for b (a^b log a) is computed only when asked for.

    Where a = 0 the formulas meet 0 * inf; as in PyTorch, d/da is 0 where b = 0
    (a^0 = 1 for every a) and d/db is 0 where a = 0 and b >= 0 (0^b is 0 or 1
    there). Other infinities are the true values: d/da at a = 0 is +inf for
    0 < b < 1, and a^b itself is inf for b < 0.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, grad):
        a, b = self.a, self.b
        xp = get_array_module(a)
        zero = xp.zeros((), dtype=grad.dtype)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** (b - 1) and log(0), replaced below
            if self.needs_input_grad[0]:
                ga = xp.where(b == 0, zero, grad * b * a ** (b - 1))
            if self.needs_input_grad[1]:
                gb = xp.where((a == 0) & (b >= 0), zero, grad * self.y * xp.log(a))
        return ga, gb


class MatMul(Function):
    """Matrix product with NumPy's rules: 1-D operands and broadcast batch dims.

    A 1-D operand is treated as a row (left) or column (right) matrix, so the
    backward is always the 2-D rule: dA = dY B^T, dB = A^T dY.
    """

    def forward(self, a, b):
        self.a = a[None, :] if a.ndim == 1 else a
        self.b = b[:, None] if b.ndim == 1 else b
        self.a_is_vector, self.b_is_vector = a.ndim == 1, b.ndim == 1
        return a @ b

    def backward(self, grad):
        a, b = self.a, self.b
        grad = grad.reshape(grad.shape[: grad.ndim - (2 - self.a_is_vector - self.b_is_vector)]
                            + a.shape[-2:-1] + b.shape[-1:])
        ga, gb = matmul_backward(grad, a, b, self.needs_input_grad)
        if ga is not None and self.a_is_vector:
            ga = ga[..., 0, :]
        if gb is not None and self.b_is_vector:
            gb = gb[..., 0]
        return ga, gb


# ----------------------------------------------------------------------------
# Elementwise functions


class Exp(Function):
    def forward(self, a):
        self.y = get_array_module(a).exp(a)
        return self.y

    def backward(self, grad):
        return grad * self.y


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, grad):
        return grad / self.a


class Sqrt(Function):
    def forward(self, a):
        self.y = get_array_module(a).sqrt(a)
        return self.y

    def backward(self, grad):
        return grad / (2 * self.y)


class Tanh(Function):
    def forward(self, a):
        self.y = get_array_module(a).tanh(a)
        return self.y

    def backward(self, grad):
        return grad * (1 - self.y * self.y)


class Sigmoid(Function):
    """1 / (1 + e^-a), written e^a / (1 + e^a) where a < 0. With e = e^-|a| <= 1
    nothing overflows, and tiny values keep their relative accuracy in float32
    (0.5 + 0.5 tanh(a / 2) rounds sigmoid(-17) = 4.1e-8 to 6.0e-8 and sigmoid(-25) to 0)."""

    def forward(self, a):
        xp = get_array_module(a)
        self.e = xp.exp(-xp.abs(a))
        return xp.where(a >= 0, 1, self.e) / (1 + self.e)

    def backward(self, grad):
        # sigmoid(a) sigmoid(-a) = e / (1 + e)^2 on both sides, free of the rounding in 1 - y.
        d = 1 + self.e
        return grad * (self.e / d / d)


class ReLU(Function):
    """max(a, 0): ``maximum`` forward (a SIMD pass, faster than ``a * mask``),
    the saved mask times the gradient backward (``where`` is ten times slower)."""

    def forward(self, a):
        xp = get_array_module(a)
        self.positive = a > 0
        return xp.maximum(a, 0)

    def backward(self, grad):
        return grad * self.positive


class Abs(Function):
    def forward(self, a):
        self.sign = get_array_module(a).sign(a)
        return get_array_module(a).abs(a)

    def backward(self, grad):
        return grad * self.sign


class Clip(Function):
    """Clamp to [low, high]; the gradient passes only where no clamping happened."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, a):
        self.inside = (a >= (-np.inf if self.low is None else self.low)) & (
            a <= (np.inf if self.high is None else self.high)
        )
        return get_array_module(a).clip(a, self.low, self.high)

    def backward(self, grad):
        return grad * self.inside


class Where(Function):
    """``a`` where ``condition`` holds, else ``b`` (condition is a constant)."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, grad):
        zero = get_array_module(grad).zeros((), dtype=grad.dtype)
        return (get_array_module(grad).where(self.condition, grad, zero), get_array_module(grad).where(self.condition, zero, grad))


# ----------------------------------------------------------------------------
# Reductions


def _normalize_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % ndim for a in axes))


def _expand_reduced(grad, axes: tuple, keepdims: bool):
    """Put back the reduced axes (as size 1) so grad broadcasts against the input."""
    return grad if keepdims else get_array_module(grad).expand_dims(grad, axes)


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        self.axes = _normalize_axes(self.axis, a.ndim)
        self.shape = a.shape
        return a.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        grad = _expand_reduced(grad, self.axes, self.keepdims)
        return get_array_module(grad).broadcast_to(grad, self.shape)


class Max(Function):
    """Maximum over axes. Ties: the whole gradient goes to the first maximum in
    C order (like ``argmax``), so the result is deterministic."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        self.axes = _normalize_axes(self.axis, a.ndim)
        self.a = a
        return a.max(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        a, axes = self.a, self.axes
        xp = get_array_module(a)
        kept = [i for i in range(a.ndim) if i not in axes]
        order = kept + list(axes)  # reduced axes last, flattened into one
        moved = a.transpose(order)
        flat = moved.reshape(moved.shape[: len(kept)] + (-1,))
        first = xp.argmax(flat, axis=-1)[..., None]
        onehot = xp.arange(flat.shape[-1]) == first
        mask = onehot.reshape(moved.shape).transpose(np.argsort(order))
        return _expand_reduced(grad, axes, self.keepdims) * mask


# ----------------------------------------------------------------------------
# Shapes and indexing


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, grad):
        return grad.reshape(self.in_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, a):
        ndim = a.ndim
        self.axes = tuple(range(ndim))[::-1] if self.axes is None else tuple(i % ndim for i in self.axes)
        return a.transpose(self.axes)

    def backward(self, grad):
        return grad.transpose(np.argsort(self.axes))


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        return get_array_module(a).broadcast_to(a, self.shape)

    def backward(self, grad):
        return grad  # the engine sums it back to the input's shape


def _is_basic_index(index) -> bool:
    """True for ints, slices, None and Ellipsis only: no element can repeat."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _index_arrays(index, xp):
    """Turn Tensor (and list) parts of an index into backend arrays."""
    def convert(i):
        if isinstance(i, Tensor):
            return i.data
        if isinstance(i, list):
            return xp.asarray(i)
        return i

    return tuple(convert(i) for i in index) if isinstance(index, tuple) else convert(index)


class GetItem(Function):
    """x[index]. Backward scatters the gradient back; repeated integer indices
    add up (``scatter_add``), basic slices are written directly."""

    def __init__(self, index):
        self.index = index

    def forward(self, a):
        parts = self.index if isinstance(self.index, tuple) else (self.index,)
        backend.check_same_device([a] + [i.data for i in parts if isinstance(i, Tensor)], "indexing")
        self.index = _index_arrays(self.index, get_array_module(a))
        self.in_shape, self.in_dtype = a.shape, a.dtype
        return a[self.index]

    def backward(self, grad):
        xp = get_array_module(grad)
        out = xp.zeros(self.in_shape, dtype=self.in_dtype)
        if _is_basic_index(self.index):
            out[self.index] = grad
        else:
            backend.scatter_add(out, self.index, grad)
        return out


class Cast(Function):
    """x.astype(dtype); the gradient is cast back to the input's dtype."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, a):
        self.in_dtype = a.dtype
        return a.astype(self.dtype)

    def backward(self, grad):
        return grad.astype(self.in_dtype)


class Concatenate(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *arrays):
        self.sizes = [a.shape[self.axis] for a in arrays]
        return get_array_module(*arrays).concatenate(arrays, axis=self.axis)

    def backward(self, grad):
        splits = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(get_array_module(grad).split(grad, splits, axis=self.axis))


# ----------------------------------------------------------------------------
# Public functions (also attached to Tensor as methods and operators)


def add(a, b): return Add()(a, b)
def sub(a, b): return Sub()(a, b)
def mul(a, b): return Mul()(a, b)
def div(a, b): return Div()(a, b)
def neg(a): return Neg()(a)
def pow(a, b): return Pow()(a, b)
def matmul(a, b): return MatMul()(a, b)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def tanh(x): return Tanh()(x)
def sigmoid(x): return Sigmoid()(x)
def relu(x): return ReLU()(x)
def abs(x): return Abs()(x)


def clip(x, low=None, high=None):
    """Clamp ``x`` to ``[low, high]`` (either bound may be None)."""
    return Clip(low, high)(x)


def where(condition, a, b):
    """Elementwise ``a if condition else b``; ``condition`` gets no gradient.

    The condition (a boolean Tensor, array or list) must be on the device of
    the tensors among ``a`` and ``b``; when both are constants, the result is
    made on the condition's device.
    """
    if isinstance(condition, Tensor):
        condition = condition.data
    tensors = [x for x in (a, b) if isinstance(x, Tensor)]
    device = tensors[0].device if tensors else backend.device_of(condition)
    if not (isinstance(condition, np.ndarray) or backend.is_cupy_array(condition)):  # a list or a bool:
        condition = backend.xp_for(device).asarray(condition)  # made where the tensors are
    backend.check_same_device([condition] + [t.data for t in tensors], "where")
    if not tensors:
        a = as_tensor(a).to(device)
    return Where(condition)(a, b)


def sum(x, axis=None, keepdims=False): return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    x = as_tensor(x)
    count = int(np.prod([x.shape[i] for i in _normalize_axes(axis, x.ndim)]))
    return sum(x, axis, keepdims) / count


def max(x, axis=None, keepdims=False): return Max(axis, keepdims)(x)
def min(x, axis=None, keepdims=False): return -max(-as_tensor(x), axis, keepdims)


def reshape(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape(tuple(shape))(x)


def transpose(x, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    return Transpose(tuple(axes) if axes else None)(x)


def broadcast_to(x, shape): return BroadcastTo(shape)(x)


def astype(x, dtype):
    """``x`` converted to ``dtype`` (a copy). Gradients flow only between floating dtypes:
    a cast to an integer or boolean dtype gives a constant, as rounding has no gradient."""
    x = as_tensor(x)
    if np.dtype(dtype) == x.dtype:
        return x
    if np.dtype(dtype).kind != "f":
        return Tensor(x.data.astype(np.dtype(dtype)))
    return Cast(dtype)(x)
def getitem(x, index): return GetItem(index)(x)


def cat(tensors, axis=0):
    """Join tensors along an existing axis."""
    return Concatenate(axis)(*tensors)


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    tensors = [as_tensor(t) for t in tensors]
    axis = axis % (tensors[0].ndim + 1)
    return cat([reshape(t, t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors], axis)


# ----------------------------------------------------------------------------
# Tensor methods and operators


def _swap(f):
    return lambda self, other: f(other, self)


def _compare(f):
    return lambda self, other: Tensor(f(self.data, other.data if isinstance(other, Tensor) else other))


_METHODS = {
    "__add__": add, "__radd__": _swap(add), "__sub__": sub, "__rsub__": _swap(sub),
    "__mul__": mul, "__rmul__": _swap(mul), "__truediv__": div, "__rtruediv__": _swap(div),
    "__pow__": pow, "__rpow__": _swap(pow), "__matmul__": matmul, "__rmatmul__": _swap(matmul),
    "__neg__": neg, "__getitem__": getitem,
    "__lt__": _compare(lambda a, b: a < b), "__le__": _compare(lambda a, b: a <= b),
    "__gt__": _compare(lambda a, b: a > b), "__ge__": _compare(lambda a, b: a >= b),
    "exp": exp, "log": log, "sqrt": sqrt, "tanh": tanh, "sigmoid": sigmoid, "relu": relu,
    "abs": abs, "clip": clip, "sum": sum, "mean": mean, "max": max, "min": min,
    "reshape": reshape, "transpose": transpose, "broadcast_to": broadcast_to, "astype": astype,
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(lambda self: transpose(self))
del _name, _fn

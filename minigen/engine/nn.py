"""Layers with parameters: Module, Parameter and the building blocks of the models.

A :class:`Module` is a function with state. Assigning a :class:`Parameter` or
another Module as an attribute registers it, in assignment order, so that

    model.parameters()        # every Parameter, for the optimizer
    model.state_dict()        # every Parameter and buffer, by dotted name
    model.to("cuda")          # moves all of them

find it without being told. Names follow PyTorch, and so does the
initialisation of every layer (see each class).
"""

from __future__ import annotations

import contextlib
import math
from collections import namedtuple

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad


class Parameter(Tensor):
    """A tensor that a Module trains: a float32 leaf that requires grad."""

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        xp = backend.get_array_module(data)
        super().__init__(xp.asarray(data, dtype=np.float32), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def is_array(value) -> bool:
    return isinstance(value, np.ndarray) or backend.is_cupy_array(value)


_KINDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean"}


def _entry_problem(like, value):
    """Why ``value`` cannot replace the array ``like``, as (kind of problem, details), or None.

    Only a NumPy/CuPy array or a Tensor of the same kind of number fits: float
    for float, integer for integer, bool for bool (the precision may differ, as
    loading casts). Strings and Python objects never fit; NaN and inf do, as a
    checkpoint of a diverged run is still what was saved.
    """
    data = value.data if isinstance(value, Tensor) else value
    if not is_array(data):
        return "unusable values", f"is a {type(value).__name__}, not an array or Tensor"
    kind = _KINDS.get(np.dtype(like.dtype).kind, like.dtype)
    if _KINDS.get(np.dtype(data.dtype).kind) != kind:
        return "unusable values", f"has dtype {data.dtype}, expected {kind} numbers (like {like.dtype})"
    if tuple(data.shape) != tuple(like.shape):
        return "shape mismatch", f"expected {tuple(like.shape)}, got {tuple(data.shape)}"
    return None


def check_state(owner: str, expected: dict, state: dict, strict: bool = True, problems=()) -> IncompatibleKeys:
    """Compare ``state`` with ``expected`` (both map names to arrays) before loading.

    Raises ValueError listing every problem at once: names that differ (only
    when ``strict``, with shapes), entries that are not numeric arrays or
    Tensors, of the wrong kind of number (see :func:`_entry_problem`) or of the
    wrong shape (always), after any ``problems`` the caller found itself.
    Returns the missing and unexpected names. Used by ``Module.load_state_dict``,
    the optimizers and ``optim.EMA``, which must reject a bad state before
    changing anything.
    """
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    found = [(name, _entry_problem(expected[name], state[name])) for name in expected if name in state]
    found = [(name, problem) for name, problem in found if problem]
    problems = list(problems)
    if strict and missing:
        problems.append("missing keys " + ", ".join(f"{n!r} {tuple(expected[n].shape)}" for n in missing))
    if strict and unexpected:
        problems.append("unexpected keys " + ", ".join(f"{n!r} {tuple(np.shape(state[n]))}" for n in unexpected))
    for heading in ("unusable values", "shape mismatch"):
        named = [f"{name!r}: {details}" for name, (kind, details) in found if kind == heading]
        if named:
            problems.append(f"{heading} " + ", ".join(named))
    if problems:
        raise ValueError(f"{owner}: the state does not match; " + "; ".join(problems) + ". Nothing was loaded.")
    return IncompatibleKeys(missing, unexpected)


def array_like(value, like):
    """A fresh copy of ``value`` (array or Tensor) with ``like``'s device and dtype."""
    if isinstance(value, Tensor):
        value = value.data
    device = backend.device_of(like)
    return backend.xp_for(device).array(backend.to_device(value, device), dtype=like.dtype)


_STATE = ("_parameters", "_buffers")  # the registries that state_dict() saves


def _stored_array(module: "Module", registry: str, key: str):
    """The array behind a registry entry: a parameter's data, or the buffer itself."""
    value = getattr(module, registry)[key]
    return value.data if registry == "_parameters" else value


class Module:
    """Base class of every layer and model: subclasses set attributes and define forward().

    ``module(x)`` calls ``module.forward(x)``. Call ``super().__init__()``
    first in a subclass's ``__init__``.
    """

    def __init__(self):
        # Written through object.__setattr__: our own __setattr__ needs them to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        self.training = True

    # -- registration --------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        """Register Parameters and Modules; update buffers; store anything else plainly."""
        attributes = self.__dict__
        if "_modules" not in attributes:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(
                    f"cannot assign {name!r} before Module.__init__(); "
                    f"call super().__init__() first in {type(self).__name__}.__init__"
                )
            object.__setattr__(self, name, value)
            return
        if name in self._buffers:
            self._set_buffer(name, value)
            return
        kind = "_parameters" if isinstance(value, Parameter) else "_modules" if isinstance(value, Module) else None
        for registry in ("_parameters", "_modules"):
            if registry != kind:
                attributes[registry].pop(name, None)
        if kind is None:
            object.__setattr__(self, name, value)
        else:
            attributes.pop(name, None)
            attributes[kind][name] = value  # a reassigned name keeps its place

    def __getattr__(self, name: str):
        # Called only when normal lookup fails: the registries hold the rest.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__[registry]:
                del self.__dict__[registry][name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array) -> None:
        """Keep ``array`` (a NumPy or CuPy array) as state that is saved and moved but never trained.

        Buffers appear in ``state_dict()`` and follow ``to(device)``; they are
        not parameters, so optimizers and EMA leave them alone (a diffusion
        schedule is the typical buffer).
        """
        if "." in name or not name:
            raise KeyError(f"register_buffer: invalid name {name!r} (non-empty, without '.')")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"register_buffer: {name!r} is already a parameter or submodule")
        self.__dict__.pop(name, None)
        self._set_buffer(name, array)

    def _set_buffer(self, name: str, array) -> None:
        if not is_array(array):
            raise TypeError(
                f"buffer {name!r} must be a NumPy or CuPy array, got {type(array).__name__}; "
                "pass tensor.data for a Tensor"
            )
        self._buffers[name] = array

    # -- traversal -----------------------------------------------------------
    def _entries(self, registries: tuple):
        """(dotted name, owning module, registry, key) for each registered object, each once."""
        seen = set()
        for module_name, module in self.named_modules():
            for registry in registries:
                for key, value in getattr(module, registry).items():
                    if id(value) not in seen:
                        seen.add(id(value))
                        yield (f"{module_name}.{key}" if module_name else key), module, registry, key

    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module (name ``prefix``) and all below it."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self):
        """(dotted name, Parameter) pairs, e.g. ("blocks.0.conv.weight", ...), in assignment order."""
        return ((name, module._parameters[key]) for name, module, _, key in self._entries(("_parameters",)))

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return ((name, module._buffers[key]) for name, module, _, key in self._entries(("_buffers",)))

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def num_parameters(self) -> int:
        """How many numbers the parameters hold in total."""
        return sum(p.size for p in self.parameters())

    # -- modes, gradients, devices ------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and below (Dropout reads it). Returns self."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self):
        """Inside this block: eval mode and no graph; afterwards the previous mode is back.

        Sampling and scoring use it, so that a model being trained can be
        evaluated in the middle of training and carry on as it was.
        """
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield self
        finally:
            self.train(was_training)

    def zero_grad(self) -> None:
        """Forget the gradients (set them to None) before the next backward."""
        for p in self.parameters():
            p.grad = None

    def to(self, device: str) -> "Module":
        """Move every parameter (with its gradient) and buffer to ``device``, in place. Returns self.

        The Parameter objects stay the same, only their arrays are replaced,
        so an optimizer built before the move keeps working.
        """
        device = backend.check_device(device)
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        for module in self.modules():
            for name, array in module._buffers.items():
                module._buffers[name] = backend.to_device(array, device)
        return self

    # -- saving and loading --------------------------------------------------
    def _state_entries(self) -> dict:
        """name -> (module, registry, key) for every parameter and buffer; each module's own first."""
        return {name: (module, registry, key) for name, module, registry, key in self._entries(_STATE)}

    def state_dict(self) -> dict:
        """Copies of every parameter and buffer array, by dotted name (on their device)."""
        return {name: _stored_array(*where).copy() for name, where in self._state_entries().items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state`` (name -> array) into the parameters and buffers.

        Everything is checked first; on any problem a ValueError lists every
        missing, unexpected and mis-shaped name with its shape, and every entry
        that is not an array or Tensor of the right kind of number (a string or
        object array, a float array for an integer buffer), and nothing changes.
        Arrays are copied to each parameter's device and dtype (so a NumPy
        state loads into a model on the GPU). ``strict=False`` allows missing
        and unexpected names and returns them.
        """
        entries = self._state_entries()
        current = {name: _stored_array(*where) for name, where in entries.items()}
        result = check_state(f"{type(self).__name__}.load_state_dict", current, state, strict)
        for name, (module, registry, key) in entries.items():
            if name not in state:
                continue
            new = array_like(state[name], current[name])
            if registry == "_parameters":
                module._parameters[key].data = new
            else:
                module._buffers[key] = new
        return result

    # -- calling and printing ------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The settings shown between the parentheses of repr (override in layers)."""
        return ""

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not self._modules:
            return head + ")"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        return head + "\n" + "\n".join(lines) + "\n)"


# ----------------------------------------------------------------------------
# Initialisation (on the CPU from the seeded generator, so a seed gives the
# same model on every device; move it with .to(device)).


def _uniform(shape: tuple, bound: float):
    """float32 samples from U(-bound, bound)."""
    return backend.generator("cpu").uniform(-bound, bound, size=shape).astype(np.float32)


def _check_sizes(layer: str, **sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------
# Layers with parameters


class Linear(Module):
    """y = x @ weight.T + bias, with weight of shape (out_features, in_features).

    Initialisation (PyTorch's): weight and bias ~ U(-k, k) with
    k = 1 / sqrt(in_features). For the weight this is kaiming_uniform with
    a = sqrt(5): gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound gain * sqrt(3 / fan_in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        self.bias = Parameter(_uniform((out_features,), bound)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution over NCHW images; weight (out_channels, in_channels, kh, kw).

    Initialisation (PyTorch's): weight and bias ~ U(-k, k) with
    k = 1 / sqrt(fan_in), fan_in = in_channels * kh * kw (kaiming_uniform, a = sqrt(5)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True):
        super().__init__()
        kh, kw = F.as_pair(kernel_size, "Conv2d: kernel_size", 1)
        _check_sizes("Conv2d", in_channels=in_channels, out_channels=out_channels, kernel_height=kh, kernel_width=kw)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        bound = 1 / math.sqrt(in_channels * kh * kw)
        self.weight = Parameter(_uniform((out_channels, in_channels, kh, kw), bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


class GroupNorm(Module):
    """Normalise each group of channels of each sample to mean 0, variance 1, then scale and shift.

    It pools over positions, so it must not be used where the future would leak
    (PixelCNN). Initialisation: weight 1, bias 0 (the identity after normalising).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        _check_sizes("GroupNorm", num_groups=num_groups, num_channels=num_channels)
        if num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = Parameter(np.ones(num_channels, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_channels, dtype=np.float32))

    def forward(self, x, silu: bool = False):
        """The normalised ``x``; with ``silu=True``, SiLU of it, in the same fused op."""
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=silu)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


class Embedding(Module):
    """A lookup table: row i of weight (num_embeddings, embedding_dim) for each index i.

    Initialisation (PyTorch's): weight ~ N(0, 1).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        _check_sizes("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        normal = backend.generator("cpu").standard_normal((num_embeddings, embedding_dim))
        self.weight = Parameter(normal.astype(np.float32))

    def forward(self, indices):
        """Rows of weight for integer ``indices`` (a Tensor, array or list) of any shape."""
        return self.weight[self._checked(indices)]

    def _checked(self, indices):
        """The indices as an integer array on weight's device, all in range."""
        if isinstance(indices, Tensor):
            indices = indices.data
        if not is_array(indices):
            indices = backend.get_array_module(self.weight.data).asarray(indices)
        backend.check_same_device([indices, self.weight.data], "Embedding")
        if indices.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {indices.dtype}")
        outside = (indices < 0) | (indices >= self.num_embeddings)
        if outside.any():
            bad = np.unique(backend.to_device(indices[outside], "cpu"))
            raise IndexError(
                f"Embedding: index values {bad[:10].tolist()} are out of range for "
                f"num_embeddings={self.num_embeddings} (valid: 0..{self.num_embeddings - 1})"
            )
        return indices

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


# ----------------------------------------------------------------------------
# Containers


class ModuleList(Module):
    """A list of modules, registered as children "0", "1", ...; call them in your own forward()."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index: int) -> Module:
        children = list(self._modules.values())
        try:
            return children[index]
        except IndexError:
            raise IndexError(f"{type(self).__name__} index {index} is out of range for {len(self)} modules") from None

    def forward(self, *args, **kwargs):
        raise NotImplementedError("a ModuleList only holds modules; call its items in your own forward()")


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b, c)(x) == c(b(a(x)))."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


# ----------------------------------------------------------------------------
# Layers without parameters


class Dropout(Module):
    """Zero each element with probability p while training and scale the rest by 1/(1-p);
    the identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Elementwise(Module):
    """A parameter-free layer that applies one function of ``functional`` to its input."""

    function = None  # set by each subclass

    def forward(self, x):
        return self.function(x)


class ReLU(_Elementwise):
    """max(x, 0)."""

    function = staticmethod(F.relu)


class GELU(Module):
    """x * Phi(x), Phi the standard normal CDF: exact, or ``approximate="tanh"`` (see ``F.gelu``)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Elementwise):
    """x * sigmoid(x) (see ``F.silu``)."""

    function = staticmethod(F.silu)


class ELU(Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    function = staticmethod(F.sigmoid)


class Tanh(_Elementwise):
    """(exp(x) - exp(-x)) / (exp(x) + exp(-x))."""

    function = staticmethod(F.tanh)


class Softplus(_Elementwise):
    """log(1 + exp(x)), a smooth ReLU."""

    function = staticmethod(F.softplus)


class Identity(Module):
    """Returns its input unchanged (a placeholder where a layer is optional)."""

    def forward(self, x):
        return x


class Flatten(Module):
    """Keep the first ``start_dim`` axes and flatten the rest: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return x.reshape(x.shape[: self.start_dim] + (-1,))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"


# ----------------------------------------------------------------------------
# Layer normalisation and attention


class LayerNorm(Module):
    """Normalise the last axes (``normalized_shape``, an int or a tuple) of each
    sample to mean 0, variance 1, then scale and shift elementwise (see ``F.layer_norm``).

    Initialisation (PyTorch's): weight 1, bias 0. ``elementwise_affine=False``
    gives no parameters; ``bias=False`` only the weight.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        _check_sizes("LayerNorm", **{f"normalized_shape[{i}]": n for i, n in enumerate(shape)})
        self.normalized_shape, self.eps = tuple(int(n) for n in shape), eps
        affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32)) if affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


def _swap_heads_and_positions(x):
    """(..., L, H, d) <-> (..., H, L, d): swap the third- and second-last axes."""
    axes = list(range(x.ndim))
    axes[-3], axes[-2] = axes[-2], axes[-3]
    return x.transpose(axes)


class MultiheadAttention(Module):
    """Multi-head attention (Vaswani et al. 2017, section 3.2.2): project query,
    key and value with ``in_proj_weight``, split the embedding into ``num_heads``
    heads of embed_dim // num_heads features, attend within each head
    (``F.scaled_dot_product_attention``, eq. 1), join the heads and project with ``out_proj``.

    The parameters are laid out as PyTorch's, so its weights copy across:
    ``in_proj_weight`` (3E, E) holds the query, key and value projections in
    that order, ``in_proj_bias`` (3E,), ``out_proj`` an ``nn.Linear(E, E)``.
    Initialisation (PyTorch's): in_proj_weight Xavier-uniform, U(-a, a) with
    a = sqrt(6 / (E + 3E)); both biases 0; out_proj.weight as any Linear.

    ``bias`` and ``batch_first`` are keyword-only: PyTorch's third positional
    argument is ``dropout``, which minigen's layer does not have.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True, batch_first: bool = True):
        super().__init__()
        _check_sizes("MultiheadAttention", embed_dim=embed_dim, num_heads=num_heads)
        if embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(_uniform((3 * embed_dim, embed_dim), math.sqrt(6 / (4 * embed_dim))))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype=np.float32)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        if bias:
            self.out_proj.bias.data[...] = 0

    def forward(self, query, key, value, attn_mask=None, is_causal=False):
        """The attention output, shaped like ``query``: (N, L, E), or (L, N, E)
        when not ``batch_first``; an unbatched (L, E) works too. key and value
        are (N, S, E) (or (S, N, E)).

        Returns the output alone; the attention weights are not kept (PyTorch
        returns ``(output, weights)``). ``attn_mask`` is boolean and broadcasts to
        (N, num_heads, L, S): (L, S) for every sample and head, (N, 1, 1, S) to
        hide padded keys. True = may attend, as in ``F.scaled_dot_product_attention``:
        the OPPOSITE of PyTorch's nn.MultiheadAttention, where True means "not
        allowed". ``is_causal`` lets query i attend to keys 0..i only (combined
        with ``attn_mask`` when both are given).
        """
        sequence_first = not self.batch_first and query.ndim == 3
        if sequence_first:  # (L, N, E) -> (N, L, E), and back at the end
            query, key, value = (x.transpose(1, 0, 2) for x in (query, key, value))
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        q, k, v = (
            self._split_heads(F.linear(x, w[i * e : (i + 1) * e], None if b is None else b[i * e : (i + 1) * e]))
            for i, x in enumerate((query, key, value))
        )
        heads = F.scaled_dot_product_attention(q, k, v, mask=attn_mask, is_causal=is_causal)
        joined = _swap_heads_and_positions(heads)
        out = self.out_proj(joined.reshape(joined.shape[:-2] + (e,)))
        return out.transpose(1, 0, 2) if sequence_first else out

    def _split_heads(self, x):
        """(..., L, E) -> (..., num_heads, L, head_dim)."""
        return _swap_heads_and_positions(x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim)))

    def extra_repr(self) -> str:
        return f"{self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

"""The functions networks are built from: convolution, activations, losses,
normalisation and resampling.

Ops that are hot or whose gradient has a short closed form are one
:class:`Function` each (convolution, softmax, group norm, ...); the rest are
compositions of the elementary ops in :mod:`minigen.engine.ops`, whose gradients
then come for free. Everything works on NumPy and CuPy arrays alike.

Images are NCHW: (batch, channels, height, width).
"""

from __future__ import annotations

import math

import numpy as np

from . import backend, ops
from .backend import get_array_module
from .autograd import Function, Tensor, as_tensor

relu = ops.relu
sigmoid = ops.sigmoid
tanh = ops.tanh



def as_pair(value, name: str = "value", minimum: int = 0) -> tuple:
    """An int, or an (h, w) pair, as a pair of ints that are at least ``minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return tuple(int(v) for v in pair)


def _tap_slices(kernel: tuple, stride: tuple, out_size: tuple):
    """For each kernel tap (i, j): the rows and columns of the input it reads.

    Tap (i, j) of a sliding window meets input pixel (i + stride*y, j + stride*x)
    at output pixel (y, x), so over all outputs it reads one strided slice.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw)


def _reduce(loss, reduction: str, name: str):
    """Apply a loss's ``reduction``: "mean" over all elements, "sum", or "none"."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_same_shape(a, b, name: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name}: input has shape {tuple(a.shape)} but target has shape {tuple(b.shape)}")


# ----------------------------------------------------------------------------
# Convolution and linear layers


def conv_output_size(size: tuple, kernel: tuple, stride: tuple, padding: tuple) -> tuple:
    """(Ho, Wo) of a convolution: (H + 2 ph - kh) // sh + 1, and the same for W."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def im2col(x, kernel: tuple, stride: tuple, padding: tuple):
    """The receptive field of every output pixel as one row of a matrix.

    ``x`` is an NCHW array; the result has N*Ho*Wo rows, in (n, y, x) order,
    and kh*kw*C columns, in (tap row, tap column, channel) order: row (n, y, x)
    holds the zero-padded input window whose top-left corner is at
    (stride_h * y, stride_w * x). A convolution is then one product,
    ``cols @ w.transpose(2, 3, 1, 0).reshape(kh * kw * C, out)``.
    """
    ### BEGIN SOLUTION
    xp = get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = conv_output_size((h, wd), kernel, stride, padding)
    padded = x.transpose(0, 2, 3, 1)  # NHWC: a view, free when x is itself NHWC in memory
    if ph or pw:
        padded = xp.zeros((n, h + 2 * ph, wd + 2 * pw, c), dtype=x.dtype)
        padded[:, ph : ph + h, pw : pw + wd] = x.transpose(0, 2, 3, 1)
    s_n, s_h, s_w, s_c = padded.strides
    windows = xp.lib.stride_tricks.as_strided(
        padded, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h, s_w, s_c)
    )
    return windows.reshape(n * ho * wo, kh * kw * c)
    ### END SOLUTION


class Conv2d(Function):
    """2-D convolution (a cross-correlation, as in every deep-learning library)
    computed as one matrix product.

    im2col: each output pixel's receptive field (kh x kw taps x C channels) is
    copied into one row of a column matrix, and the convolution becomes
    ``cols @ weights`` — a single large BLAS call. Inside, the layout is
    channels-last (NHWC): a row is kh*kw contiguous runs of C channels, and
    the windows are a strided view of the padded input, so building ``cols``
    is one copy. ``cols`` is kept: the weight gradient is ``grad^T @ cols``.
    """

    def __init__(self, stride: tuple, padding: tuple):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b=None):
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        ho, wo = conv_output_size((h, wd), (kh, kw), self.stride, self.padding)
        cols = im2col(x, (kh, kw), self.stride, self.padding)
        out = cols @ w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
        if b is not None:
            out += b
        self.x_shape, self.w = x.shape, w
        self.cols = cols if self.needs_input_grad[1] else None
        # An NCHW view of NHWC memory: the next convolution reads it as NHWC without a copy,
        # and elementwise ops in between keep that memory order.
        return out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)

    def backward(self, grad):
        o = grad.shape[1]
        g = grad.transpose(0, 2, 3, 1).reshape(-1, o)  # (N*Ho*Wo, O): rows match cols
        gx = self._input_grad(g, grad.shape[2:]) if self.needs_input_grad[0] else None
        gw = None
        if self.needs_input_grad[1]:
            _, c, kh, kw = self.w.shape
            gw = (g.T @ self.cols).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
        gb = g.sum(axis=0) if len(self.needs_input_grad) == 3 and self.needs_input_grad[2] else None
        return gx, gw, gb

    def _input_grad(self, g, out_size):
        """col2im, one kernel tap at a time.

        The share of the input gradient that flows through tap (i, j) is
        ``g @ w[:, :, i, j]``, laid out like the output; it lands on the input
        pixels that tap read. Taps overlap, so their shares add up. One tap's
        columns at a time, in one reused buffer, is as fast as a single product
        for all taps and never holds the whole (N*Ho*Wo, kh*kw*C) gradient
        matrix; each share is contiguous, so its slice add runs at memory speed.
        """
        xp = get_array_module(g)
        n, c, h, wd = self.x_shape
        (ph, pw), (ho, wo) = self.padding, out_size
        _, _, kh, kw = self.w.shape
        padded = xp.zeros((n, h + 2 * ph, wd + 2 * pw, c), dtype=g.dtype)
        w_taps = xp.ascontiguousarray(self.w.transpose(2, 3, 0, 1))  # (kh, kw, O, C)
        share = xp.empty((n, ho, wo, c), dtype=g.dtype)
        for i, j, rows, cols in _tap_slices((kh, kw), self.stride, (ho, wo)):
            xp.matmul(g, w_taps[i, j], out=share.reshape(-1, c))
            padded[:, rows, cols] += share
        # An NCHW view of the NHWC buffer: copying it here would be a wasted pass,
        # as the engine copies a leaf's gradient anyway and ops accept any strides.
        return padded[:, ph : ph + h, pw : pw + wd].transpose(0, 3, 1, 2)


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution of NCHW ``x`` with ``w`` (out, in, kh, kw), plus bias ``b`` (out,).

    ``stride`` and ``padding`` (zeros) are an int or an (h, w) pair. The output
    is (N, out, (H + 2*ph - kh) // sh + 1, (W + 2*pw - kw) // sw + 1).
    """
    stride, padding = as_pair(stride, "conv2d: stride", 1), as_pair(padding, "conv2d: padding", 0)
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (out, in, kh, kw), got shape {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"conv2d: input has {x.shape[1]} channels but the weight expects {w.shape[1]} "
            f"(input {tuple(x.shape)}, weight {tuple(w.shape)})"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(
            f"conv2d: bias has shape {tuple(b.shape)}, expected ({w.shape[0]},) for weight {tuple(w.shape)}"
        )
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    if w.shape[2] > padded[0] or w.shape[3] > padded[1]:
        raise ValueError(
            f"conv2d: kernel {w.shape[2]}x{w.shape[3]} is larger than the padded input "
            f"{padded[0]}x{padded[1]} (input {tuple(x.shape)}, padding {padding})"
        )
    inputs = (x, w) if b is None else (x, w, b)
    return Conv2d(stride, padding)(*inputs)


def linear(x, w, b=None):
    """``x @ w.T + b`` with ``w`` shaped (out_features, in_features), as in PyTorch."""
    if x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"linear: input has {x.shape[-1]} features but the weight expects {w.shape[1]} "
            f"(input {tuple(x.shape)}, weight {tuple(w.shape)})"
        )
    y = ops.matmul(x, ops.transpose(w))
    return y if b is None else y + b


# ----------------------------------------------------------------------------
# Activations

_GELU_C = math.sqrt(2 / math.pi)  # a Python float, so float32 stays float32


class GELU(Function):
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x):
        self.x = x
        self.t = get_array_module(x).tanh(_GELU_C * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1 + self.t)

    def backward(self, grad):
        x, t = self.x, self.t
        d_inner = _GELU_C * (1 + 3 * 0.044715 * x * x)
        return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)


class ELU(Function):
    """x for x > 0, alpha (e^x - 1) otherwise."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def forward(self, x):
        xp = get_array_module(x)
        self.positive = x > 0
        # expm1 of min(x, 0): the branch that is thrown away cannot overflow.
        self.negative = self.alpha * xp.expm1(xp.minimum(x, 0))
        return xp.where(self.positive, x, self.negative)

    def backward(self, grad):
        # d/dx alpha (e^x - 1) = alpha e^x = negative part + alpha
        return get_array_module(grad).where(self.positive, grad, grad * (self.negative + self.alpha))


class Softplus(Function):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so e^x never overflows."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, grad):
        # The derivative is sigmoid(x), in the same overflow-free form as ops.Sigmoid.
        return grad * (get_array_module(grad).tanh(self.x * 0.5) * 0.5 + 0.5)


def gelu(x):
    """GELU with the tanh approximation (as in GPT-2 and PyTorch's approximate="tanh")."""
    return GELU()(x)


def silu(x):
    """x * sigmoid(x) ("swish"), the activation of the DDPM U-Net."""
    return x * sigmoid(x)


def elu(x, alpha=1.0):
    """x for x > 0, alpha (e^x - 1) otherwise: smooth, with negative outputs down to -alpha."""
    return ELU(float(alpha))(x)


def softplus(x):
    """log(1 + e^x), a smooth ReLU; stable for any x."""
    return Softplus()(x)


# ----------------------------------------------------------------------------
# Softmax and losses


class Softmax(Function):
    """exp(x) / sum(exp(x)) along ``axis``, after subtracting the maximum (no overflow)."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        e = get_array_module(x).exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, grad):
        # Jacobian diag(y) - y y^T, applied without building it.
        return self.y * (grad - (grad * self.y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """x - logsumexp(x) along ``axis``, with the maximum subtracted first."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, grad):
        return grad - get_array_module(grad).exp(self.y) * grad.sum(axis=self.axis, keepdims=True)


class PickClass(Function):
    """``a[..., target, ...]``: the entry at the target class along ``axis``,
    which disappears from the shape. ``index`` is the target with that axis
    kept as size 1."""

    def __init__(self, index, axis: int):
        self.index, self.axis = index, axis

    def forward(self, a):
        self.classes = a.shape[self.axis]
        return get_array_module(a).take_along_axis(a, self.index, axis=self.axis).squeeze(self.axis)

    def backward(self, grad):
        xp = get_array_module(grad)
        shape = [1] * self.index.ndim
        shape[self.axis] = self.classes
        onehot = xp.arange(self.classes).reshape(shape) == self.index
        return xp.expand_dims(grad, self.axis) * onehot


def softmax(x, axis=-1):
    """Probabilities along ``axis``: positive, summing to 1; stable for huge logits."""
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    """log(softmax(x)) without the round trip through exp, so it never takes log(0)."""
    return LogSoftmax(axis)(x)


def _class_index(logits: Tensor, target, axis: int):
    """The target as a backend integer array with the class axis put back (size 1),
    after checking its dtype, shape and values."""
    data = target.data if isinstance(target, Tensor) else target
    backend.check_same_device([logits.data, data], "cross_entropy")
    data = get_array_module(logits.data).asarray(data)
    classes = logits.shape[axis]
    expected = logits.shape[:axis] + logits.shape[axis + 1 :]
    if data.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {data.dtype}")
    if tuple(data.shape) != expected:
        raise ValueError(
            f"cross_entropy: target has shape {tuple(data.shape)} but logits {logits.shape} "
            f"without the class axis {axis} need {expected}"
        )
    if data.size:
        low, high = int(data.min()), int(data.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"cross_entropy: target holds class {low if low < 0 else high} but the logits have "
                f"{classes} classes along axis {axis}; classes must be in [0, {classes - 1}]"
            )
    return get_array_module(data).expand_dims(data, axis)


def cross_entropy(logits, target, axis=1, reduction="mean"):
    """Negative log-likelihood of integer class ``target`` under softmax(``logits``).

    ``axis`` holds the classes; ``target`` has the logits' shape without it, so
    (N, K, C, H, W) logits with (N, C, H, W) targets score every pixel's
    channel value among K classes. "mean" averages over all target elements.
    """
    logits = as_tensor(logits)
    if not -logits.ndim <= axis < logits.ndim:
        raise ValueError(f"cross_entropy: axis {axis} is out of range for logits of shape {logits.shape}")
    axis = axis % logits.ndim
    index = _class_index(logits, target, axis)
    nll = -PickClass(index, axis)(log_softmax(logits, axis))
    return _reduce(nll, reduction, "cross_entropy")


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] for logits x.

    It equals softplus(x) - t x, which never takes the log of 0 even when
    sigmoid(x) rounds to 0 or 1.
    """
    logits = as_tensor(logits)
    target = as_tensor(target, like=logits)
    _check_same_shape(logits, target, "binary_cross_entropy_with_logits")
    return _reduce(softplus(logits) - logits * target, reduction, "binary_cross_entropy_with_logits")


def mse_loss(pred, target, reduction="mean"):
    """Squared error (pred - target)^2, reduced."""
    pred = as_tensor(pred)
    target = as_tensor(target, like=pred)
    _check_same_shape(pred, target, "mse_loss")
    diff = pred - target
    return _reduce(diff * diff, reduction, "mse_loss")


# ----------------------------------------------------------------------------
# Normalisation


class GroupNorm(Function):
    """(x - mean) / sqrt(var + eps), with mean and variance per sample and group.

    The input is viewed as (N, groups, everything else); the affine part
    (weight, bias) is applied by :func:`group_norm` with ordinary ops.
    """

    def __init__(self, groups: int, eps: float):
        self.groups, self.eps = groups, eps

    def forward(self, x):
        xg = x.reshape(x.shape[0], self.groups, -1)
        centred = xg - xg.mean(axis=2, keepdims=True)
        self.inv_std = 1 / get_array_module(x).sqrt((centred * centred).mean(axis=2, keepdims=True) + self.eps)
        self.x_hat = centred * self.inv_std
        return self.x_hat.reshape(x.shape)

    def backward(self, grad):
        # The mean and the variance depend on every input of the group, which
        # adds the two averaged terms to the plain grad * inv_std.
        g = grad.reshape(self.x_hat.shape)
        mean_g = g.mean(axis=2, keepdims=True)
        mean_gx = (g * self.x_hat).mean(axis=2, keepdims=True)
        return (self.inv_std * (g - mean_g - self.x_hat * mean_gx)).reshape(grad.shape)


def group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, ...) ``x`` over each group of C/groups channels and all
    positions, per sample; then scale by ``weight`` and shift by ``bias`` (C,)."""
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"group_norm: input must be (N, C, ...), got shape {x.shape}")
    channels = x.shape[1]
    if groups < 1 or channels % groups:
        raise ValueError(
            f"group_norm: {channels} channels cannot be split into {groups} groups (input {x.shape})"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and tuple(param.shape) != (channels,):
            raise ValueError(f"group_norm: {name} has shape {tuple(param.shape)}, expected ({channels},)")
    y = GroupNorm(groups, float(eps))(x)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * ops.reshape(weight, shape)
    if bias is not None:
        y = y + ops.reshape(bias, shape)
    return y


# ----------------------------------------------------------------------------
# Padding, resampling, dropout


class Pad(Function):
    """Surround the last two axes with ``value``: (top, bottom, left, right) rows/columns."""

    def __init__(self, padding: tuple, value: float):
        self.padding, self.value = padding, value

    def forward(self, x):
        top, bottom, left, right = self.padding
        h, w = x.shape[-2:]
        out = get_array_module(x).full(x.shape[:-2] + (h + top + bottom, w + left + right), self.value, dtype=x.dtype)
        self.inside = (..., slice(top, top + h), slice(left, left + w))
        out[self.inside] = x
        return out

    def backward(self, grad):
        return grad[self.inside]


class UpsampleNearest(Function):
    """Repeat every pixel ``scale`` times along height and width."""

    def __init__(self, scale: int):
        self.scale = scale

    def forward(self, x):
        s, (h, w) = self.scale, x.shape[-2:]
        blocks = get_array_module(x).broadcast_to(x[..., :, None, :, None], x.shape[:-2] + (h, s, w, s))
        return blocks.reshape(x.shape[:-2] + (h * s, w * s))

    def backward(self, grad):
        s, (h, w) = self.scale, grad.shape[-2:]
        return grad.reshape(grad.shape[:-2] + (h // s, s, w // s, s)).sum(axis=(-3, -1))


class AvgPool2d(Function):
    """Mean over kh x kw windows, ``stride`` apart: a sum over kernel taps."""

    def __init__(self, kernel: tuple, stride: tuple):
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        (kh, kw), (sh, sw), (h, w) = self.kernel, self.stride, x.shape[-2:]
        self.in_shape = x.shape
        self.out_size = ((h - kh) // sh + 1, (w - kw) // sw + 1)
        out = get_array_module(x).zeros(x.shape[:-2] + self.out_size, dtype=x.dtype)
        for _, _, rows, cols in _tap_slices(self.kernel, self.stride, self.out_size):
            out += x[..., rows, cols]
        return out / (kh * kw)

    def backward(self, grad):
        kh, kw = self.kernel
        share = grad / (kh * kw)
        gx = get_array_module(grad).zeros(self.in_shape, dtype=grad.dtype)
        for _, _, rows, cols in _tap_slices(self.kernel, self.stride, self.out_size):
            gx[..., rows, cols] += share
        return gx


def pad(x, padding, value=0.0):
    """Pad the spatial axes of NCHW ``x`` with ``value``.

    ``padding`` is an int (all four sides) or (top, bottom, left, right).
    """
    sides = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(sides) != 4 or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in sides):
        raise ValueError(f"pad: padding must be an int >= 0 or (top, bottom, left, right), got {padding!r}")
    return Pad(tuple(int(p) for p in sides), value)(x)


def upsample_nearest(x, scale=2):
    """Nearest-neighbour upsampling of NCHW ``x`` by an integer ``scale``."""
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"upsample_nearest: scale must be an int >= 1, got {scale!r}")
    return UpsampleNearest(int(scale))(x)


def avg_pool2d(x, kernel_size=2, stride=None):
    """Average pooling of NCHW ``x``; ``stride`` defaults to ``kernel_size``."""
    kernel = as_pair(kernel_size, "avg_pool2d: kernel_size", 1)
    stride = kernel if stride is None else as_pair(stride, "avg_pool2d: stride", 1)
    if kernel[0] > x.shape[-2] or kernel[1] > x.shape[-1]:
        raise ValueError(
            f"avg_pool2d: kernel {kernel[0]}x{kernel[1]} is larger than the input {tuple(x.shape)}"
        )
    return AvgPool2d(kernel, stride)(x)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1/(1 - p)
    (inverted dropout: the expected value is unchanged, so evaluation needs no
    rescaling). Identity when not ``training``. Uses the seeded generator."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    x = as_tensor(x)
    keep = backend.generator(x.device).random(x.shape, dtype=np.float32) >= p
    return x * (keep.astype(x.dtype) / (1 - p))

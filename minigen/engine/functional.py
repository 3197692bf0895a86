"""The functions networks are built from: convolution, activations, losses,
normalisation, resampling and attention.

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


def _sum_positions(a):
    """(N, L, C) -> (N, C), summed over the L positions as a product with a row of
    ones: BLAS streams the rows in one pass with wide vector loads, where NumPy's
    reduction over a middle axis walks them with a short inner loop."""
    xp = get_array_module(a)
    return (xp.ones((1, a.shape[1]), dtype=a.dtype) @ a)[:, 0]


def live_taps(mask):
    """The kernel taps (row, column) where a 0/1 conv ``mask`` (out, in, kh, kw) keeps
    any weight, or None when it keeps some weight at every tap."""
    live = backend.to_device((mask != 0).any(axis=(0, 1)), "cpu")  # (kh, kw): a tiny copy to the host
    if live.all():
        return None
    kh, kw = live.shape
    return [(i, j) for i in range(kh) for j in range(kw) if live[i, j]] or [(0, 0)]  # none: one tap, all zero


def im2col_taps(x, kernel: tuple, stride: tuple, padding: tuple, taps):
    """:func:`im2col`'s matrix with only the columns of the kernel ``taps``
    (a list of (row, column) positions), in that order: the columns a masked
    kernel needs. Built one tap at a time, each a strided slice copied into
    its C columns."""
    xp = get_array_module(x)
    (ph, pw) = padding
    n, c, h, wd = x.shape
    ho, wo = conv_output_size((h, wd), kernel, stride, padding)
    padded = xp.zeros((n, h + 2 * ph, wd + 2 * pw, c), dtype=x.dtype)
    padded[:, ph : ph + h, pw : pw + wd] = x.transpose(0, 2, 3, 1)
    cols = xp.empty((n, ho, wo, len(taps), c), dtype=x.dtype)
    wanted = {tap: k for k, tap in enumerate(taps)}
    for i, j, rows, columns in _tap_slices(kernel, stride, (ho, wo)):
        if (i, j) in wanted:
            cols[:, :, :, wanted[i, j]] = padded[:, rows, columns]
    return cols.reshape(n * ho * wo, len(taps) * c)


class Conv2d(Function):
    """2-D convolution (a cross-correlation, as in every deep-learning library)
    computed as one matrix product.

    im2col: each output pixel's receptive field (kh x kw taps x C channels) is
    copied into one row of a column matrix, and the convolution becomes
    ``cols @ weights`` — a single large BLAS call. Inside, the layout is
    channels-last (NHWC): a row is kh*kw contiguous runs of C channels, and
    the windows are a strided view of the padded input, so building ``cols``
    is one copy. ``cols`` is kept: the weight gradient is ``grad^T @ cols``.

    With a ``mask`` (0/1, shaped like the weight) it convolves with
    ``w * mask`` and skips the kernel taps the mask zeroes for every channel:
    their columns are neither built nor multiplied (a causal 3x3 mask keeps 5
    of 9 taps, a 7x7 one 24 of 49), and the weight gradient is the masked
    one, exactly as if the mask were multiplied in first.
    """

    def __init__(self, stride: tuple, padding: tuple, mask=None, taps=None):
        self.stride, self.padding, self.mask = stride, padding, mask
        self.taps = live_taps(mask) if mask is not None and taps is None else taps

    def forward(self, x, w, b=None):
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        ho, wo = conv_output_size((h, wd), (kh, kw), self.stride, self.padding)
        self.w = w if self.mask is None else w * self.mask
        w_taps = self.w.transpose(2, 3, 1, 0)  # (kh, kw, C, O): a tap's rows of the weight matrix
        if self.taps is None:
            cols = im2col(x, (kh, kw), self.stride, self.padding)
        else:
            cols = im2col_taps(x, (kh, kw), self.stride, self.padding, self.taps)
            w_taps = w_taps[tuple(zip(*self.taps))]  # (taps, C, O)
        out = cols @ w_taps.reshape(-1, o)
        if b is not None:
            out += b
        self.x_shape = x.shape
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
            gw = g.T @ self.cols
            if self.taps is None:
                gw = gw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
            else:  # the live taps' columns into a zero kernel
                full = get_array_module(g).zeros((o, kh, kw, c), dtype=g.dtype)
                full[(slice(None),) + tuple(zip(*self.taps))] = gw.reshape(o, len(self.taps), c)
                gw = full.transpose(0, 3, 1, 2)
            if self.mask is not None:
                gw = gw * self.mask  # the product rule of w * mask
        gb = None
        if len(self.needs_input_grad) == 3 and self.needs_input_grad[2]:
            gb = _sum_positions(g[None])[0]  # the column sums of g, as one product
        return gx, gw, gb

    def _input_grad(self, g, out_size):
        """The input gradient: :meth:`_input_grad_pointwise` for a 1x1 kernel with
        stride 1 and no padding, :meth:`_input_grad_as_conv` for a stride-1 kernel
        with more input than output channels, :meth:`_input_grad_taps` (the
        reference) otherwise."""
        o, c, kh, kw = self.w.shape
        (ph, pw) = self.padding
        if self.stride == (1, 1) and (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
            return self._input_grad_pointwise(g)
        if self.stride == (1, 1) and self.taps is None and c > o and ph < kh and pw < kw:
            return self._input_grad_as_conv(g, out_size)
        return self._input_grad_taps(g, out_size)

    def _input_grad_as_conv(self, g, out_size):
        """With stride 1 the input gradient is itself a convolution: of the output
        gradient, padded by k - 1 - p, with the kernel turned by 180 degrees and
        its in and out channels swapped. Its im2col matrix has kh*kw*O columns,
        where the tap loop adds kh*kw shares of C channels into the input, so it
        moves less memory when C > O (a U-Net's convolutions after a skip
        concatenation): one copy and one product."""
        n, c, h, wd = self.x_shape
        o, _, kh, kw = self.w.shape
        (ph, pw) = self.padding
        grad = g.reshape(n, *out_size, o).transpose(0, 3, 1, 2)  # NCHW view of NHWC rows
        cols = im2col(grad, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw))
        turned = self.w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * o, c)
        return (cols @ turned).reshape(n, h, wd, c).transpose(0, 3, 1, 2)

    def _input_grad_pointwise(self, g):
        """A 1x1 convolution is a matrix product over channels at every pixel,
        so its input gradient is the single product ``g @ w``, already laid out
        like the input (NHWC): no zeroed buffer to add taps into, no second pass."""
        n, c, h, wd = self.x_shape
        return (g @ self.w.reshape(self.w.shape[0], c)).reshape(n, h, wd, c).transpose(0, 3, 1, 2)

    def _input_grad_taps(self, g, out_size):
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
            if self.taps is not None and (i, j) not in self.taps:
                continue  # masked out: its share is zero
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
    _check_conv_shapes(x, w, b, padding)
    inputs = (x, w) if b is None else (x, w, b)
    return Conv2d(stride, padding)(*inputs)


def _check_conv_shapes(x, w, b, padding) -> None:
    """Raise a ValueError naming the shapes when conv2d's inputs do not fit together."""
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


def masked_conv2d(x, w, mask, b=None, stride=1, padding=0, taps=None):
    """``conv2d(x, w * mask, b, stride, padding)`` for a fixed 0/1 ``mask`` (a backend
    array shaped like ``w``), skipping the kernel taps the mask zeroes everywhere
    (see :class:`Conv2d`). The weight gradient is the masked one, as with ``w * mask``.

    ``taps``: the mask's :func:`live_taps`, if the caller computed them once (a
    layer with a fixed mask should: finding them reads the mask on the host,
    which on a GPU waits for the device at every call)."""
    if tuple(mask.shape) != tuple(w.shape):
        raise ValueError(f"masked_conv2d: mask has shape {tuple(mask.shape)} but the weight {tuple(w.shape)}")
    stride, padding = as_pair(stride, "conv2d: stride", 1), as_pair(padding, "conv2d: padding", 0)
    _check_conv_shapes(x, w, b, padding)
    inputs = (x, w) if b is None else (x, w, b)
    return Conv2d(stride, padding, mask, taps)(*inputs)


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

_GELU_C = math.sqrt(2 / math.pi)  # Python floats, so float32 stays float32
_SQRT_HALF, _INV_SQRT_2PI = math.sqrt(0.5), 1 / math.sqrt(2 * math.pi)

# erfc(z) = t exp(P(t) - z^2) with t = 1 / (1 + z/2) for z >= 0: Numerical Recipes'
# Chebyshev fit (Press et al., 2nd ed., sec. 6.2, erfcc); P's coefficients, lowest first.
_ERFC_COEFFICIENTS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                      0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _erfc(x):
    """1 - erf(x) on a backend array, in its dtype (NumPy has no erf).

    In float64 the relative error is below 1.2e-7 for every x >= 0 (so erf is
    within 1.2e-7 absolute, and the tail keeps its relative accuracy);
    erfc(-x) = 2 - erfc(x). In float32 the rounding of x^2 adds up to ~1e-5
    relative error in the far tail (x > 4, where erfc(x) < 2e-8).
    """
    xp = get_array_module(x)
    z = xp.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = _ERFC_COEFFICIENTS[-1]
    for c in reversed(_ERFC_COEFFICIENTS[:-1]):  # Horner's rule
        poly = c + t * poly
    tail = t * xp.exp(poly - z * z)
    return xp.where(x >= 0, tail, 2 - tail)


class GELU(Function):
    """GELU (Hendrycks & Gimpel 2016): x Phi(x), Phi the standard normal CDF,
    Phi(x) = erfc(-x / sqrt(2)) / 2."""

    def forward(self, x):
        self.x = x
        self.cdf = 0.5 * _erfc(-_SQRT_HALF * x)
        return x * self.cdf

    def backward(self, grad):
        # d/dx x Phi(x) = Phi(x) + x phi(x), phi the standard normal density.
        x = self.x
        return grad * (self.cdf + x * (_INV_SQRT_2PI * get_array_module(x).exp(-0.5 * x * x)))


class GELUTanh(Function):
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
        self.y = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
        return self.y

    def backward(self, grad):
        # The derivative is sigmoid(x) = e^x / (1 + e^x) = e^(x - y): no overflow, and
        # tiny where x is very negative (y ~ e^x there) with full relative accuracy.
        return grad * get_array_module(grad).exp(self.x - self.y)


def gelu(x, approximate="none"):
    """GELU, x Phi(x) with Phi the standard normal CDF: exact (via erf, PyTorch's default),
    or with ``approximate="tanh"`` the tanh approximation of GPT-2 (within 5e-4 of it)."""
    if approximate == "none":
        return GELU()(x)
    if approximate == "tanh":
        return GELUTanh()(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


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
    if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):  # a list or a number:
        data = get_array_module(logits.data).asarray(data)  # made on the logits' device
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


class GroupNormAffine(Function):
    """Group norm, then ``* weight + bias`` per channel, then (if ``silu``) SiLU: one op.

    The same numbers as :class:`GroupNorm` followed by the ops of
    :func:`group_norm` and :func:`silu` (up to float32 rounding; a test compares
    them), in fewer passes over memory: the three or five elementwise ops and
    their backward each read and write the whole activation and keep their
    own copies; here the backward needs no graph of small ops, and the means
    it needs come from two per-channel sums, which are BLAS products. It works
    channels-last, (N, positions, C), so per-channel vectors broadcast along
    contiguous rows: a convolution's output is already NHWC in memory (see
    :class:`Conv2d`), so nothing is transposed, and the output, an NCHW view
    of NHWC memory, is what the next convolution's im2col reads without a
    transposing copy.
    """

    def __init__(self, groups: int, eps: float, silu: bool):
        self.groups, self.eps, self.silu = groups, eps, silu

    def forward(self, x, weight, bias):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        self.to_last = (0, *range(2, x.ndim), 1)  # NCHW -> NHWC (any number of spatial axes)
        self.to_first = (0, x.ndim - 1, *range(1, x.ndim - 1))
        xl = xp.ascontiguousarray(x.transpose(self.to_last))  # free when x is channels-last in memory
        self.shape_last = xl.shape
        xl = xl.reshape(n, -1, c)  # (N, L, C): per-channel vectors broadcast along contiguous rows
        self.positions = xl.shape[1]
        centred = xl - self._group_mean(_sum_positions(xl))
        self.inv_std = 1 / xp.sqrt(self._group_mean(_sum_positions(centred * centred)) + self.eps)  # (N, 1, C)
        centred *= self.inv_std
        self.x_hat, self.weight = centred, weight
        y = centred * weight + bias
        if self.silu:
            self.y = y
            with np.errstate(over="ignore"):  # exp(-y) = inf for y < -88 gives sigmoid 0, as it should
                self.s = 1 / (1 + xp.exp(-y))
            y = y * self.s
        return y.reshape(self.shape_last).transpose(self.to_first)

    def _group_mean(self, sums):
        """(N, C) sums over positions -> (N, 1, C): the mean over each channel's group, per channel."""
        n, c = sums.shape
        per_group = sums.reshape(n, self.groups, -1).sum(axis=2) / (self.positions * (c // self.groups))
        return per_group.repeat(c // self.groups, axis=1)[:, None, :].astype(sums.dtype)

    def backward(self, grad):
        g = grad.transpose(self.to_last).reshape(self.x_hat.shape)
        if self.silu:  # d/dy y s(y) = s (1 + y (1 - s))
            s, y = self.s, self.y
            g = g * (s * (1 + y * (1 - s)))
        # Per sample and channel: the sums of g and g x_hat give the bias and weight
        # gradients and, times the weight, the two group means of the normalisation's backward.
        sum_g, sum_gx = _sum_positions(g), _sum_positions(g * self.x_hat)  # (N, C)
        mean_g, mean_gx = self._group_mean(sum_g * self.weight), self._group_mean(sum_gx * self.weight)
        gx = g * (self.weight * self.inv_std) - self.x_hat * (mean_gx * self.inv_std) - mean_g * self.inv_std
        return gx.reshape(self.shape_last).transpose(self.to_first), sum_gx.sum(axis=0), sum_g.sum(axis=0)


def group_norm(x, groups, weight=None, bias=None, eps=1e-5, silu=False):
    """Normalise (N, C, ...) ``x`` over each group of C/groups channels and all
    positions, per sample; then scale by ``weight`` and shift by ``bias`` (C,).

    ``silu=True`` applies SiLU to the result. With both ``weight`` and ``bias``
    this is one fused op (:class:`GroupNormAffine`); otherwise the reference
    composition of :class:`GroupNorm` and elementwise ops."""
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
    if weight is not None and bias is not None:
        return GroupNormAffine(groups, float(eps), silu)(x, weight, bias)
    y = GroupNorm(groups, float(eps))(x)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * ops.reshape(weight, shape)
    if bias is not None:
        y = y + ops.reshape(bias, shape)
    return y * sigmoid(y) if silu else y


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


# ----------------------------------------------------------------------------
# Layer normalisation


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * weight + bias, with the mean and the (biased)
    variance taken over the last ``ndim`` axes of each sample (Ba et al. 2016,
    eq. 3 for the statistics; the gain and bias of their eq. 4).

    ``weight`` and ``bias`` (optional, shaped like those axes) broadcast over
    the leading axes; the engine sums their gradients back. Backward keeps only
    the per-row mean and 1/std: x itself is held anyway (it is an input), and
    recomputing x_hat from it costs one pass but saves an array as large as x.
    """

    def __init__(self, ndim: int, eps: float):
        self.axes, self.eps = tuple(range(-ndim, 0)), eps

    def forward(self, x, weight=None, bias=None):
        self.mean = x.mean(axis=self.axes, keepdims=True)
        centred = x - self.mean
        variance = (centred * centred).mean(axis=self.axes, keepdims=True)
        self.inv_std = 1 / get_array_module(x).sqrt(variance + self.eps)
        self.x, self.weight = x, weight
        y = centred * self.inv_std
        if weight is not None:
            y = y * weight
        return y if bias is None else y + bias

    def backward(self, grad):
        needs = self.needs_input_grad
        x_hat = (self.x - self.mean) * self.inv_std
        gx = None
        if needs[0]:
            # The mean and the variance depend on every x of the row, which adds the
            # two averaged terms to the plain g * inv_std (as in GroupNorm).
            g = grad if self.weight is None else grad * self.weight
            mean_g = g.mean(axis=self.axes, keepdims=True)
            mean_gx = (g * x_hat).mean(axis=self.axes, keepdims=True)
            gx = self.inv_std * (g - mean_g - x_hat * mean_gx)
        gw = grad * x_hat if len(needs) > 1 and needs[1] else None
        gb = grad if len(needs) > 2 and needs[2] else None
        return gx, gw, gb


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise ``x`` over its last axes, which must equal ``normalized_shape``
    (an int or a tuple), to mean 0 and variance 1 per sample; then scale by
    ``weight`` and shift by ``bias`` (both shaped ``normalized_shape``), as PyTorch's.

    Nothing is pooled across positions when only the feature axis is normalised,
    so, unlike group_norm, it is safe in autoregressive models.
    """
    x = as_tensor(x)
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    shape = tuple(int(n) for n in shape)
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} does not match the last {len(shape)} axes "
            f"of the input {x.shape}"
        )
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and tuple(param.shape) != shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(param.shape)}, expected {shape}")
    if weight is None and bias is not None:  # a shift without a scale: rare, so an ordinary add
        return LayerNorm(len(shape), float(eps))(x) + bias
    return LayerNorm(len(shape), float(eps))(*(p for p in (x, weight, bias) if p is not None))


# ----------------------------------------------------------------------------
# Attention


class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale) v over the last two axes (Vaswani et al. 2017, eq. 1,
    where scale = 1 / sqrt(d_k)); leading (batch, head) axes broadcast.

    ``mask`` is None or a boolean array broadcastable to the scores (..., L, S),
    True where a query may attend to a key. A masked score becomes -inf before
    the softmax, so its probability is exactly 0. A query with no key allowed
    gets probabilities 0 instead of 0/0 = NaN, so its output and its gradients are 0.

    Backward keeps q, k, v (inputs, held anyway) and the probabilities P, the
    one new array it needs: not the scores, and not the mask (P is already 0
    wherever the mask said no, which is all backward needs to know).
    """

    def __init__(self, mask, scale: float):
        self.mask, self.scale = mask, scale

    def forward(self, q, k, v):
        xp = get_array_module(q)
        scores = q @ k.swapaxes(-1, -2)
        scores *= self.scale
        mask = self.mask
        del self.mask  # backward does not need it (see the class docstring)
        if mask is not None:
            scores = xp.where(mask, scores, -xp.inf)
        # Subtract each row's maximum so exp never overflows. A row with every key
        # masked has maximum -inf; use 0 there, as -inf - (-inf) would be NaN.
        row_max = scores.max(axis=-1, keepdims=True)
        if mask is not None:
            row_max[row_max == -xp.inf] = 0
        scores -= row_max
        p = xp.exp(scores, out=scores)  # in place: the scores are not needed again
        # A row with an allowed key sums to at least 1 (its maximum gives e^0 = 1);
        # a row with none sums to 0, and dividing it by 1 instead keeps it all 0.
        p /= xp.maximum(p.sum(axis=-1, keepdims=True), 1)
        self.q, self.k, self.v, self.p = q, k, v, p
        return p @ v

    def backward(self, grad):
        """dV = P^T dO; dS = P * (dP - rowsum(dP * P)) with dP = dO V^T (softmax's
        Jacobian, row by row); dQ = dS K * scale, dK = dS^T Q * scale."""
        q, k, v, p = self.q, self.k, self.v, self.p
        needs = self.needs_input_grad
        gv = p.swapaxes(-1, -2) @ grad if needs[2] else None
        gq = gk = None
        if needs[0] or needs[1]:
            ds = grad @ v.swapaxes(-1, -2)  # dP, then turned into dS in place
            ds -= (ds * p).sum(axis=-1, keepdims=True)
            ds *= p
            ds *= self.scale
            gq = ds @ k if needs[0] else None
            gk = ds.swapaxes(-1, -2) @ q if needs[1] else None
        return gq, gk, gv


_SDPA = "scaled_dot_product_attention"


def _check_attention_shapes(q: Tensor, k: Tensor, v: Tensor) -> tuple:
    """The shape of the attention scores, batch axes + (L, S), after checking that q, k, v fit."""
    shapes = f"(q {q.shape}, k {k.shape}, v {v.shape})"
    if min(q.ndim, k.ndim, v.ndim) < 2:
        raise ValueError(f"{_SDPA}: q, k and v need at least 2 axes (..., length, features) {shapes}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{_SDPA}: q has {q.shape[-1]} features per head but k has {k.shape[-1]} {shapes}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{_SDPA}: k has {k.shape[-2]} keys but v has {v.shape[-2]} values {shapes}")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"{_SDPA}: the batch axes of q, k and v do not broadcast {shapes}") from None
    return tuple(batch) + (q.shape[-2], k.shape[-2])


def _attention_mask(mask, is_causal: bool, scores_shape: tuple, q: Tensor):
    """The boolean backend array (True = may attend) for ``mask`` and ``is_causal``, or None."""
    xp = get_array_module(q.data)
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else mask
        if isinstance(mask, (list, tuple)):
            mask = xp.asarray(mask)
        backend.check_same_device([q.data, mask], _SDPA)
        if mask.dtype != np.bool_:
            raise TypeError(f"{_SDPA}: mask must be boolean (True = may attend), got dtype {mask.dtype}")
        try:
            fits = np.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{_SDPA}: mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                f"shape {scores_shape} (batch axes, queries L, keys S)"
            )
    if is_causal:
        length, keys = scores_shape[-2:]
        causal = xp.tril(xp.ones((length, keys), dtype=bool))  # query i sees keys 0..i
        mask = causal if mask is None else mask & causal
    return mask


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """Attention: each query's output is an average of the values, weighted by
    softmax(q . k * scale) over the keys (Vaswani et al. 2017, eq. 1).

    q (..., L, d), k (..., S, d), v (..., S, dv) give (..., L, dv); the leading
    (batch, head) axes broadcast, so multi-head attention is a matter of shape.
    ``mask``: boolean, broadcastable to (..., L, S), True = the query may attend
    to the key (PyTorch's boolean convention). ``is_causal``: query i may attend
    to keys 0..i only (the lower triangle of L x S, aligned at the top left as in
    PyTorch; for queries that are the last L of S positions, as with a key/value
    cache, pass a mask instead); with a mask as well, a key must be allowed by
    both. ``scale`` defaults to 1 / sqrt(d). A query that may attend to no key
    at all gets output 0 (and gradient 0), never NaN, as in PyTorch.
    """
    q = as_tensor(q)
    k, v = as_tensor(k, like=q), as_tensor(v, like=q)
    scores_shape = _check_attention_shapes(q, k, v)
    mask = _attention_mask(mask, is_causal, scores_shape, q)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return ScaledDotProductAttention(mask, scale)(q, k, v)

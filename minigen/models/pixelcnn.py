"""PixelCNN and Gated PixelCNN: autoregressive image models with exact likelihood.

An image x with C channels of H x W pixels is a sequence of D = H*W*C
sub-pixels in raster order (row by row, left to right) and, within a pixel,
colour order (R, then G, then B). The chain rule writes its probability
exactly as

    p(x) = prod_i p(x_i | x_<i)                         (van den Oord et al. 2016, eq. 1)

and a PixelCNN computes every factor at once with *masked* convolutions: a
weight that could carry information from x_i or a later sub-pixel to the
prediction of x_i is fixed at zero. Two masks suffice:

* mask A (first layer): the centre tap may read only earlier colours;
* mask B (later layers): the centre tap may also read the same colour, since
  those features already exclude x_i itself.

Each sub-pixel gets K logits (a K-way softmax over its grey levels).

Sampling is sequential: D network evaluations in the textbook algorithm
(:meth:`sample` with ``cached=False``). The cached sampler (Ramachandran et al.
2017, "Fast Generation for Convolutional Autoregressive Models") computes,
for each new sub-pixel, only the activations at that one position and keeps
all earlier ones, so each step costs one pixel's worth of network instead of
a whole image's. Both samplers draw the same uniform numbers and use the same
inverse-CDF rule, so for the same seed they give the same images.
"""

from __future__ import annotations


import numpy as np
from tqdm.auto import tqdm

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor, no_grad

# ----------------------------------------------------------------------------
# Masks


def channel_groups(channels: int, colors: int) -> np.ndarray:
    """The colour group of each of ``channels`` feature maps: contiguous blocks.

    With C colours, channel k of n belongs to group floor(k * C / n), so the
    first n/C maps "belong to" red, the next to green, and so on.
    """
    ### BEGIN SOLUTION
    return np.arange(channels) * colors // channels
    ### END SOLUTION


def causal_mask(out_groups, in_groups, kernel_size, mask_type: str) -> np.ndarray:
    """The (out, in, kh, kw) 0/1 mask of a raster-causal convolution.

    Taps in rows above the centre, and left of the centre in its row, are
    open. At the centre tap, output group g may read input group g' when
    g' < g (mask "A") or g' <= g (mask "B").
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = _pair(kernel_size)
    ### BEGIN SOLUTION
    out_groups, in_groups = np.asarray(out_groups), np.asarray(in_groups)
    mask = np.zeros((len(out_groups), len(in_groups), kh, kw), dtype=np.float32)
    mask[:, :, : kh // 2, :] = 1
    mask[:, :, kh // 2, : kw // 2] = 1
    earlier = in_groups[None, :] < out_groups[:, None]
    same = in_groups[None, :] == out_groups[:, None]
    mask[:, :, kh // 2, kw // 2] = earlier | (same & (mask_type == "B"))
    return mask
    ### END SOLUTION


def vertical_mask(out_channels: int, in_channels: int, kernel_size, include_centre_row: bool) -> np.ndarray:
    """Mask of the Gated PixelCNN's vertical stack: whole rows above the centre,
    plus the centre row itself after the first layer.

    The first layer reads only rows strictly above, so every vertical feature
    at row i depends on image rows < i; later layers may then read their input's
    whole centre row, and the stack has no blind spot.
    """
    kh, kw = _pair(kernel_size)
    mask = np.zeros((out_channels, in_channels, kh, kw), dtype=np.float32)
    mask[:, :, : kh // 2 + include_centre_row, :] = 1
    return mask


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


class MaskedConv2d(nn.Conv2d):
    """A Conv2d whose weight is multiplied by a fixed 0/1 mask (a buffer, never trained).

    Padding keeps the size ("same" convolution) so output (i, j) lines up with input (i, j).
    """

    def __init__(self, mask: np.ndarray):
        out_channels, in_channels, kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask)

    def masked_weight(self):
        return self.weight * self.mask

    def forward(self, x):
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


# ----------------------------------------------------------------------------
# Where the convolutions are evaluated: everywhere, or at one place only.


class FullImage:
    """Evaluate every convolution over the whole image (training, naive sampling)."""

    def __call__(self, conv: MaskedConv2d, inputs):
        return conv(inputs)


class CachedPlace:
    """Evaluate convolutions at one pixel (i, j) or one row i, keeping all inputs.

    A model's forward code calls ``place(conv, inputs)`` for every convolution.
    Here ``inputs`` is either a whole image (the model's input: already
    complete up to the current sub-pixel) or the conv's input values at this
    place only, which are written into a zero-padded cache of that conv's
    input. The output at the place is then one small matrix product over the
    cached window. Masks make the not-yet-written (zero) entries irrelevant.
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.caches: dict = {}
        self.weights: dict = {}  # each conv's masked weight, computed once per sampling run
        self.row, self.col = 0, None  # col None: the whole row
        self.vertical_row = None  # per-row results a model keeps (the gated vertical stack)

    def at(self, row: int, col: int | None = None) -> "CachedPlace":
        self.row, self.col = row, col
        return self

    def _cache(self, conv, inputs):
        kh, kw = conv.kernel_size
        ph, pw = kh // 2, kw // 2
        if inputs.ndim == 4:  # a whole image is its own cache
            return F.pad(inputs, (ph, ph, pw, pw)).data
        key = id(conv)
        if key not in self.caches:
            xp = backend.get_array_module(inputs.data)
            shape = (inputs.shape[0], inputs.shape[1], self.height + 2 * ph, self.width + 2 * pw)
            self.caches[key] = xp.zeros(shape, dtype=inputs.dtype)
        cache = self.caches[key]
        if self.col is None:
            cache[:, :, self.row + ph, pw:pw + self.width] = inputs.data
        else:
            cache[:, :, self.row + ph, self.col + pw] = inputs.data
        return cache

    def _weight(self, conv: MaskedConv2d):
        if id(conv) not in self.weights:
            self.weights[id(conv)] = conv.masked_weight()
        return self.weights[id(conv)]

    def __call__(self, conv: MaskedConv2d, inputs):
        cache = Tensor(self._cache(conv, inputs))
        kh, kw = conv.kernel_size
        weight = self._weight(conv)
        strip = cache[:, :, self.row:self.row + kh]
        if self.col is None:  # a whole row: (N, out, W)
            return F.conv2d(strip, weight, conv.bias)[:, :, 0]
        window = strip[:, :, :, self.col:self.col + kw].reshape(cache.shape[0], -1)
        return F.linear(window, weight.reshape(conv.out_channels, -1), conv.bias)


def _per_channel(values, like):
    """(N, C) values shaped to broadcast over ``like`` = (N, C, ...) at any place."""
    return values.reshape(values.shape + (1,) * (like.ndim - 2))


def sample_levels(logits, uniform):
    """Inverse-CDF sampling: the first level whose cumulative probability exceeds u.

    ``logits`` (N, K) Tensor and ``uniform`` (N,) array in [0, 1) -> (N,) integer
    levels (an array). The same u and (up to rounding) the same logits always
    give the same level; rounding can never push the result past K - 1.
    """
    ### BEGIN SOLUTION
    probs = F.softmax(logits, axis=1).data
    xp = backend.get_array_module(probs)
    below = (xp.cumsum(probs, axis=1) <= uniform[:, None]).sum(axis=1)
    return xp.minimum(below, probs.shape[1] - 1)
    ### END SOLUTION


def naive_sampling_loop(logits_of, x, uniform, temperature: float, drawn) -> None:
    """The textbook sampler: one full network evaluation per sub-pixel, in raster
    order (rows, then columns) and colour order within a pixel (eq. 1).

    ``logits_of(x)`` gives (N, K, C, H, W) logits for the integer images ``x``
    (N, C, H, W), which are filled in place: sub-pixel (c, i, j) becomes
    ``sample_levels(logits[:, :, c, i, j] / temperature, uniform[:, c, i, j])``,
    and then ``drawn(c, i, j)`` is called.
    """
    ### BEGIN SOLUTION
    _, channels, height, width = x.shape
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                logits = logits_of(x)[:, :, c, i, j]
                x[:, c, i, j] = sample_levels(logits / temperature, uniform[:, c, i, j])
                drawn(c, i, j)
    ### END SOLUTION


def categorical_log_prob(logits, x):
    """log p(x) = sum_i log softmax(logits_i)[x_i], per image, in nats (eq. 1).

    ``logits`` (N, K, C, H, W) Tensor, ``x`` (N, C, H, W) integer levels ->
    (N,) Tensor: the chain rule's factors, one K-way softmax per sub-pixel.
    """
    ### BEGIN SOLUTION
    target = x if isinstance(x, Tensor) else Tensor(x)
    nll = F.cross_entropy(logits, Tensor(target.data.astype(np.int64)), axis=1, reduction="none")
    return -nll.reshape(nll.shape[0], -1).sum(axis=1)
    ### END SOLUTION


# ----------------------------------------------------------------------------
# The shared machinery: likelihood and sampling


class AutoregressiveImageModel(nn.Module):
    """What PixelCNN and GatedPixelCNN share: input scaling, exact log-likelihood,
    and the naive and cached samplers. Subclasses define ``_logits(x, labels, place)``."""

    def __init__(self, channels: int, levels: int, num_classes: int | None, **settings):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.channels, self.levels, self.num_classes = channels, levels, num_classes
        self.config = dict(channels=channels, levels=levels, num_classes=num_classes, **settings)
        """The constructor's arguments: ``type(model)(**model.config)`` rebuilds it (checkpoints)."""

    def _scale(self, x):
        """Integer levels 0..K-1 -> floats in [-1, 1] (what the first layer reads)."""
        data = x.data if isinstance(x, Tensor) else x
        return Tensor((data.astype(np.float32) * (2.0 / (self.levels - 1)) - 1.0).astype(np.float32))

    def _check_input(self, x, labels):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (N, {self.channels}, H, W), got {x.shape}")
        data = x.data if isinstance(x, Tensor) else x
        if data.min() < 0 or data.max() >= self.levels:
            raise ValueError(f"pixel values must be integer levels in 0..{self.levels - 1}, "
                             f"got values from {data.min()} to {data.max()}")
        if (labels is None) != (self.num_classes is None):
            need = "needs labels" if self.num_classes else "was built without classes; pass no labels"
            raise ValueError(f"this model {need} (num_classes={self.num_classes})")

    def forward(self, x, labels=None):
        """Logits of shape (N, K, C, H, W) for integer images x: K levels for every sub-pixel."""
        self._check_input(x, labels)
        return self.network(self._scale(x), labels)

    def network(self, inputs, labels=None):
        """The network on float inputs in [-1, 1], (N, C, H, W) -> logits (N, K, C, H, W).

        Differentiable in ``inputs``: the causality tests take gradients here.
        """
        logits = self._logits(inputs, labels, FullImage())
        n, _, h, w = logits.shape
        return logits.reshape(n, self.channels, self.levels, h, w).transpose(0, 2, 1, 3, 4)

    def log_prob(self, x, labels=None):
        """log p(x) in nats, exactly, for each image: shape (N,)."""
        return categorical_log_prob(self(x, labels), x)

    def loss(self, x, labels=None):
        """Mean negative log-likelihood in nats per image (the training loss)."""
        return -self.log_prob(x, labels).mean()


    # -- sampling --------------------------------------------------------------
    def sample(self, n: int, size=(8, 8), labels=None, temperature: float = 1.0,
               cached: bool = False, seed: int = 0, device: str | None = None, progress: bool = False,
               on_step=None):
        """Draw ``n`` images of ``size`` = (H, W) as integer levels, (n, C, H, W).

        ``temperature`` divides the logits (below 1: sharper, above 1: flatter).
        ``cached=True`` gives the same images, much faster.
        ``on_step(c, i, j, x)`` is called after every sub-pixel is drawn, with the
        images so far (for figures, and for timing a prefix of the loop).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = device or self._device()
        height, width = _pair(size)
        xp = backend.xp_for(device)
        uniform = xp.asarray(np.random.default_rng(seed).random((n, self.channels, height, width)))
        if labels is not None:
            labels = Tensor(xp.asarray(np.asarray(labels, dtype=np.int64).reshape(n)))
        x = xp.zeros((n, self.channels, height, width), dtype=np.int64)
        self._check_input(x, labels)
        was_training = self.training
        self.eval()
        bar = tqdm(total=height * width * self.channels, desc="sampling", disable=not progress)

        def drawn(c, i, j):
            bar.update(1)
            if on_step is not None:
                on_step(c, i, j, x)

        try:
            with no_grad():
                sampler = self._sample_cached if cached else self._sample_naive
                sampler(x, labels, uniform, temperature, drawn)
        finally:
            bar.close()
            self.train(was_training)
        return x

    def _device(self) -> str:
        return next(iter(self.parameters())).device

    def _draw(self, x, logits_c, uniform, temperature, c, i, j, drawn):
        x[:, c, i, j] = sample_levels(logits_c / temperature, uniform[:, c, i, j])
        drawn(c, i, j)

    def _sample_naive(self, x, labels, uniform, temperature, drawn):
        """The textbook loop: one full forward pass per sub-pixel."""
        naive_sampling_loop(lambda images: self(images, labels), x, uniform, temperature, drawn)

    def _sample_cached(self, x, labels, uniform, temperature, drawn):
        """One pixel's worth of network per sub-pixel, reusing cached activations."""
        _, channels, height, width = x.shape
        place = CachedPlace(height, width)
        for i in range(height):
            self._start_row(x, labels, place.at(i))
            for j in range(width):
                for c in range(channels):
                    logits = self._logits(self._scale(x), labels, place.at(i, j))
                    logits = logits.reshape(x.shape[0], channels, self.levels)[:, c]
                    self._draw(x, logits, uniform, temperature, c, i, j, drawn)

    def _start_row(self, x, labels, place):
        """Work done once per row before its pixels (the gated model's vertical stack)."""


# ----------------------------------------------------------------------------
# PixelCNN


class ResidualBlock(nn.Module):
    """ReLU -> 1x1 (h -> h/2) -> ReLU -> k x k -> ReLU -> 1x1 (h/2 -> h), added to the input.

    All three convolutions carry mask B (van den Oord et al. 2016, fig. 5).
    """

    def __init__(self, hidden: int, colors: int, kernel_size: int = 3):
        super().__init__()
        full, half = channel_groups(hidden, colors), channel_groups(hidden // 2, colors)
        self.reduce = MaskedConv2d(causal_mask(half, full, 1, "B"))
        self.conv = MaskedConv2d(causal_mask(half, half, kernel_size, "B"))
        self.expand = MaskedConv2d(causal_mask(full, half, 1, "B"))

    def forward(self, h, place):
        a = place(self.reduce, F.relu(h))
        a = place(self.conv, F.relu(a))
        return h + place(self.expand, F.relu(a))


class PixelCNN(AutoregressiveImageModel):
    """The PixelCNN of van den Oord et al. (2016): a 7x7 mask-A convolution,
    residual mask-B blocks, and two 1x1 mask-B layers to K logits per sub-pixel.

    Its receptive field has a *blind spot*: stacked 3x3 mask-B kernels never
    reach the pixels up and to the right beyond a wedge. ``GatedPixelCNN`` fixes it.
    Optional class conditioning adds a learned per-class bias to the first
    layer's features, which the residual stream carries to every block.
    """

    def __init__(self, channels: int = 1, levels: int = 2, hidden: int = 64, blocks: int = 5,
                 num_classes: int | None = None, first_kernel: int = 7, kernel_size: int = 3):
        super().__init__(channels, levels, num_classes, hidden=hidden, blocks=blocks,
                         first_kernel=first_kernel, kernel_size=kernel_size)
        if hidden % (2 * channels):
            raise ValueError(f"hidden ({hidden}) must be a multiple of 2 * channels ({2 * channels})")
        image, full = channel_groups(channels, channels), channel_groups(hidden, channels)
        out = channel_groups(channels * levels, channels)
        self.input = MaskedConv2d(causal_mask(full, image, first_kernel, "A"))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, channels, kernel_size) for _ in range(blocks))
        self.head1 = MaskedConv2d(causal_mask(full, full, 1, "B"))
        self.head2 = MaskedConv2d(causal_mask(out, full, 1, "B"))
        self.class_bias = nn.Embedding(num_classes, hidden) if num_classes else None

    def _logits(self, x, labels, place):
        h = place(self.input, x)
        if self.class_bias is not None:
            h = h + _per_channel(self.class_bias(labels), h)
        for block in self.blocks:
            h = block(h, place)
        return place(self.head2, F.relu(place(self.head1, F.relu(h))))


# ----------------------------------------------------------------------------
# Gated PixelCNN


def _gate(a):
    """tanh(first half) * sigmoid(second half) along the channel axis (eq. 2)."""
    half = a.shape[1] // 2
    return F.tanh(a[:, :half]) * F.sigmoid(a[:, half:])


class GatedLayer(nn.Module):
    """One layer of the Gated PixelCNN (van den Oord et al. 2016b, fig. 2).

    vertical:   v' = gate(Vconv(v) [+ class bias])         reads rows above only
    horizontal: h' = h + 1x1(gate(Hconv(h) + 1x1(v') [+ class bias]))
    The vertical stack never reads the horizontal one. The 2h pre-activation
    channels are grouped so that channel t and channel t + h (the two halves
    multiplied by the gate) belong to the same colour group.
    """

    def __init__(self, hidden: int, colors: int, kernel_size: int, first: bool, num_classes: int | None):
        super().__init__()
        groups = channel_groups(hidden, colors)
        doubled = np.concatenate([groups, groups])
        in_groups = channel_groups(colors, colors) if first else groups
        in_channels = colors if first else hidden
        self.vertical = MaskedConv2d(vertical_mask(2 * hidden, in_channels, kernel_size, not first))
        self.horizontal = MaskedConv2d(causal_mask(doubled, in_groups, (1, kernel_size), "A" if first else "B"))
        self.v_to_h = MaskedConv2d(np.ones((2 * hidden, 2 * hidden, 1, 1), dtype=np.float32))
        self.h_out = MaskedConv2d(causal_mask(groups, groups, 1, "B"))
        self.class_bias = nn.Embedding(num_classes, 2 * hidden) if num_classes else None
        self.first = first

    def _conditioned(self, a, labels):
        return a if self.class_bias is None else a + _per_channel(self.class_bias(labels), a)

    def vertical_step(self, v, labels, place):
        """The vertical pre-activation (kept for the horizontal stack) and the gated output."""
        pre = self._conditioned(place(self.vertical, v), labels)
        return pre, _gate(pre)

    def horizontal_step(self, h, v_pre, labels, place):
        a = self._conditioned(place(self.horizontal, h) + place(self.v_to_h, v_pre), labels)
        out = place(self.h_out, _gate(a))
        return out if self.first else h + out


class GatedPixelCNN(AutoregressiveImageModel):
    """Gated PixelCNN (van den Oord et al. 2016b): vertical and horizontal stacks
    with tanh * sigmoid gates, no blind spot, optional class conditioning."""

    def __init__(self, channels: int = 1, levels: int = 2, hidden: int = 32, layers: int = 6,
                 num_classes: int | None = None, kernel_size: int = 3):
        super().__init__(channels, levels, num_classes, hidden=hidden, layers=layers,
                         kernel_size=kernel_size)
        if hidden % channels:
            raise ValueError(f"hidden ({hidden}) must be a multiple of channels ({channels})")
        self.layers = nn.ModuleList(
            GatedLayer(hidden, channels, kernel_size, i == 0, num_classes) for i in range(layers))
        full, out = channel_groups(hidden, channels), channel_groups(channels * levels, channels)
        self.head1 = MaskedConv2d(causal_mask(full, full, 1, "B"))
        self.head2 = MaskedConv2d(causal_mask(out, full, 1, "B"))

    def _vertical_stack(self, x, labels, place):
        """The vertical pre-activations of every layer (they depend on rows above only)."""
        v, pres = x, []
        for layer in self.layers:
            pre, v = layer.vertical_step(v, labels, place)
            pres.append(pre)
        return pres

    def _horizontal_stack(self, x, v_pres, labels, place):
        h = x
        for layer, v_pre in zip(self.layers, v_pres):
            h = layer.horizontal_step(h, v_pre, labels, place)
        return place(self.head2, F.relu(place(self.head1, F.relu(h))))

    def _logits(self, x, labels, place):
        if isinstance(place, FullImage):
            return self._horizontal_stack(x, self._vertical_stack(x, labels, place), labels, place)
        v_pres = [pre[:, :, place.col] for pre in place.vertical_row]
        return self._horizontal_stack(x, v_pres, labels, place)

    def _start_row(self, x, labels, place):
        place.vertical_row = self._vertical_stack(self._scale(x), labels, place)

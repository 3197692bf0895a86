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
(:meth:`~AutoregressiveImageModel.sample` with ``cached=False``). The cached
sampler (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models") computes, for each new sub-pixel, the activations at
that one place only and keeps the earlier ones in a :class:`SamplingCache`, so
each step costs one pixel's worth of network instead of a whole image's. Every
layer therefore has two methods: ``forward`` (the whole image: training and
the naive sampler) and ``step`` (one place, from the cache). Both samplers
draw the same uniform numbers and use the same inverse-CDF rule, so for the
same seed they give the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.functional import as_pair
from ..errors import UserError
from ..progress import tqdm
from .config import check_integers, check_odd, configure
from .inputs import check_count, check_images, check_labels, check_number

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
    kh, kw = as_pair(kernel_size, "kernel_size", 1)
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
    kh, kw = as_pair(kernel_size, "kernel_size", 1)
    mask = np.zeros((out_channels, in_channels, kh, kw), dtype=np.float32)
    mask[:, :, : kh // 2 + include_centre_row, :] = 1
    return mask


# ----------------------------------------------------------------------------
# Masked convolutions, over the whole image or at one place


def masked_conv(x, weight, mask, bias, padding, taps=None):
    """A masked convolution's forward: ``x`` (N, in, H, W) convolved with ``weight * mask``.

    ``weight`` (out, in, kh, kw) and ``bias`` (out,) are Tensors (the layer's
    parameters), ``mask`` the fixed 0/1 array of the same shape (from
    :func:`causal_mask`), ``padding`` (ph, pw) the "same" padding; returns
    (N, out, H, W). The gradient reaches the weight through the mask, so a
    masked tap never learns. ``taps``: the mask's live taps, computed once by
    the layer (F.masked_conv2d uses them to skip the taps the mask closes).
    """
    ### BEGIN SOLUTION
    return F.masked_conv2d(x, weight, mask, bias, padding=padding, taps=taps)
    ### END SOLUTION


@dataclass
class SamplingCache:
    """What one run of the cached sampler keeps between its steps, for images of ``height`` x ``width``.

    ``inputs``: each masked convolution's input so far, zero-padded as the
    convolution pads it; sampling writes one place (or one row) at a time.
    ``weights``: each masked convolution's masked weight as an (out, in*kh*kw)
    matrix, computed once per run instead of once per step.
    ``kept``: anything else a model keeps between steps, by the object that
    keeps it (the Gated PixelCNN: the vertical stack of the current row).
    """

    height: int
    width: int
    inputs: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)


class MaskedConv2d(nn.Conv2d):
    """A Conv2d whose weight is multiplied by a fixed 0/1 mask (a buffer, never trained).

    Padding keeps the size ("same" convolution) so output (i, j) lines up with input (i, j).
    """

    def __init__(self, mask: np.ndarray):
        out_channels, in_channels, kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", mask)
        self.taps = F.live_taps(mask)  # once, on the host: the taps the mask keeps

    def masked_weight(self):
        return self.weight * self.mask

    def forward(self, x):
        return masked_conv(x, self.weight, self.mask, self.bias, self.padding, self.taps)

    def step(self, cache: SamplingCache, x_at, row: int, col: int | None = None):
        """The output at (row, col) only, (N, out), given the input there, ``x_at`` (N, in).
        With ``col=None``, the whole row ``row``: (N, in, W) -> (N, out, W).

        ``x_at`` is written into the cache's zero-padded copy of this layer's
        input, and the output is the masked weight times the window around the
        place. Why that equals the full convolution at the place:

        * entries sampling has not reached yet (right of the place, rows below)
          are still zero, and the mask gives exactly those taps zero weight;
        * every other entry holds what the full network computes there on the
          finished image: a place is rewritten at each of its colour steps, and
          its last write is final, since no feature at (i, j) reads that
          pixel's last colour (mask A closes it to every group).
        """
        ph, pw = self.padding
        if self not in cache.inputs:
            xp = backend.get_array_module(x_at.data)
            shape = (x_at.shape[0], self.in_channels, cache.height + 2 * ph, cache.width + 2 * pw)
            cache.inputs[self] = xp.zeros(shape, dtype=x_at.dtype)
        padded = cache.inputs[self]
        if col is None:
            padded[:, :, row + ph, pw:pw + cache.width] = x_at.data
        else:
            padded[:, :, row + ph, col + pw] = x_at.data
        return self._output_at(cache, padded, row, col)

    def step_on_image(self, cache: SamplingCache, image, row: int, col: int | None = None):
        """:meth:`step` for a first layer, which reads the image (N, C, H, W) itself.

        The sampler changes the image between steps (the last sub-pixel drawn
        may sit anywhere in the window), so the window is cut from the image
        afresh each time instead of from a cache.
        """
        ph, pw = self.padding
        return self._output_at(cache, F.pad(image, (ph, ph, pw, pw)).data, row, col)

    def _output_at(self, cache: SamplingCache, padded, row: int, col: int | None):
        """The masked weight times the window of ``padded`` (the zero-padded input) at (row, col) or row ``row``."""
        if self not in cache.weights:
            cache.weights[self] = self.masked_weight().reshape(self.out_channels, -1)
        weight = cache.weights[self]
        kh, kw = self.kernel_size
        if col is None:  # the kh rows around row ``row``, convolved without padding: (N, out, 1, W)
            strip = Tensor(padded[:, :, row:row + kh])
            return F.conv2d(strip, weight.reshape(self.weight.shape), self.bias)[:, :, 0]
        window = padded[:, :, row:row + kh, col:col + kw].reshape(len(padded), -1)
        return F.linear(Tensor(window), weight, self.bias)


def _per_channel(values, like):
    """(N, C) values shaped to broadcast over ``like`` = (N, C, ...): an image, a row or a place."""
    return values.reshape(values.shape + (1,) * (like.ndim - 2))


# ----------------------------------------------------------------------------
# Likelihood and sampling, one sub-pixel at a time


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


class AutoregressiveImageModel(nn.Module):
    """What every autoregressive image model shares: input scaling, exact
    log-likelihood, and the two samplers with their seeding, temperature and
    ``on_step`` callback.

    A model provides the network twice over:

    * ``logits(inputs, labels)``: (N, C*K, H, W) logits for the whole image,
      the K levels of colour c in channels c*K .. c*K + K - 1;
    * ``logits_at(cache, inputs, labels, row, col)``: the (N, C*K) logits at
      (row, col) only, from the image complete up to there and the cache;

    and, if it needs to, ``start_row(cache, inputs, labels, row)``, called once
    before each row's first pixel. ``inputs`` are the images scaled to [-1, 1].
    """

    Config = None  # the subclass's config dataclass

    def __init__(self, config):
        super().__init__()
        self.config = config
        """The settings: ``type(model)(**config_dict(model.config))`` rebuilds the model (checkpoints)."""
        self.channels, self.levels, self.num_classes = config.channels, config.levels, config.num_classes

    def logits(self, inputs, labels=None):
        raise NotImplementedError(f"{type(self).__name__} must define logits(inputs, labels)")

    def logits_at(self, cache: SamplingCache, inputs, labels, row: int, col: int):
        raise NotImplementedError(f"{type(self).__name__} must define logits_at(cache, inputs, labels, row, col)")

    def start_row(self, cache: SamplingCache, inputs, labels, row: int) -> None:
        """Work done once per row, before its first pixel (nothing, unless a model needs it)."""

    def _scale(self, x):
        """Integer levels 0..K-1 -> floats in [-1, 1] (what the first layer reads)."""
        data = x.data if isinstance(x, Tensor) else x
        return Tensor((data.astype(np.float32) * (2.0 / (self.levels - 1)) - 1.0).astype(np.float32))

    def _checked(self, x, labels, where: str):
        """The images as an int64 array and the labels as an int64 array on the images' device
        (or None), or a one-line error before any work (see :mod:`minigen.models.inputs`)."""
        where = f"{type(self).__name__}.{where}"
        x = check_images(x, where, channels=self.channels, levels=self.levels)
        return x, self._checked_labels(labels, len(x), backend.device_of(x), where)

    def _checked_labels(self, labels, n: int, device: str, where: str):
        if (labels is None) != (self.num_classes is None):
            need = "needs labels" if self.num_classes else "was built without classes; pass no labels"
            raise ValueError(f"{where}: this model {need} (num_classes={self.num_classes})")
        if labels is None:
            return None
        return backend.to_device(check_labels(labels, n, self.num_classes, where), device)

    def forward(self, x, labels=None):
        """Logits of shape (N, K, C, H, W) for integer images x: K levels for every sub-pixel.

        ``x`` (N, C, H, W): a Tensor, an array or a nested list of integer levels
        (floats of integer value pass too); ``labels``: one class per image.
        """
        x, labels = self._checked(x, labels, "forward")
        return self.network(self._scale(x), labels)

    def network(self, inputs, labels=None):
        """The network on float inputs in [-1, 1], (N, C, H, W) -> logits (N, K, C, H, W).

        Differentiable in ``inputs``: the causality tests take gradients here.
        """
        logits = self.logits(inputs, labels)
        n, _, h, w = logits.shape
        return logits.reshape(n, self.channels, self.levels, h, w).transpose(0, 2, 1, 3, 4)

    def log_prob(self, x, labels=None):
        """log p(x) in nats, exactly, for each image: shape (N,). ``x`` and ``labels`` as for :meth:`forward`."""
        x, labels = self._checked(x, labels, "log_prob")
        return categorical_log_prob(self.network(self._scale(x), labels), x)

    def loss(self, x, labels=None):
        """Mean negative log-likelihood in nats per image (the training loss)."""
        x, labels = self._checked(x, labels, "loss")
        return -categorical_log_prob(self.network(self._scale(x), labels), x).mean()

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
        where = f"{type(self).__name__}.sample"
        n = check_count(n, where)
        check_number(temperature, where, "temperature", low=0, open_low=True)
        device = device or self._device()
        height, width = as_pair(size, f"{where}: size", 1)
        labels = self._checked_labels(labels, n, backend.check_device(device), where)
        xp = backend.xp_for(device)
        uniform = xp.asarray(np.random.default_rng(seed).random((n, self.channels, height, width)))
        x = xp.zeros((n, self.channels, height, width), dtype=np.int64)
        bar = tqdm(total=height * width * self.channels, desc="sampling", disable=not progress)

        def drawn(c, i, j):
            bar.update(1)
            if on_step is not None:
                on_step(c, i, j, x)

        with bar, self.evaluating():
            if cached:
                cached_sampling_loop(self, x, labels, uniform, temperature, drawn)
            else:
                # checked once above: each step calls the network directly, not forward's checks
                logits_of = lambda images: self.network(self._scale(images), labels)
                naive_sampling_loop(logits_of, x, uniform, temperature, drawn)
        return x

    def _device(self) -> str:
        return next(iter(self.parameters())).device


def cached_sampling_loop(model, x, labels, uniform, temperature: float, drawn) -> None:
    """The cached sampler (Ramachandran et al. 2017): the naive loop with one change,
    the logits come from ``model.logits_at``, the network at the current place only,
    which reuses what the earlier steps left in one :class:`SamplingCache`.

    ``x`` (N, C, H, W) integer images, filled in place in raster order and colour
    order; ``labels`` as the model reads them (or None); ``uniform``, ``temperature``
    and ``drawn(c, i, j)`` as in :func:`naive_sampling_loop`. Before each row's
    first pixel, ``model.start_row(cache, inputs, labels, i)``; at each place,
    ``model.logits_at(cache, inputs, labels, i, j)`` gives (N, C*K) logits, the K
    levels of colour c in columns c*K .. c*K + K - 1. ``inputs`` is always
    ``model._scale(x)``: the images so far, scaled to [-1, 1].
    """
    ### BEGIN SOLUTION
    n, channels, height, width = x.shape
    cache = SamplingCache(height, width)
    for i in range(height):
        model.start_row(cache, model._scale(x), labels, i)
        for j in range(width):
            for c in range(channels):
                logits = model.logits_at(cache, model._scale(x), labels, i, j)
                logits = logits.reshape(n, channels, model.levels)[:, c]
                x[:, c, i, j] = sample_levels(logits / temperature, uniform[:, c, i, j])
                drawn(c, i, j)
    ### END SOLUTION


# ----------------------------------------------------------------------------
# PixelCNN


@dataclass(frozen=True)
class PixelCNNConfig:
    """The settings of a :class:`PixelCNN`: ``channels`` colours of ``levels``
    grey levels each, ``blocks`` residual blocks of ``hidden`` feature maps, a
    ``first_kernel`` mask-A layer and ``kernel_size`` mask-B layers, and
    ``num_classes`` classes to condition on (None: unconditional)."""

    channels: int = 1
    levels: int = 2
    hidden: int = 64
    blocks: int = 5
    num_classes: int | None = None
    first_kernel: int = 7
    kernel_size: int = 3

    def __post_init__(self):
        check_integers(self, channels=1, levels=2, hidden=1, blocks=0, first_kernel=1, kernel_size=1)
        if self.num_classes is not None:
            check_integers(self, num_classes=1)
        check_odd(self, "first_kernel", "kernel_size")
        if self.hidden % (2 * self.channels):
            raise UserError(f"PixelCNNConfig: hidden ({self.hidden}) must be a multiple of "
                            f"2 * channels ({2 * self.channels})")


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

    def forward(self, h):
        a = self.reduce(F.relu(h))
        a = self.conv(F.relu(a))
        return h + self.expand(F.relu(a))

    def step(self, cache: SamplingCache, h, row: int, col: int):
        """:meth:`forward` at (row, col) only: ``h`` is (N, hidden) there."""
        a = self.reduce.step(cache, F.relu(h), row, col)
        a = self.conv.step(cache, F.relu(a), row, col)
        return h + self.expand.step(cache, F.relu(a), row, col)


class PixelCNN(AutoregressiveImageModel):
    """The PixelCNN of van den Oord et al. (2016): a 7x7 mask-A convolution,
    residual mask-B blocks, and two 1x1 mask-B layers to K logits per sub-pixel.

    Its receptive field has a *blind spot*: stacked 3x3 mask-B kernels never
    reach the pixels up and to the right beyond a wedge. ``GatedPixelCNN`` fixes it.
    Optional class conditioning adds a learned per-class bias to the first
    layer's features, which the residual stream carries to every block.

    ``PixelCNN(hidden=32)`` and ``PixelCNN(PixelCNNConfig(hidden=32))`` build the same model.
    """

    Config = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig | None = None, **settings):
        config = configure(PixelCNNConfig, config, **settings)
        super().__init__(config)
        colors, hidden = config.channels, config.hidden
        image, full = channel_groups(colors, colors), channel_groups(hidden, colors)
        out = channel_groups(colors * config.levels, colors)
        self.input = MaskedConv2d(causal_mask(full, image, config.first_kernel, "A"))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, colors, config.kernel_size) for _ in range(config.blocks))
        self.head1 = MaskedConv2d(causal_mask(full, full, 1, "B"))
        self.head2 = MaskedConv2d(causal_mask(out, full, 1, "B"))
        self.class_bias = nn.Embedding(config.num_classes, hidden) if config.num_classes else None

    def _conditioned(self, h, labels):
        return h if self.class_bias is None else h + _per_channel(self.class_bias(labels), h)

    def logits(self, inputs, labels=None):
        h = self._conditioned(self.input(inputs), labels)
        for block in self.blocks:
            h = block(h)
        return self.head2(F.relu(self.head1(F.relu(h))))

    def logits_at(self, cache: SamplingCache, inputs, labels, row: int, col: int):
        """:meth:`logits` at (row, col) only: the same layers, each by its ``step``."""
        h = self._conditioned(self.input.step_on_image(cache, inputs, row, col), labels)
        for block in self.blocks:
            h = block.step(cache, h, row, col)
        return self.head2.step(cache, F.relu(self.head1.step(cache, F.relu(h), row, col)), row, col)


# ----------------------------------------------------------------------------
# Gated PixelCNN


@dataclass(frozen=True)
class GatedPixelCNNConfig:
    """The settings of a :class:`GatedPixelCNN`: ``channels`` colours of
    ``levels`` grey levels each, ``layers`` gated layers of ``hidden`` feature
    maps with ``kernel_size`` kernels, and ``num_classes`` classes to condition
    on (None: unconditional)."""

    channels: int = 1
    levels: int = 2
    hidden: int = 32
    layers: int = 6
    num_classes: int | None = None
    kernel_size: int = 3

    def __post_init__(self):
        check_integers(self, channels=1, levels=2, hidden=1, layers=1, kernel_size=1)
        if self.num_classes is not None:
            check_integers(self, num_classes=1)
        check_odd(self, "kernel_size")
        if self.hidden % self.channels:
            raise UserError(f"GatedPixelCNNConfig: hidden ({self.hidden}) must be a multiple of "
                            f"channels ({self.channels})")


def gate(a):
    """tanh(first half) * sigmoid(second half) along the channel axis (eq. 2)."""
    half = a.shape[1] // 2
    return F.tanh(a[:, :half]) * F.sigmoid(a[:, half:])


class GatedLayer(nn.Module):
    """One layer of the Gated PixelCNN (van den Oord et al. 2016b, fig. 2).

    vertical:   v' = gate(Vconv(v) [+ class bias])         reads rows above only
    horizontal: h' = h + 1x1(gate(Hconv(h) + 1x1(v') [+ class bias]))
    The vertical stack never reads the horizontal one. The 2h pre-activation
    channels are grouped so that channel t and channel t + h (the two halves
    multiplied by the gate) belong to the same colour group. The first layer
    reads the image in both stacks and has no residual connection.
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

    def conditioned(self, a, labels):
        """``a`` (N, 2h, ...) plus this layer's class bias of ``labels`` (nothing for an unconditional model)."""
        return a if self.class_bias is None else a + _per_channel(self.class_bias(labels), a)

    def vertical_forward(self, v, labels):
        """The vertical pre-activation (the horizontal stack reads it) and the gated output, whole image."""
        pre = self.conditioned(self.vertical(v), labels)
        return pre, gate(pre)

    def vertical_row(self, cache: SamplingCache, v, labels, row: int):
        """:meth:`vertical_forward` along row ``row`` only: (N, 2h, W) pre-activation and gated output.
        ``v`` is the image (first layer) or the previous layer's gated row (N, hidden, W)."""
        conv = self.vertical.step_on_image if self.first else self.vertical.step
        pre = self.conditioned(conv(cache, v, row), labels)
        return pre, gate(pre)

    def horizontal_step(self, cache: SamplingCache, h, v_pre, labels, row: int, col: int):
        """The horizontal stack of :func:`gated_layer` at (row, col) only: ``h`` is the image (first layer) or
        (N, hidden) at the place, ``v_pre`` the vertical pre-activation there, (N, 2h)."""
        conv = self.horizontal.step_on_image if self.first else self.horizontal.step
        a = self.conditioned(conv(cache, h, row, col) + self.v_to_h.step(cache, v_pre, row, col), labels)
        out = self.h_out.step(cache, gate(a), row, col)
        return out if self.first else h + out


def gated_layer(layer: GatedLayer, v, h, labels=None):
    """One layer of the Gated PixelCNN over the whole image (van den Oord et al. 2016b, eq. 2, fig. 2):
    returns the new vertical and horizontal stacks ``(v', h')``.

        v_pre = Vconv(v) [+ class bias]                  layer.vertical, layer.conditioned
        v'    = gate(v_pre)                              tanh(first half) * sigmoid(second half)
        h'    = h + 1x1(gate(Hconv(h) + 1x1(v_pre) [+ class bias]))
                 layer.horizontal, layer.v_to_h (it reads v_pre, not v'), layer.h_out

    The first layer (``layer.first``) reads the image in both stacks (``v`` and
    ``h`` are the image) and has no residual connection: there h' is the
    1x1(...) term alone. ``labels`` (N,) or None; ``layer.conditioned(a, labels)``
    adds the class bias (nothing for an unconditional model).
    """
    ### BEGIN SOLUTION
    v_pre = layer.conditioned(layer.vertical(v), labels)
    a = layer.conditioned(layer.horizontal(h) + layer.v_to_h(v_pre), labels)
    out = layer.h_out(gate(a))
    return gate(v_pre), (out if layer.first else h + out)
    ### END SOLUTION


class GatedPixelCNN(AutoregressiveImageModel):
    """Gated PixelCNN (van den Oord et al. 2016b): vertical and horizontal stacks
    with tanh * sigmoid gates, no blind spot, optional class conditioning.

    ``GatedPixelCNN(hidden=16)`` and ``GatedPixelCNN(GatedPixelCNNConfig(hidden=16))`` build the same model.
    """

    Config = GatedPixelCNNConfig

    def __init__(self, config: GatedPixelCNNConfig | None = None, **settings):
        config = configure(GatedPixelCNNConfig, config, **settings)
        super().__init__(config)
        colors, hidden = config.channels, config.hidden
        self.layers = nn.ModuleList(GatedLayer(hidden, colors, config.kernel_size, i == 0, config.num_classes)
                                    for i in range(config.layers))
        full, out = channel_groups(hidden, colors), channel_groups(colors * config.levels, colors)
        self.head1 = MaskedConv2d(causal_mask(full, full, 1, "B"))
        self.head2 = MaskedConv2d(causal_mask(out, full, 1, "B"))

    def vertical_stack(self, inputs, labels=None) -> list:
        """Every layer's vertical pre-activation, whole image (they depend on rows above only)."""
        v, pres = inputs, []
        for layer in self.layers:
            pre, v = layer.vertical_forward(v, labels)
            pres.append(pre)
        return pres

    def logits(self, inputs, labels=None):
        v = h = inputs
        for layer in self.layers:
            v, h = gated_layer(layer, v, h, labels)
        return self.head2(F.relu(self.head1(F.relu(h))))

    def start_row(self, cache: SamplingCache, inputs, labels, row: int) -> None:
        """The vertical stack of row ``row``, once: it reads rows above only, all drawn by now."""
        v, pres = inputs, []
        for layer in self.layers:
            pre, v = layer.vertical_row(cache, v, labels, row)
            pres.append(pre)
        cache.kept[self] = pres

    def logits_at(self, cache: SamplingCache, inputs, labels, row: int, col: int):
        """:meth:`logits` at (row, col) only: the horizontal stack by its ``step``, on the row's vertical stack."""
        h = inputs
        for layer, v_pre in zip(self.layers, cache.kept[self]):
            h = layer.horizontal_step(cache, h, v_pre[:, :, col], labels, row, col)
        return self.head2.step(cache, F.relu(self.head1.step(cache, F.relu(h), row, col)), row, col)

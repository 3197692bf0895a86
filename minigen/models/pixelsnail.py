"""PixelSNAIL: causal convolutions plus causal self-attention (Chen et al. 2018).

A PixelCNN sees the past through stacked convolutions, so a pixel far away
(the top-left corner, seen from the bottom-right) reaches a prediction only
through many layers, or not at all (the blind spot). PixelSNAIL interleaves
its residual convolution blocks with *attention* blocks, through which every
position can read every earlier position directly, in one step (Chen et al.
2018, "PixelSNAIL: An Improved Autoregressive Generative Model", whose
"Model Architecture" section and block diagram the references below mean;
the released code, github.com/neocxi/pixelsnail-public, fills in details).

The model, in order:

* a mask-A convolution of the image (the first layer of a PixelCNN);
* ``blocks`` times: ``residual_layers`` gated residual layers of mask-B
  convolutions, then an attention block. Keys and values are computed from the
  image, the features and the *background*: where each position is (its row
  and column scaled to [-1/2, 1/2), as in the paper, plus sines and cosines of
  them, below); queries from the features and the background. The attention's output joins the features through a gated 1x1
  layer;
* ELU and a 1x1 convolution to K logits for each sub-pixel.

**The attention mask.** Let p(i, j) = i * W + j be a pixel's raster index in
the actual H x W image (the mask is built for the image at hand, any size).
A query at pixel p may attend to the key at pixel q if and only if q < p:
*strictly earlier pixels only*. Keys and values at q read every colour of
pixel q, so the rule must be strict: a pixel's own key would hand it its own
values. Within a pixel the colour order (R, then G, then B) is carried by the
masked convolutions as in the PixelCNN, and the attention respects it with
colour-grouped heads: with C colours there are ``heads`` heads per colour;
the queries of colour g's heads come from a mask-B 1x1 convolution (features
of colour groups <= g), and their outputs reach only the features of colour
groups >= g (a mask-B 1x1 convolution again). So every feature of colour
group g at pixel p still depends only on the sub-pixels before (g, p), which
is what the masked convolutions assume. With C = 1 this is plain causal
attention with the diagonal excluded.

**Cached sampling.** The convolutions step one place at a time from a
:class:`~minigen.models.pixelcnn.SamplingCache` exactly as in the PixelCNN.
Each attention block keeps a :class:`KeyValueCache`: the keys and values of
the finished pixels. When the sampler reaches pixel p, pixel p - 1 is
complete, so its key and value are computed once (from the finished image
and the features it had at its last colour step, which are final) and
appended; the query of pixel p is then compared with the p cached keys only.
The cache holds p positions at pixel p: its memory grows linearly with the
pixels drawn, and each step costs O(p) instead of a whole image's network.

**Where this simplifies the paper, and why.**

* Output distribution: a K-way softmax per sub-pixel (as our PixelCNNs),
  not the discretized mixture of logistics: exact enumeration tests, the same
  sampler and the same likelihood code as the other autoregressive models.
* Convolutions: k x k mask-B convolutions with colour groups (PixelCNN masks)
  instead of the paper's 2x2 down/down-right shifted convolutions over whole
  pixels; masks handle the colour order of sub-pixels, and the PixelCNN's
  cached ``step`` is reused. Their blind spot does not matter here: the
  attention sees every earlier pixel.
* Nonlinearity: ELU instead of concat-ELU (half the channels, same idea);
  the gate is a * sigmoid(b) as in the paper's gated residual block.
* Keys, values and queries are linear (1x1) projections, not the small
  gated residual networks of the paper's code; no dropout; no layer norm.
* Colour-grouped attention heads (above) instead of whole-pixel attention:
  the paper predicts a whole pixel at once with a mixture over its colours.
* Position (an addition): sines and cosines of the row and the column beside
  the paper's linear background (``position_frequencies``, default 4; 0 gives
  the paper's). A dot product of linear positions can prefer only the first or
  the last column, not the query's own; on 16x16 images whose last row copies
  the first, the linear background alone still paid ~1 bit per copied pixel
  after a minute's training, where the sines and cosines paid ~0.001
  (``benchmarks/pixelsnail.py`` measures both).
* Class conditioning (not in the paper): a learned per-class bias added to the
  first layer's features, carried to every block by the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.creation import zeros
from ..engine.ops import cat
from ..errors import UserError
from .config import check_integers, check_odd, configure
from .pixelcnn import AutoregressiveImageModel, MaskedConv2d, SamplingCache, causal_mask, channel_groups


# ----------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PixelSNAILConfig:
    """The settings of a :class:`PixelSNAIL`: ``channels`` colours of ``levels``
    grey levels each; ``blocks`` blocks of ``residual_layers`` gated residual
    layers (``hidden`` feature maps, ``kernel_size`` masked kernels) followed by
    one attention block with ``heads`` heads per colour, each with
    ``key_channels`` query/key features and ``value_channels`` value features;
    ``num_classes`` classes to condition on (None: unconditional);
    ``position_frequencies`` sines and cosines of the row and the column beside
    the paper's linear background (0: the paper's background alone; see
    :func:`background_at`)."""

    channels: int = 1
    levels: int = 2
    hidden: int = 32
    blocks: int = 2
    residual_layers: int = 2
    heads: int = 1
    key_channels: int = 16
    value_channels: int = 32
    num_classes: int | None = None
    kernel_size: int = 3
    position_frequencies: int = 4

    def __post_init__(self):
        check_integers(self, channels=1, levels=2, hidden=1, blocks=1, residual_layers=0, heads=1,
                        key_channels=1, value_channels=1, kernel_size=1, position_frequencies=0)
        if self.num_classes is not None:
            check_integers(self, num_classes=1)
        check_odd(self, "kernel_size")
        if self.hidden % self.channels:
            raise UserError(f"PixelSNAILConfig: hidden ({self.hidden}) must be a multiple of "
                            f"channels ({self.channels})")


# ----------------------------------------------------------------------------
# Pieces


def glu(a):
    """first half * sigmoid(second half) along the channel axis: the gate of the
    paper's gated residual block (after PixelCNN++, Salimans et al. 2017)."""
    half = a.shape[1] // 2
    return a[:, :half] * F.sigmoid(a[:, half:])


def doubled(groups: np.ndarray) -> np.ndarray:
    """The colour groups of a gate's 2h pre-activation channels: channel t and t + h,
    which the gate multiplies together, belong to the same group."""
    return np.concatenate([groups, groups])


def background_channels(frequencies: int) -> int:
    """How many background channels :func:`background_at` makes: the row and the
    column, and a sine and a cosine of each at ``frequencies`` frequencies."""
    return 2 + 4 * frequencies


def background_at(rows, cols, height: int, width: int, xp, frequencies: int = 0):
    """Where each position is, as channels: at ``rows`` x ``cols`` (index arrays that
    broadcast), float32, stacked on a new first axis.

    First (i - H/2) / H and (j - W/2) / W, the paper's background. A score
    q . k that is linear in the key's column can only prefer the leftmost or
    the rightmost column, never "my own column", so a query could not find the
    pixel straight above it by position. Sines and cosines fix that (Vaswani et
    al. 2017, sec. 3.5): with angles a_m(j) = pi 2^m (j + 1/2) / W, m < ``frequencies``,
    the score can hold sum_m cos(a_m(j) - a_m(j')), which peaks where j' = j.
    """
    row = xp.asarray(rows, dtype=np.float32)
    col = xp.asarray(cols, dtype=np.float32)
    channels = [(row - height / 2) / height, (col - width / 2) / width]
    for m in range(frequencies):
        for index, size in ((row, height), (col, width)):
            angle = (np.pi * 2**m / size) * (index + 0.5)
            channels += [xp.sin(angle), xp.cos(angle)]
    shape = np.broadcast_shapes(row.shape, col.shape)
    return xp.stack([xp.broadcast_to(c, shape) for c in channels]).astype(np.float32)


def background(n: int, height: int, width: int, xp, frequencies: int = 0) -> Tensor:
    """The background channels of a whole H x W image, (n, channels, H, W)."""
    grid = background_at(xp.arange(height)[:, None], xp.arange(width)[None, :], height, width, xp, frequencies)
    return Tensor(xp.ascontiguousarray(xp.broadcast_to(grid, (n,) + grid.shape)))


def earlier_pixels(height: int, width: int, xp=np):
    """The (HW, HW) causal attention mask of an H x W image: entry (p, q) is True
    when the query at raster index p = i * W + j may attend to the key at q, that
    is when pixel q comes strictly before pixel p (sec. 2 of the paper).

    The diagonal is False: the key at q reads all of pixel q, its own colours
    included, so attending to it would hand a pixel its own value. ``xp`` is the
    array module (NumPy or CuPy) that builds the mask.
    """
    ### BEGIN SOLUTION
    return xp.tril(xp.ones((height * width, height * width), dtype=bool), k=-1)
    ### END SOLUTION


def attend_to_cache(q, keys, values):
    """One attention step of the cached sampler: the query of the current pixel
    against the keys and values of the P pixels drawn before it,
    softmax(q k^T / sqrt(dk)) v (Vaswani et al. 2017, eq. 1), per image and head.

    ``q`` (N, heads, dk) Tensor; ``keys`` (N, heads, P, dk) and ``values``
    (N, heads, P, dv) Tensors (the cache: every key is strictly earlier, so no
    mask is needed). Returns (N, heads, dv). With P = 0 (the first pixel: nothing
    to attend to) the result is zeros, as the whole-image attention gives a
    query whose keys are all masked.
    """
    ### BEGIN SOLUTION
    n, heads, dv = values.shape[0], values.shape[1], values.shape[3]
    if keys.shape[2] == 0:
        return zeros((n, heads, dv), dtype=values.dtype, device=values.device)
    out = F.scaled_dot_product_attention(q.reshape(n, heads, 1, q.shape[2]), keys, values)
    return out.reshape(n, heads, dv)
    ### END SOLUTION


def as_sequence(x):
    """(N, C, H, W) -> (N, H*W, C): positions in raster order."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w).transpose(0, 2, 1)


def split_heads(x, heads: int):
    """(N, L, heads * d) -> (N, heads, L, d); head t holds channels t*d .. t*d + d - 1."""
    n, length, features = x.shape
    return x.reshape(n, length, heads, features // heads).transpose(0, 2, 1, 3)


def heads_as_image(x, height: int, width: int):
    """(N, heads, H*W, d) -> (N, heads * d, H, W), head t in channels t*d .. t*d + d - 1."""
    n, heads, _, d = x.shape
    return x.transpose(0, 1, 3, 2).reshape(n, heads * d, height, width)


class KeyValueCache:
    """The keys and values of the pixels drawn so far, for one attention block.

    ``keys`` (N, heads, positions, dk) and ``values`` (N, heads, positions, dv)
    are views of buffers that double when full (amortised O(1) per append, as a
    Python list grows), so the memory held is at most twice :attr:`nbytes`, which
    is linear in the number of positions stored.
    """

    def __init__(self):
        self.positions = 0
        self._keys = self._values = None
        self.last_features = None
        """The block's input features at the last place stepped: the features of a pixel
        whose key and value are computed when the next pixel begins."""

    def append(self, key, value) -> None:
        """Store one position: ``key`` (N, heads, dk) and ``value`` (N, heads, dv), arrays."""
        if self._keys is None or self.positions == self._keys.shape[2]:
            self._keys, self._values = self._grown(self._keys, key), self._grown(self._values, value)
        self._keys[:, :, self.positions] = key
        self._values[:, :, self.positions] = value
        self.positions += 1

    def _grown(self, buffer, like):
        """A buffer of twice the capacity (at least 1) holding what ``buffer`` holds."""
        xp = backend.get_array_module(like)
        capacity = 1 if buffer is None else 2 * buffer.shape[2]
        grown = xp.zeros(like.shape[:2] + (capacity,) + like.shape[2:], dtype=like.dtype)
        if buffer is not None:
            grown[:, :, :self.positions] = buffer[:, :, :self.positions]
        return grown

    @property
    def keys(self):
        """(N, heads, positions, dk), or None before the first position is stored."""
        return None if self._keys is None else self._keys[:, :, :self.positions]

    @property
    def values(self):
        """(N, heads, positions, dv), or None before the first position is stored."""
        return None if self._values is None else self._values[:, :, :self.positions]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored keys and values: positions x (bytes of one position's)."""
        return 0 if self._keys is None else self.keys.nbytes + self.values.nbytes

    @property
    def allocated_nbytes(self) -> int:
        """Bytes of the buffers, spare capacity included: less than 2 * nbytes + one position's."""
        return 0 if self._keys is None else self._keys.nbytes + self._values.nbytes


# ----------------------------------------------------------------------------
# Layers


class GatedResidual(nn.Module):
    """h + glu(conv2(elu(conv1(elu(h))))): the paper's gated residual block,
    with k x k mask-B convolutions (the colour order) in place of shifted ones."""

    def __init__(self, hidden: int, colors: int, kernel_size: int):
        super().__init__()
        groups = channel_groups(hidden, colors)
        self.conv = MaskedConv2d(causal_mask(groups, groups, kernel_size, "B"))
        self.gate = MaskedConv2d(causal_mask(doubled(groups), groups, kernel_size, "B"))

    def forward(self, h):
        return h + glu(self.gate(F.elu(self.conv(F.elu(h)))))

    def step(self, cache: SamplingCache, h, row: int, col: int):
        """:meth:`forward` at (row, col) only: ``h`` is (N, hidden) there."""
        a = self.conv.step(cache, F.elu(h), row, col)
        return h + glu(self.gate.step(cache, F.elu(a), row, col))


class CausalAttention(nn.Module):
    """The paper's attention block: each pixel reads the keys and values of
    all strictly earlier pixels, then the result is gated into the features.

    keys, values: linear in [image, features, background] at the key's pixel;
    queries: a mask-B 1x1 convolution of [features, background], ``heads`` heads
    per colour group (the module docstring proves the colour order);
    output: h + glu(1x1(elu(h)) + 1x1(elu(attention))), both 1x1 mask B.
    """

    def __init__(self, hidden: int, colors: int, heads: int, key_channels: int, value_channels: int,
                 frequencies: int = 0):
        super().__init__()
        self.heads = heads * colors
        self.key_channels, self.value_channels, self.frequencies = key_channels, value_channels, frequencies
        features = channel_groups(hidden, colors)
        where = background_channels(frequencies)
        with_background = np.concatenate([features, np.zeros(where, dtype=int)])  # any colour may read
        queries = channel_groups(self.heads * key_channels, colors)
        attended = channel_groups(self.heads * value_channels, colors)
        raw = colors + hidden + where
        self.query = MaskedConv2d(causal_mask(queries, with_background, 1, "B"))
        self.key = nn.Linear(raw, self.heads * key_channels)
        self.value = nn.Linear(raw, self.heads * value_channels)
        self.mix_features = MaskedConv2d(causal_mask(doubled(features), features, 1, "B"))
        self.mix_attention = MaskedConv2d(causal_mask(doubled(features), attended, 1, "B"))

    def forward(self, inputs, h, where: Tensor):
        """The block on the whole image: ``inputs`` (N, C, H, W) in [-1, 1], features
        ``h`` (N, hidden, H, W), ``where`` the background (N, channels, H, W)."""
        _, _, height, width = h.shape
        xp = backend.get_array_module(h.data)
        q = split_heads(as_sequence(self.query(cat([h, where], axis=1))), self.heads)
        raw = as_sequence(cat([inputs, h, where], axis=1))
        k, v = split_heads(self.key(raw), self.heads), split_heads(self.value(raw), self.heads)
        attended = F.scaled_dot_product_attention(q, k, v, mask=earlier_pixels(height, width, xp))
        return self._gated(h, heads_as_image(attended, height, width))

    def _gated(self, h, attended):
        """h + glu(mix(elu(h)) + mix(elu(attended))) on the whole image."""
        return h + glu(self.mix_features(F.elu(h)) + self.mix_attention(F.elu(attended)))

    def step(self, cache: SamplingCache, inputs, h, row: int, col: int):
        """:meth:`forward` at (row, col) only, ``h`` (N, hidden) there: one query against
        the cached keys and values of the pixels before (row, col)."""
        kept = self._kept(cache)
        place = row * cache.width + col
        if kept.positions < place:  # the previous pixel is finished: its key and value join the cache
            self._append_finished(cache, kept, inputs, place - 1)
        kept.last_features = h
        where = Tensor(self._background_at(cache, row, col, len(h), backend.get_array_module(h.data)))
        attended = self._attend(self.query.step(cache, cat([h, where], axis=1), row, col), kept)
        mixed = (self.mix_features.step(cache, F.elu(h), row, col)
                 + self.mix_attention.step(cache, F.elu(attended), row, col))
        return h + glu(mixed)

    def _background_at(self, cache: SamplingCache, row: int, col: int, n: int, xp):
        """The background channels at (row, col) for each of n images, (n, channels)."""
        here = background_at(row, col, cache.height, cache.width, xp, self.frequencies)
        return xp.ascontiguousarray(xp.broadcast_to(here, (n, len(here))))

    def _kept(self, cache: SamplingCache) -> KeyValueCache:
        if self not in cache.kept:
            cache.kept[self] = KeyValueCache()
        return cache.kept[self]

    def _append_finished(self, cache: SamplingCache, kept: KeyValueCache, inputs, place: int) -> None:
        """Key and value of pixel ``place``: its finished image and its features at its
        last colour step (final: no feature of a pixel reads its last colour)."""
        row, col = divmod(place, cache.width)
        n, xp = inputs.shape[0], backend.get_array_module(inputs.data)
        where = Tensor(self._background_at(cache, row, col, n, xp))
        raw = cat([Tensor(inputs.data[:, :, row, col]), kept.last_features, where], axis=1)
        kept.append(self.key(raw).data.reshape(n, self.heads, self.key_channels),
                    self.value(raw).data.reshape(n, self.heads, self.value_channels))

    def _attend(self, q, kept: KeyValueCache):
        """The attention output at one place, (N, heads * dv), from the query (N, heads * dk)."""
        n, xp = q.shape[0], backend.get_array_module(q.data)
        if kept.positions == 0:  # no cache yet: an empty one of the right shapes
            keys = Tensor(xp.zeros((n, self.heads, 0, self.key_channels), dtype=np.float32))
            values = Tensor(xp.zeros((n, self.heads, 0, self.value_channels), dtype=np.float32))
        else:
            keys, values = Tensor(kept.keys), Tensor(kept.values)
        out = attend_to_cache(q.reshape(n, self.heads, self.key_channels), keys, values)
        return out.reshape(n, self.heads * self.value_channels)


class SNAILBlock(nn.Module):
    """``residual_layers`` gated residual layers, then one attention block: the paper's unit, repeated."""

    def __init__(self, config: PixelSNAILConfig):
        super().__init__()
        colors, hidden = config.channels, config.hidden
        self.residuals = nn.ModuleList(GatedResidual(hidden, colors, config.kernel_size)
                                       for _ in range(config.residual_layers))
        self.attention = CausalAttention(hidden, colors, config.heads, config.key_channels, config.value_channels,
                                         config.position_frequencies)

    def forward(self, inputs, h, where):
        for layer in self.residuals:
            h = layer(h)
        return self.attention(inputs, h, where)

    def step(self, cache: SamplingCache, inputs, h, row: int, col: int):
        for layer in self.residuals:
            h = layer.step(cache, h, row, col)
        return self.attention.step(cache, inputs, h, row, col)


# ----------------------------------------------------------------------------
# The model


class PixelSNAIL(AutoregressiveImageModel):
    """PixelSNAIL (Chen et al. 2018): masked gated residual convolutions and causal
    attention over all earlier pixels, with exact likelihood and a cached sampler
    (convolution caches plus a key/value cache per attention block).

    ``PixelSNAIL(hidden=16)`` and ``PixelSNAIL(PixelSNAILConfig(hidden=16))`` build the same model.
    """

    Config = PixelSNAILConfig

    def __init__(self, config: PixelSNAILConfig | None = None, **settings):
        config = configure(PixelSNAILConfig, config, **settings)
        super().__init__(config)
        colors, hidden = config.channels, config.hidden
        image, full = channel_groups(colors, colors), channel_groups(hidden, colors)
        out = channel_groups(colors * config.levels, colors)
        self.input = MaskedConv2d(causal_mask(full, image, config.kernel_size, "A"))
        self.blocks = nn.ModuleList(SNAILBlock(config) for _ in range(config.blocks))
        self.head = MaskedConv2d(causal_mask(out, full, 1, "B"))
        self.class_bias = nn.Embedding(config.num_classes, hidden) if config.num_classes else None

    def _conditioned(self, h, labels):
        if self.class_bias is None:
            return h
        bias = self.class_bias(labels)
        return h + bias.reshape(bias.shape + (1,) * (h.ndim - 2))

    def logits(self, inputs, labels=None):
        n, _, height, width = inputs.shape
        where = background(n, height, width, backend.get_array_module(inputs.data), self.config.position_frequencies)
        h = self._conditioned(self.input(inputs), labels)
        for block in self.blocks:
            h = block(inputs, h, where)
        return self.head(F.elu(h))

    def logits_at(self, cache: SamplingCache, inputs, labels, row: int, col: int):
        """:meth:`logits` at (row, col) only: the convolutions by their ``step``, the
        attention against its key/value cache."""
        h = self._conditioned(self.input.step_on_image(cache, inputs, row, col), labels)
        for block in self.blocks:
            h = block.step(cache, inputs, h, row, col)
        return self.head.step(cache, F.elu(h), row, col)

    def key_value_caches(self, cache: SamplingCache) -> list:
        """The :class:`KeyValueCache` of each attention block in ``cache`` (those used so far)."""
        return [cache.kept[block.attention] for block in self.blocks if block.attention in cache.kept]

"""The small U-Net that DDPM uses to predict noise (Ho et al. 2020, appendix B, in miniature).

    x --conv--> [ResBlock x R, Downsample] per level --> middle ResBlock
      --> [ResBlock x (R + 1) on (h, skip), Upsample] per level --> GroupNorm, SiLU, conv --> eps

Every ResBlock receives the time step t as a sinusoidal embedding passed
through a small MLP (and, for a class-conditional model, a learned class
embedding added to it). GroupNorm pools only within one image, never across
the batch, so an image's prediction does not depend on its batch mates.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.ops import cat


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer steps (Vaswani et al. 2017, sec. 3.5): (N,) -> (N, dim).

    Half the features are sin(t f_k) and half cos(t f_k) for frequencies
    f_k = 10000^(-k / (dim/2)), so every step gets a distinct, smooth code.
    """
    xp = backend.get_array_module(t.data)
    half = dim // 2
    freqs = xp.asarray(np.exp(-math.log(10000.0) * np.arange(half) / half).astype(np.float32))
    angles = t.data.astype(np.float32)[:, None] * freqs
    return Tensor(xp.concatenate([xp.sin(angles), xp.cos(angles)], axis=1))


def group_count(channels: int, groups: int) -> int:
    """The largest group count <= ``groups`` that divides ``channels``."""
    return max(g for g in range(1, groups + 1) if channels % g == 0)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the time embedding; GroupNorm, SiLU, conv; plus a skip."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels, groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels, groups), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, embedding):
        return res_block(self, x, embedding)


def res_block(block: ResBlock, x, embedding):
    """One U-Net residual block with its time step (Ho et al. 2020, appendix B): (N, in, H, W) -> (N, out, H, W).

        h = conv1(SiLU(norm1(x)))
        h = h + embed(SiLU(embedding)), one value per channel, the same at every pixel
        h = conv2(SiLU(norm2(h)))
        return skip(x) + h

    ``embedding`` (N, E): the time (and class) embedding; ``block.embed`` maps it
    to (N, out). ``block.norm1(x, silu=True)`` is GroupNorm followed by SiLU in
    one op; ``block.skip`` is a 1x1 convolution when in != out, else the identity.
    """
    ### BEGIN SOLUTION
    h = block.conv1(block.norm1(x, silu=True))
    h = h + block.embed(F.silu(embedding)).reshape(h.shape[0], h.shape[1], 1, 1)
    h = block.conv2(block.norm2(h, silu=True))
    return block.skip(x) + h
    ### END SOLUTION


def unet_layout(base_channels: int, channel_mults, num_res_blocks: int):
    """The U-Net's layers as plain specs, so every implementation builds the same network.

    Returns ``(down, middle, up, out_width)``: ``down`` and ``up`` list
    ``("res", in, out)`` for a ResBlock, ``("down", width)`` for a stride-2
    convolution and ``("up", width)`` for the convolution after nearest
    upsampling; ``middle`` is the middle ResBlock's width. Each up ResBlock's
    input width counts the skip connection it concatenates, popped in reverse
    order of the down path's outputs (the first convolution's included).
    """
    widths = [base_channels * m for m in channel_mults]
    skip_widths, width, down, up = [base_channels], base_channels, [], []
    for level, out_width in enumerate(widths):
        for _ in range(num_res_blocks):
            down.append(("res", width, out_width))
            width = out_width
            skip_widths.append(width)
        if level < len(widths) - 1:
            down.append(("down", width))
            skip_widths.append(width)
    middle = width
    for level, out_width in reversed(list(enumerate(widths))):
        for _ in range(num_res_blocks + 1):
            up.append(("res", width + skip_widths.pop(), out_width))
            width = out_width
        if level > 0:
            up.append(("up", width))
    return down, middle, up, width


def _layer(spec: tuple, embed_dim: int, groups: int) -> nn.Module:
    """The module for one :func:`unet_layout` spec."""
    kind, *widths = spec
    if kind == "res":
        return ResBlock(*widths, embed_dim, groups)
    return nn.Conv2d(widths[0], widths[0], 3, stride=2 if kind == "down" else 1, padding=1)


class UNet(nn.Module):
    """eps_theta(x_t, t [, class]): an image-to-image network of the input's shape.

    ``channel_mults`` gives each level's width as a multiple of
    ``base_channels``; every level but the last halves the resolution, so an
    8x8 image with (1, 2) goes 8 -> 4 -> 8. Labels equal to ``num_classes``
    mean "no class" (classifier-free guidance).
    """

    def __init__(self, channels: int = 1, base_channels: int = 32, channel_mults=(1, 2),
                 num_res_blocks: int = 1, num_classes: int | None = None, groups: int = 8):
        super().__init__()
        embed_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(),
                                      nn.Linear(embed_dim, embed_dim))
        self.class_embed = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)
        down, middle, up, width = unet_layout(base_channels, channel_mults, num_res_blocks)
        self.down = nn.ModuleList(_layer(spec, embed_dim, groups) for spec in down)
        self.middle = ResBlock(middle, middle, embed_dim, groups)
        self.up = nn.ModuleList(_layer(spec, embed_dim, groups) for spec in up)
        self.norm_out = nn.GroupNorm(group_count(width, groups), width)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x, t, labels=None):
        steps = timestep_embedding(t, self.base_channels).astype(self.conv_in.weight.dtype)  # float64 in gradcheck
        embedding = self.time_mlp(steps)
        if self.class_embed is not None:
            embedding = embedding + self.class_embed(labels)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.middle(h, embedding)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(cat([h, skips.pop()], axis=1), embedding)
            else:
                h = layer(F.upsample_nearest(h, 2))
        return self.conv_out(self.norm_out(h, silu=True))

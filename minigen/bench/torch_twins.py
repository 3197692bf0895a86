"""PyTorch twins of minigen's reference networks, for side-by-side benchmarks only.

Each twin has the same layers, masks and parameter names as the minigen
network it mirrors, so ``Twin.from_minigen(model)`` copies the weights and the
two compute the same function (the benchmarks check that their first losses
agree before comparing speed). This is the only module that imports torch;
nothing else in minigen imports it, and it needs the ``bench`` extra.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.config import config_dict
from ..models.pixelcnn import PixelCNN, causal_mask, channel_groups
from ..models.ddpm import DDPM
from ..models.unet import group_count, timestep_embedding, unet_layout
from ..engine.autograd import Tensor


def _load(twin: nn.Module, model) -> nn.Module:
    """Copy a minigen model's state dict into its twin (strict: every name must match)."""
    twin.load_state_dict({name: torch.from_numpy(np.asarray(array)) for name, array in model.state_dict().items()})
    return twin


# ----------------------------------------------------------------------------
# PixelCNN


class TorchMaskedConv2d(nn.Conv2d):
    """minigen's MaskedConv2d: the weight times a fixed 0/1 mask, "same" padding."""

    def __init__(self, mask: np.ndarray):
        out_channels, in_channels, kh, kw = mask.shape
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
        self.register_buffer("mask", torch.from_numpy(mask))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class TorchResidualBlock(nn.Module):
    """ReLU -> 1x1 (h -> h/2) -> ReLU -> k x k -> ReLU -> 1x1 (h/2 -> h), added to the input; mask B."""

    def __init__(self, hidden: int, colors: int, kernel_size: int):
        super().__init__()
        full, half = channel_groups(hidden, colors), channel_groups(hidden // 2, colors)
        self.reduce = TorchMaskedConv2d(causal_mask(half, full, 1, "B"))
        self.conv = TorchMaskedConv2d(causal_mask(half, half, kernel_size, "B"))
        self.expand = TorchMaskedConv2d(causal_mask(full, half, 1, "B"))

    def forward(self, h):
        return h + self.expand(torch.relu(self.conv(torch.relu(self.reduce(torch.relu(h))))))


class TorchPixelCNN(nn.Module):
    """minigen's PixelCNN (without classes), layer for layer."""

    def __init__(self, channels: int, levels: int, hidden: int, blocks: int,
                 first_kernel: int = 7, kernel_size: int = 3):
        super().__init__()
        self.channels, self.levels = channels, levels
        image, full = channel_groups(channels, channels), channel_groups(hidden, channels)
        out = channel_groups(channels * levels, channels)
        self.input = TorchMaskedConv2d(causal_mask(full, image, first_kernel, "A"))
        self.blocks = nn.ModuleList(TorchResidualBlock(hidden, channels, kernel_size) for _ in range(blocks))
        self.head1 = TorchMaskedConv2d(causal_mask(full, full, 1, "B"))
        self.head2 = TorchMaskedConv2d(causal_mask(out, full, 1, "B"))

    @classmethod
    def from_minigen(cls, model: PixelCNN) -> "TorchPixelCNN":
        """The same network with the same weights as a class-free minigen PixelCNN."""
        if model.num_classes is not None:
            raise ValueError("TorchPixelCNN mirrors class-free PixelCNNs only (num_classes=None)")
        settings = {key: value for key, value in config_dict(model.config).items() if key != "num_classes"}
        return _load(cls(**settings), model)

    def forward(self, x):
        """Logits (N, K, C, H, W) for integer images x (N, C, H, W), as minigen's forward."""
        h = self.input(x.float() * (2.0 / (self.levels - 1)) - 1.0)
        for block in self.blocks:
            h = block(h)
        logits = self.head2(torch.relu(self.head1(torch.relu(h))))
        n, _, height, width = logits.shape
        return logits.reshape(n, self.channels, self.levels, height, width).transpose(1, 2)

    def loss(self, x):
        """Mean negative log-likelihood in nats per image, as minigen's ``loss``."""
        return F.cross_entropy(self(x), x, reduction="sum") / x.shape[0]


# ----------------------------------------------------------------------------
# The DDPM U-Net


class TorchResBlock(nn.Module):
    """minigen's U-Net ResBlock: GroupNorm, SiLU, conv; + time embedding; GroupNorm, SiLU, conv; + skip."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels, groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels, groups), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, embedding):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(F.silu(embedding))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TorchUNet(nn.Module):
    """minigen's UNet (without classes), layer for layer: see :class:`minigen.models.unet.UNet`."""

    def __init__(self, channels: int, base_channels: int, channel_mults, num_res_blocks: int, groups: int):
        super().__init__()
        embed_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(),
                                      nn.Linear(embed_dim, embed_dim))
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)
        down, middle, up, width = unet_layout(base_channels, channel_mults, num_res_blocks)
        self.down = nn.ModuleList(self._layer(spec, embed_dim, groups) for spec in down)
        self.middle = TorchResBlock(middle, middle, embed_dim, groups)
        self.up = nn.ModuleList(self._layer(spec, embed_dim, groups) for spec in up)
        self.norm_out = nn.GroupNorm(group_count(width, groups), width)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    @staticmethod
    def _layer(spec: tuple, embed_dim: int, groups: int) -> nn.Module:
        kind, *widths = spec
        if kind == "res":
            return TorchResBlock(*widths, embed_dim, groups)
        return nn.Conv2d(widths[0], widths[0], 3, stride=2 if kind == "down" else 1, padding=1)

    @classmethod
    def from_ddpm(cls, model: DDPM) -> "TorchUNet":
        """The same network with the same weights as a class-free minigen DDPM's U-Net, built from its config."""
        config = model.config
        if config.num_classes is not None:
            raise ValueError("TorchUNet mirrors class-free U-Nets only (num_classes=None)")
        twin = cls(config.channels, config.base_channels, config.channel_mults, config.num_res_blocks, config.groups)
        return _load(twin, model.net)

    def forward(self, x, t):
        # minigen's own sinusoidal embedding: one formula, shared by both networks.
        codes = torch.from_numpy(np.asarray(timestep_embedding(Tensor(t.numpy()), self.base_channels).data))
        embedding = self.time_mlp(codes)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, embedding) if isinstance(layer, TorchResBlock) else layer(h)
            skips.append(h)
        h = self.middle(h, embedding)
        for layer in self.up:
            if isinstance(layer, TorchResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), embedding)
            else:
                h = layer(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

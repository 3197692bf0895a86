"""Autoencoders that give images a small latent space: a VAE and a VQ-VAE.

Both squeeze an image of H x W pixels through a grid of H/4 x W/4 cells (two
stride-2 convolutions: 28x28 MNIST becomes 7x7) and decode it back. They are
the first stage of two-stage generators: a second model (diffusion, an
autoregressive prior) is then trained on the small grid instead of the pixels.

**VAE** (Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; Stable
Diffusion's first stage in miniature). The encoder gives a diagonal Gaussian
q(z|x) = N(mean, exp(logvar)) per latent element; a sample
z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (the reparameterisation
trick, sec. 2.4) is decoded, and the loss per image is

    -log p(x|z) + beta * KL(q(z|x) || N(0, I)),
    KL = 1/2 sum_j (mean_j^2 + exp(logvar_j) - 1 - logvar_j)          (eq. 10, appendix B)

With beta = 1 this is the negative evidence lower bound (eq. 10). The
default beta = 1e-3 is the KL-regularised autoencoder of latent diffusion
(Rombach et al. 2022): the KL only keeps the latents near the origin, the
code stays almost deterministic and the reconstructions sharp. Its latents
then have an arbitrary scale, so :meth:`VAE.fit_latent_scale` measures
1 / std of the latents over data (Stable Diffusion's ``scale_factor``) and
keeps it in a buffer that checkpoints save.

**VQ-VAE** (van den Oord et al. 2017, "Neural Discrete Representation
Learning"; the tokenizer of VQ-VAE-2 and DALL-E in miniature). Each cell's
encoder output z_e is replaced by its nearest codebook vector e_k (eqs. 1-2),
so an image becomes a grid of integer tokens. The argmin has no gradient;
the straight-through estimator z_q = z_e + sg(e_k - z_e) passes the
decoder's gradient to the encoder unchanged. The loss per image is eq. 3
without its codebook term,

    -log p(x | z_q) + beta * ||z_e - sg(e)||^2            (beta = 0.25, the commitment loss)

because the codebook learns by exponential moving averages instead
(appendix A.1): every training call of :meth:`VQVAE.loss` moves each code
toward the mean of the encoder outputs assigned to it, outside autograd.
Codes that no output chooses for ``restart_after`` training steps in a row
are *dead*: they are restarted at random encoder outputs of the current
batch (the restart rule of Jukebox, Dhariwal et al. 2020, in its simplest form).

**The decoder's likelihood.** Both decoders output one logit per sub-pixel
and score the image with a Bernoulli cross-entropy, grey levels read as
probabilities in [0, 1] (x / (levels - 1)), summed over the pixels: nats per
image. MNIST's pixels are nearly all black or white, where a Bernoulli is the
right model (Kingma & Welling's own MNIST decoder); for grey values the
cross-entropy is still minimised exactly at sigmoid(logit) = x, so the decoded
mean is the reconstruction. It is not a normalised density for grey values
(the continuous Bernoulli, Loaiza-Ganem & Cunningham 2019, adds the missing
normaliser); a Gaussian (squared error) would need a noise scale to set the
balance against the KL. Images go in and come out as integer levels
0..levels-1, like every model here; the encoder reads them scaled to [-1, 1].
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.creation import randn
from ..errors import UserError
from .config import check_integers, configure
from .inputs import check_images, check_number
from .unet import group_count

DOWNSAMPLING = 4  # two stride-2 convolutions: each latent cell covers 4x4 pixels
LOGVAR_RANGE = (-30.0, 20.0)  # clip log-variances as latent diffusion does: exp() stays finite

# ----------------------------------------------------------------------------
# The networks: an encoder to the H/4 x W/4 grid and a decoder back


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus the input: the U-Net's block without a time step."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(channels, groups), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(channels, groups), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.conv1(self.norm1(x, silu=True))
        return x + self.conv2(self.norm2(h, silu=True))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2, then a 3x3 convolution (the U-Net's up step)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.upsample_nearest(x, 2))


def _blocks(channels: int, count: int, groups: int) -> list:
    return [ResBlock(channels, groups) for _ in range(count)]


class Encoder(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> features (N, out_channels, H/4, W/4).

    conv -> blocks -> stride-2 conv -> blocks -> stride-2 conv -> blocks -> GroupNorm, SiLU, conv;
    ``hidden`` maps at full size, 2 * ``hidden`` at half and quarter size.
    """

    def __init__(self, channels: int, hidden: int, blocks: int, groups: int, out_channels: int):
        super().__init__()
        wide = 2 * hidden
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), *_blocks(hidden, blocks, groups),
            nn.Conv2d(hidden, wide, 3, stride=2, padding=1), *_blocks(wide, blocks, groups),
            nn.Conv2d(wide, wide, 3, stride=2, padding=1), *_blocks(wide, blocks, groups))
        self.norm_out = nn.GroupNorm(group_count(wide, groups), wide)
        self.conv_out = nn.Conv2d(wide, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.norm_out(self.layers(x), silu=True))


class Decoder(nn.Module):
    """Latents (N, in_channels, h, w) -> logits (N, C, 4h, 4w): the encoder in mirror image."""

    def __init__(self, in_channels: int, hidden: int, blocks: int, groups: int, channels: int):
        super().__init__()
        wide = 2 * hidden
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, wide, 3, padding=1), *_blocks(wide, blocks, groups),
            Upsample(wide, wide), *_blocks(wide, blocks, groups),
            Upsample(wide, hidden), *_blocks(hidden, blocks, groups))
        self.norm_out = nn.GroupNorm(group_count(hidden, groups), hidden)
        self.conv_out = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, z):
        return self.conv_out(self.norm_out(self.layers(z), silu=True))


# ----------------------------------------------------------------------------
# What both autoencoders share: the doors, the scaling, the decoder's likelihood


class ImageAutoencoder(nn.Module):
    """Integer images in and out, checked at the door, and the Bernoulli decoder's likelihood."""

    Config = None  # the subclass's config dataclass

    def __init__(self, config):
        super().__init__()
        self.config = config
        """The settings: ``type(model)(**config_dict(model.config))`` rebuilds the model (checkpoints)."""
        self.channels, self.levels = config.channels, config.levels

    def _checked(self, x, where: str, labels=None):
        """``x`` as an int64 array (N, C, H, W) with H and W divisible by 4, or a one-line error."""
        where = f"{type(self).__name__}.{where}"
        if labels is not None:
            raise UserError(f"{where}: autoencoders are unconditional; pass no labels")
        x = check_images(x, where, channels=self.channels, levels=self.levels)
        height, width = x.shape[2:]
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise UserError(f"{where}: x must have height and width divisible by {DOWNSAMPLING} "
                             f"(the encoder halves them twice), got {height}x{width}")
        return x

    def _checked_grid(self, z, where: str, depth: int, name: str):
        """Latents ``z`` as a float32 Tensor (N, depth, h, w) of finite values, or a one-line error."""
        where = f"{type(self).__name__}.{where}"
        data = z.data if isinstance(z, Tensor) else z
        if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
            data = np.asarray(data)
        if data.ndim != 4 or data.shape[1] != depth or data.shape[0] == 0 or data.dtype.kind not in "iuf":
            raise UserError(f"{where}: {name} must be a non-empty float array of shape (N, {depth}, h, w), "
                             f"got shape {tuple(data.shape)} and dtype {data.dtype}")
        if not bool(backend.get_array_module(data).isfinite(data).all()):
            raise UserError(f"{where}: {name} must hold finite values, got NaN or infinity")
        return Tensor(data.astype(np.float32))

    def _inputs(self, x) -> Tensor:
        """Integer levels -> floats in [-1, 1], what the encoder reads."""
        return Tensor((x.astype(np.float32) * (2.0 / (self.levels - 1)) - 1.0).astype(np.float32))

    def _intensities(self, x) -> Tensor:
        """Integer levels -> floats in [0, 1], the decoder's Bernoulli targets."""
        return Tensor((x.astype(np.float32) * (1.0 / (self.levels - 1))).astype(np.float32))

    def reconstruction_nll(self, logits, x) -> Tensor:
        """-log p(x|z) per image, (N,): Bernoulli cross-entropy of the logits against x / (levels - 1), summed."""
        nll = F.binary_cross_entropy_with_logits(logits, self._intensities(x), reduction="none")
        return nll.reshape(nll.shape[0], -1).sum(axis=1)

    def to_levels(self, logits):
        """The decoder's mean sigmoid(logits), as the nearest integer levels (an int64 array)."""
        means = F.sigmoid(logits.detach()).data
        xp = backend.get_array_module(means)
        return xp.rint(means * (self.levels - 1)).astype(np.int64)


# ----------------------------------------------------------------------------
# The VAE


@dataclass(frozen=True)
class VAEConfig:
    """The settings of a :class:`VAE`: ``channels`` colours of ``levels`` grey
    levels; ``hidden`` feature maps at full size (2 * hidden below), ``blocks``
    residual blocks per size, GroupNorm with up to ``groups`` groups;
    ``latent_channels`` latent maps at a quarter of the size, and the KL weight ``beta``."""

    channels: int = 1
    levels: int = 256
    hidden: int = 32
    blocks: int = 1
    groups: int = 8
    latent_channels: int = 4
    beta: float = 1e-3

    def __post_init__(self):
        check_integers(self, channels=1, levels=2, hidden=1, blocks=0, groups=1, latent_channels=1)
        check_number(self.beta, "VAEConfig", "beta", low=0.0)


def kl_to_standard_normal(mean, logvar) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per image, (N,), in nats (K&W eq. 10, appendix B)."""
    kl = 0.5 * (mean * mean + logvar.exp() - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).sum(axis=1)


def sample_gaussian(mean, logvar) -> Tensor:
    """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I): differentiable in both (K&W sec. 2.4)."""
    return mean + (0.5 * logvar).exp() * randn(*mean.shape, device=mean.device)


class VAE(ImageAutoencoder):
    """A convolutional VAE: images (N, C, H, W) <-> latents (N, latent_channels, H/4, W/4).

    ``VAE(latent_channels=4)`` and ``VAE(VAEConfig(latent_channels=4))`` build the same model.
    """

    Config = VAEConfig

    def __init__(self, config: VAEConfig | None = None, **settings):
        config = configure(VAEConfig, config, **settings)
        super().__init__(config)
        self.latent_channels, self.beta = config.latent_channels, config.beta
        self.encoder = Encoder(config.channels, config.hidden, config.blocks, config.groups,
                               2 * config.latent_channels)
        self.decoder = Decoder(config.latent_channels, config.hidden, config.blocks, config.groups,
                               config.channels)
        self.register_buffer("latent_scale", np.array(1.0, dtype=np.float32))

    def _posterior(self, x):
        """(mean, logvar) of q(z|x) for checked integer images."""
        h = self.encoder(self._inputs(x))
        c = self.latent_channels
        return h[:, :c], h[:, c:].clip(*LOGVAR_RANGE)

    def encode(self, x):
        """q(z|x) for integer images: (mean, logvar), each (N, latent_channels, H/4, W/4) Tensors."""
        return self._posterior(self._checked(x, "encode"))

    def decode_logits(self, z) -> Tensor:
        """The decoder's logits (N, C, 4h, 4w) for latents z (N, latent_channels, h, w)."""
        return self.decoder(self._checked_grid(z, "decode_logits", self.latent_channels, "z"))

    def decode(self, z):
        """Latents (N, latent_channels, h, w) -> images as integer levels (N, C, 4h, 4w), the decoder's mean."""
        z = self._checked_grid(z, "decode", self.latent_channels, "z")
        with self.evaluating():
            return self.to_levels(self.decoder(z))

    def loss_terms(self, x, labels=None):
        """(-log p(x|z), KL(q(z|x) || p(z))) per image, each (N,) in nats, one posterior sample z."""
        x = self._checked(x, "loss_terms", labels)
        mean, logvar = self._posterior(x)
        reconstruction = self.reconstruction_nll(self.decoder(sample_gaussian(mean, logvar)), x)
        return reconstruction, kl_to_standard_normal(mean, logvar)

    def loss(self, x, labels=None):
        """-log p(x|z) + beta * KL, nats per image, batch mean (beta = 1: the negative ELBO, eq. 10)."""
        reconstruction, kl = self.loss_terms(x, labels)
        return (reconstruction + self.beta * kl).mean()

    def reconstruct(self, x):
        """Decode the posterior mean of each image: integer levels, the shape of ``x``."""
        x = self._checked(x, "reconstruct")
        with self.evaluating():
            return self.to_levels(self.decoder(self._posterior(x)[0]))

    def fit_latent_scale(self, images, batch_size: int = 256, seed: int = 0) -> float:
        """Set ``latent_scale`` to 1 / std of posterior samples of ``images`` and return it.

        Stable Diffusion multiplies its latents by this factor (0.18215 there)
        so that the second stage sees data of unit variance whatever the
        autoencoder's scale. The std is over every latent element of every
        image, the samples drawn under ``seed`` (minigen's streams are left as
        they were). The buffer is saved with the model's state.
        """
        x = self._checked(images, "fit_latent_scale")
        count, total, squares = 0, 0.0, 0.0
        with self.evaluating(), backend.seeded(seed):
            for start in range(0, len(x), batch_size):
                mean, logvar = self._posterior(x[start:start + batch_size])
                z = sample_gaussian(mean, logvar).data.astype(np.float64)
                count, total, squares = count + z.size, total + float(z.sum()), squares + float((z * z).sum())
        std = math.sqrt(max(squares / count - (total / count) ** 2, 0.0))
        if not std > 0:
            raise UserError("VAE.fit_latent_scale: the latents do not vary (std 0); no scale makes them unit")
        xp = backend.get_array_module(self.latent_scale)
        self.latent_scale = xp.asarray(1.0 / std, dtype=np.float32)
        return float(self.latent_scale)

    def to_latents(self, x, seed: int | None = None) -> Tensor:
        """latent_scale * a posterior sample: the unit-scale latents a second stage learns (no graph)."""
        x = self._checked(x, "to_latents")
        with self.evaluating(), backend.seeded(seed) if seed is not None else nullcontext():
            return sample_gaussian(*self._posterior(x)) * Tensor(self.latent_scale)

    def from_latents(self, z):
        """Images as integer levels from unit-scale latents: ``decode(z / latent_scale)``."""
        z = self._checked_grid(z, "from_latents", self.latent_channels, "z")
        return self.decode(z / Tensor(self.latent_scale))


# ----------------------------------------------------------------------------
# The VQ-VAE: nearest codes, the straight-through estimator, the EMA codebook


@dataclass(frozen=True)
class VQVAEConfig:
    """The settings of a :class:`VQVAE`: the networks as in :class:`VAEConfig`;
    a codebook of ``codebook_size`` vectors of ``embedding_dim`` numbers; the
    commitment weight ``beta``; the codebook's moving averages with ``decay``
    and Laplace smoothing ``epsilon``; and ``restart_after`` training steps
    without use before a code is restarted (0: never)."""

    channels: int = 1
    levels: int = 256
    hidden: int = 32
    blocks: int = 1
    groups: int = 8
    embedding_dim: int = 16
    codebook_size: int = 64
    beta: float = 0.25
    decay: float = 0.99
    epsilon: float = 1e-5
    restart_after: int = 100

    def __post_init__(self):
        check_integers(self, channels=1, levels=2, hidden=1, blocks=0, groups=1, embedding_dim=1,
                       codebook_size=2, restart_after=0)
        check_number(self.beta, "VQVAEConfig", "beta", low=0.0)
        check_number(self.decay, "VQVAEConfig", "decay", 0.0, 1.0)
        if self.decay == 1.0:
            raise UserError("VQVAEConfig: decay must be below 1, got 1.0 (the codebook would never move)")
        check_number(self.epsilon, "VQVAEConfig", "epsilon", low=0.0, open_low=True)


def grid_to_vectors(z):
    """(N, D, h, w) array -> (N*h*w, D): one row per cell, cells in raster order, image by image."""
    n, d, h, w = z.shape
    return z.transpose(0, 2, 3, 1).reshape(n * h * w, d)


def vectors_to_grid(vectors, n: int, h: int, w: int):
    """The inverse of :func:`grid_to_vectors`: (N*h*w, D) -> (N, D, h, w)."""
    return vectors.reshape(n, h, w, -1).transpose(0, 3, 1, 2)


def nearest_codes(vectors, codebook):
    """The index of the nearest codebook row to each vector (eq. 1), (M,) int64.

    ||v - e||^2 = ||v||^2 - 2 v.e + ||e||^2, one matrix product for all pairs;
    ties go to the lower index.
    """
    distances = (vectors * vectors).sum(axis=1, keepdims=True) - 2 * vectors @ codebook.T \
        + (codebook * codebook).sum(axis=1)
    return distances.argmin(axis=1).astype(np.int64)


def straight_through(z_e: Tensor, z_q) -> Tensor:
    """z_e + sg(z_q - z_e): the value of z_q, the gradient of z_e (van den Oord et al. sec. 3.2).

    The decoder's gradient at the output arrives at z_e unchanged, as if
    quantisation were the identity.
    """
    return z_e + Tensor(z_q - z_e.data)


def code_counts(codes, codebook_size: int):
    """How often each code occurs among ``codes`` (any shape): (K,) int64."""
    xp = backend.get_array_module(codes)
    return (codes.reshape(-1, 1) == xp.arange(codebook_size)).sum(axis=0).astype(np.int64)


def ema_codebook_update(cluster_size, embedding_sum, vectors, codes, decay: float, epsilon: float):
    """One EMA step of the codebook (appendix A.1); returns new (cluster_size, embedding_sum, codebook).

        N_i <- decay * N_i + (1 - decay) * n_i           n_i: how many vectors chose code i
        m_i <- decay * m_i + (1 - decay) * sum_j z_ij    the sum of those vectors
        e_i  = m_i / N~_i,   N~_i = (N_i + epsilon) / (sum_k N_k + K epsilon) * sum_k N_k

    N~ is N with Laplace smoothing (the paper's reference code, Sonnet): a
    code whose N_i decays toward 0 never divides by 0. Pure array work on
    ``vectors`` (M, D) and their ``codes`` (M,); nothing here has a gradient.
    """
    xp = backend.get_array_module(vectors)
    one_hot = (codes.reshape(-1, 1) == xp.arange(len(cluster_size))).astype(vectors.dtype)
    cluster_size = decay * cluster_size + (1 - decay) * one_hot.sum(axis=0)
    embedding_sum = decay * embedding_sum + (1 - decay) * (one_hot.T @ vectors)
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + len(cluster_size) * epsilon) * total
    return cluster_size, embedding_sum, embedding_sum / smoothed[:, None]


def perplexity(counts) -> float:
    """exp(entropy of the code frequencies): K when all K codes are used equally, 1 for one code.

    The effective number of codes in use; ``counts`` from :meth:`VQVAE.codebook_usage`.
    """
    counts = np.asarray(backend.to_device(counts, "cpu"), dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def rate_bits(cells: int, codebook_size: int) -> float:
    """Bits per image of a grid of ``cells`` tokens from ``codebook_size`` codes: cells * log2(K)."""
    return cells * math.log2(codebook_size)


class VQVAE(ImageAutoencoder):
    """A VQ-VAE: images (N, C, H, W) <-> tokens (N, H/4, W/4) indexing a codebook of vectors.

    The codebook and its moving averages are buffers: saved and moved with the
    model, never touched by the optimizer. ``VQVAE(codebook_size=64)`` and
    ``VQVAE(VQVAEConfig(codebook_size=64))`` build the same model.
    """

    Config = VQVAEConfig

    def __init__(self, config: VQVAEConfig | None = None, **settings):
        config = configure(VQVAEConfig, config, **settings)
        super().__init__(config)
        self.codebook_size, self.embedding_dim, self.beta = config.codebook_size, config.embedding_dim, config.beta
        self.encoder = Encoder(config.channels, config.hidden, config.blocks, config.groups, config.embedding_dim)
        self.decoder = Decoder(config.embedding_dim, config.hidden, config.blocks, config.groups, config.channels)
        shape = (config.codebook_size, config.embedding_dim)
        codebook = backend.generator("cpu").standard_normal(shape).astype(np.float32)
        self.register_buffer("codebook", codebook)
        self.register_buffer("embedding_sum", codebook.copy())  # m_i; e_i = m_i / N_i at the start
        self.register_buffer("cluster_size", np.ones(config.codebook_size, dtype=np.float32))  # N_i
        self.register_buffer("unused_steps", np.zeros(config.codebook_size, dtype=np.int64))

    def quantize(self, z_e: Tensor):
        """Each cell's nearest code (eqs. 1-2): (tokens (N, h, w) int64, z_q (N, D, h, w) array)."""
        n, _, h, w = z_e.shape
        tokens = nearest_codes(grid_to_vectors(z_e.data), self.codebook)
        return tokens.reshape(n, h, w), vectors_to_grid(self.codebook[tokens], n, h, w)

    def loss_terms(self, x, labels=None):
        """(-log p(x|z_q), ||z_e - sg(e)||^2) per image, each (N,): the reconstruction
        through the straight-through estimator and the commitment term (eq. 3).

        In training mode each call also moves the codebook one EMA step
        (:meth:`update_codebook`) toward this batch's encoder outputs, after
        the terms are computed with the codebook as it was: call it (or
        :meth:`loss`) once per training step. In eval mode the codebook is left alone.
        """
        x = self._checked(x, "loss", labels)
        z_e = self.encoder(self._inputs(x))
        tokens, z_q = self.quantize(z_e)
        reconstruction = self.reconstruction_nll(self.decoder(straight_through(z_e, z_q)), x)
        error = z_e - Tensor(z_q)
        commitment = (error * error).reshape(len(x), -1).sum(axis=1)
        if self.training:
            self.update_codebook(z_e.data, tokens)
        return reconstruction, commitment

    def loss(self, x, labels=None):
        """-log p(x|z_q) + beta * ||z_e - sg(e)||^2, nats per image, batch mean (eq. 3 less its
        codebook term, which the EMA update replaces); see :meth:`loss_terms`."""
        reconstruction, commitment = self.loss_terms(x, labels)
        return (reconstruction + self.beta * commitment).mean()

    def update_codebook(self, z_e, tokens) -> None:
        """One EMA step of the codebook toward the encoder outputs ``z_e`` (N, D, h, w) that chose
        ``tokens`` (N, h, w), then the restart of dead codes (see :meth:`restart_dead_codes`)."""
        vectors, codes = grid_to_vectors(z_e), tokens.reshape(-1)
        config = self.config
        self.cluster_size, self.embedding_sum, self.codebook = ema_codebook_update(
            self.cluster_size, self.embedding_sum, vectors, codes, config.decay, config.epsilon)
        self.restart_dead_codes(vectors, code_counts(codes, self.codebook_size))

    def restart_dead_codes(self, vectors, counts) -> None:
        """Count the steps each code went unused; restart those unused ``restart_after`` steps in a row.

        A restarted code becomes a random one of this batch's encoder outputs
        ``vectors`` (M, D), distinct ones while there are enough, with
        m_i = that vector and N_i = 1 so that the next EMA step starts from it.
        """
        xp = backend.get_array_module(vectors)
        self.unused_steps = xp.where(counts > 0, 0, self.unused_steps + 1)
        if not self.config.restart_after:
            return
        dead = np.flatnonzero(backend.to_device(self.unused_steps, "cpu") >= self.config.restart_after)
        if len(dead) == 0:
            return
        picks = backend.generator("cpu").choice(len(vectors), size=len(dead), replace=len(dead) > len(vectors))
        dead, chosen = xp.asarray(dead), vectors[xp.asarray(picks)]
        self.codebook[dead] = chosen
        self.embedding_sum[dead] = chosen
        self.cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0

    def encode_tokens(self, x):
        """Integer images (N, C, H, W) -> tokens (N, H/4, W/4), int64 codebook indices."""
        x = self._checked(x, "encode_tokens")
        with self.evaluating():
            return self.quantize(self.encoder(self._inputs(x)))[0]

    def _checked_tokens(self, tokens, where: str):
        """``tokens`` as an int64 array (N, h, w) of codes 0..K-1 on the codebook's device, or a one-line error."""
        where = f"VQVAE.{where}"
        data = tokens.data if isinstance(tokens, Tensor) else tokens
        if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
            data = np.asarray(data)
        if data.ndim != 3 or data.shape[0] == 0 or data.dtype.kind not in "iu":
            raise UserError(f"{where}: tokens must be a non-empty integer array of shape (N, h, w), "
                             f"got shape {tuple(data.shape)} and dtype {data.dtype}")
        backend.check_same_device([data, self.codebook], where)
        if data.min().item() < 0 or data.max().item() >= self.codebook_size:
            raise UserError(f"{where}: tokens must be codes in 0..{self.codebook_size - 1}, "
                             f"got values from {data.min().item()} to {data.max().item()}")
        return data.astype(np.int64)

    def decode_tokens(self, tokens):
        """Tokens (N, h, w) -> images as integer levels (N, C, 4h, 4w), the decoder's mean."""
        tokens = self._checked_tokens(tokens, "decode_tokens")
        n, h, w = tokens.shape
        z_q = vectors_to_grid(self.codebook[tokens.reshape(-1)], n, h, w)
        with self.evaluating():
            return self.to_levels(self.decoder(Tensor(z_q)))

    def reconstruct(self, x):
        """Encode, quantise, decode: integer levels, the shape of ``x``."""
        x = self._checked(x, "reconstruct")
        with self.evaluating():
            _, z_q = self.quantize(self.encoder(self._inputs(x)))
            return self.to_levels(self.decoder(Tensor(z_q)))

    def codebook_usage(self, tokens):
        """How often each code occurs in ``tokens``: (K,) int64 (see :func:`perplexity`)."""
        return code_counts(self._checked_tokens(tokens, "codebook_usage"), self.codebook_size)

    def rate(self, height: int, width: int) -> float:
        """Bits per image of ``height`` x ``width`` at this codebook: (H/4)(W/4) log2(K)."""
        return rate_bits((height // DOWNSAMPLING) * (width // DOWNSAMPLING), self.codebook_size)

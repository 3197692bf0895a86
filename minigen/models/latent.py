"""Two-stage generators: a second model learns the small latent grid of a frozen autoencoder.

An autoencoder of :mod:`minigen.models.autoencoder` turns a 28x28 image into a
7x7 grid (every latent cell covers 4x4 pixels). Training a generative model on
that grid instead of the pixels is the idea behind two families of large image
models, here in miniature:

**Latent diffusion** (:class:`LatentDiffusion`; Rombach et al. 2022, "High-
Resolution Image Synthesis with Latent Diffusion Models", sec. 3-4: Stable
Diffusion). A DDPM learns the continuous latents of a frozen :class:`VAE`,

    z = latent_scale * a sample of q(z|x),      latent_scale = 1 / std(z over the data)

(sec. 4.3.2 and appendix G: the latents are rescaled to unit variance by one
factor estimated on data, Stable Diffusion's ``scale_factor``, which
:meth:`VAE.fit_latent_scale` sets), so that the diffusion sees data of unit
variance, as the Gaussian process of Ho et al. (2020) assumes: its schedule
is built for a signal of scale about 1 (the pixel DDPM scales images to
[-1, 1]). A sampled z is decoded by the VAE: images = decode(z / latent_scale).

**A prior over codes** (:class:`TokenPrior`; van den Oord et al. 2017, "Neural
Discrete Representation Learning", sec. 3.3 "Prior" and 4.2; VQ-VAE-2,
Razavi et al. 2019, whose prior is PixelSNAIL-like; DALL-E, Ramesh et al.
2021, puts a transformer over its tokens). An autoregressive model (PixelSNAIL
or a Gated PixelCNN) learns p(tokens) over the frozen :class:`VQVAE`'s integer token
grid, exactly, by the chain rule; a sampled grid is decoded by the VQ-VAE.

**The first stage stays frozen.** Each two-stage model keeps its *own copy*
of the autoencoder as the submodule ``autoencoder`` (so training the original
further cannot change the data this model learned). The copy is:

* excluded from :meth:`~TwoStageModel.named_parameters` and so from
  ``parameters()``: the optimizer, gradient clipping and EMA see only the
  second stage;
* built with ``requires_grad=False`` and only ever run inside
  ``evaluating()`` (no graph), so no gradient can reach it;
* kept in eval mode whatever ``train()`` says (a VQ-VAE in training mode
  would move its codebook);
* still in ``state_dict()`` (``autoencoder.*`` entries), moved by ``to()``,
  and its settings are in ``config.autoencoder_settings``: a checkpoint holds
  the whole two-stage model, and ``type(model)(**config_dict(model.config))``
  followed by ``load_state_dict`` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.creation import randint, randn, tensor
from ..engine.ops import where
from ..errors import UserError
from .autoencoder import DOWNSAMPLING, VAE, VQVAE
from .config import config_dict, configure
from .ddpm import DDIM_STEPS, DDPM, DDPMConfig
from .diffusion import q_sample, v_target
from .inputs import check_count, check_images, check_labels
from .pixelcnn import GatedPixelCNN, PixelCNN
from .pixelsnail import PixelSNAIL

DATA_SETTINGS = ("channels", "levels", "image_size", "num_classes")  # set by the data and the autoencoder
LATENT_CHANNEL_MULTS = (1,)  # one U-Net level: a 7x7 grid cannot be halved (see LatentDiffusion)
PRIORS = {"pixelsnail": PixelSNAIL, "gated-pixelcnn": GatedPixelCNN, "pixelcnn": PixelCNN}


# ----------------------------------------------------------------------------
# Settings: the data, the frozen autoencoder's settings, the second stage's


def check_data_settings(config) -> None:
    """One-line errors for the data settings every two-stage config shares."""
    name = type(config).__name__
    for setting, minimum in (("channels", 1), ("levels", 2), ("image_size", DOWNSAMPLING), ("num_classes", 1)):
        value = getattr(config, setting)
        if value is None and setting != "image_size":
            continue  # channels and levels default to the autoencoder's; num_classes None is unconditional
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise UserError(f"{name}: {setting} must be an integer >= {minimum}, got {value!r}")
    if config.image_size % DOWNSAMPLING:
        raise UserError(f"{name}: image_size ({config.image_size}) must be divisible by {DOWNSAMPLING}: "
                        f"the autoencoder's latent grid is image_size / {DOWNSAMPLING}")


def check_nested_settings(config, name: str, second_stage: bool = True) -> None:
    """A nested settings dict must be a dict; a second stage's leaves the data settings to the data."""
    settings = getattr(config, name)
    if not isinstance(settings, dict):
        raise UserError(f"{type(config).__name__}: {name} must be a dict of settings, got {type(settings).__name__}")
    taken = sorted(set(settings) & set(DATA_SETTINGS)) if second_stage else []
    if taken:
        raise UserError(f"{type(config).__name__}: {name} cannot set {', '.join(taken)}; the data and the "
                        f"autoencoder decide them (give them to {type(config).__name__} itself)")
    object.__setattr__(config, name, dict(settings))  # a copy: the caller's dict can change freely


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """The settings of a :class:`LatentDiffusion`: images of ``channels`` colours,
    ``levels`` grey levels and ``image_size`` pixels a side (channels and levels
    None: the VAE's); ``num_classes`` classes (None: unconditional); the VAE's
    settings ``autoencoder_settings`` (filled in from the VAE given); and
    ``diffusion_settings``, the :class:`DDPMConfig` settings of the latent DDPM
    (T, schedule, prediction, base_channels, channel_mults (default (1,)), ...)."""

    channels: int | None = None
    levels: int | None = None
    image_size: int = 28
    num_classes: int | None = None
    autoencoder_settings: dict = field(default_factory=dict)
    diffusion_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        check_data_settings(self)
        check_nested_settings(self, "autoencoder_settings", second_stage=False)
        check_nested_settings(self, "diffusion_settings")


@dataclass(frozen=True)
class TokenPriorConfig:
    """The settings of a :class:`TokenPrior`: the data settings as in
    :class:`LatentDiffusionConfig`; the VQ-VAE's settings ``autoencoder_settings``;
    the prior's family ``prior_family`` (a key of :data:`PRIORS`) and its
    settings ``prior_settings`` (hidden, blocks, ...; never channels, levels or classes)."""

    channels: int | None = None
    levels: int | None = None
    image_size: int = 28
    num_classes: int | None = None
    autoencoder_settings: dict = field(default_factory=dict)
    prior_family: str = "pixelsnail"
    prior_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        check_data_settings(self)
        check_nested_settings(self, "autoencoder_settings", second_stage=False)
        check_nested_settings(self, "prior_settings")
        if self.prior_family not in PRIORS:
            raise UserError(f"TokenPriorConfig: prior_family must be one of {', '.join(PRIORS)}, "
                            f"got {self.prior_family!r}")


# ----------------------------------------------------------------------------
# What both share: a frozen autoencoder


def freeze(autoencoder):
    """``autoencoder`` with no parameter requiring a gradient, in eval mode (returned)."""
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    return autoencoder.eval()


def frozen_copy(autoencoder, kind: type, owner: str):
    """A frozen copy of ``autoencoder`` (a ``kind``: VAE or VQVAE) with its weights and
    buffers (the latent scale, the codebook), or a one-line error for the wrong kind."""
    if not isinstance(autoencoder, kind):
        other = {VAE: "a VQVAE's tokens go to TokenPrior", VQVAE: "a VAE's latents go to LatentDiffusion"}[kind]
        raise UserError(f"{owner}: the autoencoder must be a {kind.__name__}, got {type(autoencoder).__name__} "
                        f"({other})")
    copy = kind(autoencoder.config)
    copy.load_state_dict(autoencoder.state_dict())
    return freeze(copy)


def adopt_autoencoder(config, autoencoder, kind: type, owner: str):
    """The frozen autoencoder and ``config`` completed from it: (autoencoder, config).

    Without an ``autoencoder`` one is built from ``config.autoencoder_settings``
    (a model about to load a checkpoint); with one, its settings fill
    ``autoencoder_settings`` (those given must agree) and ``channels`` and
    ``levels`` (which, if given, must match the autoencoder's images).
    """
    if autoencoder is None:
        autoencoder = freeze(kind(**config.autoencoder_settings))
    else:
        autoencoder = frozen_copy(autoencoder, kind, owner)
        own = config_dict(autoencoder.config)
        differ = {name: value for name, value in config.autoencoder_settings.items() if own.get(name) != value}
        if differ:
            raise UserError(f"{owner}: autoencoder_settings {differ} differ from the {kind.__name__} given "
                            f"({own}); pass the autoencoder alone")
    for name in ("channels", "levels"):
        wanted, own = getattr(config, name), getattr(autoencoder, name)
        if wanted is not None and wanted != own:
            raise UserError(f"{owner}: {name}={wanted}, but the {kind.__name__} was built for images with "
                            f"{name}={own}; train the second stage on the autoencoder's kind of images")
    config = dataclasses.replace(config, channels=autoencoder.channels, levels=autoencoder.levels,
                                 autoencoder_settings=config_dict(autoencoder.config))
    return autoencoder, config


class TwoStageModel(nn.Module):
    """A second-stage model on top of the frozen submodule ``autoencoder`` (see the module docstring)."""

    FROZEN = "autoencoder."

    def _adopt(self, config, autoencoder, kind: type):
        """Set ``self.autoencoder`` (frozen) and ``self.config``; return the completed config."""
        self.autoencoder, config = adopt_autoencoder(config, autoencoder, kind, type(self).__name__)
        self.config = config
        """The settings: ``type(model)(**config_dict(model.config))`` rebuilds the model (checkpoints)."""
        self.channels, self.levels, self.image_size = config.channels, config.levels, config.image_size
        self.num_classes = config.num_classes
        self.latent_size = config.image_size // DOWNSAMPLING
        return config

    def named_parameters(self):
        """The second stage's parameters only: the frozen autoencoder's are not trained."""
        return ((name, p) for name, p in super().named_parameters() if not name.startswith(self.FROZEN))

    def to(self, device: str) -> "TwoStageModel":
        """Move the second stage and the frozen autoencoder (whose parameters ``parameters()`` omits)."""
        super().to(device)
        self.autoencoder.to(device)
        return self

    def train(self, mode: bool = True) -> "TwoStageModel":
        """Training mode for the second stage; the autoencoder stays in eval mode, frozen."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def _checked(self, x, where: str):
        """Images as an int64 array (N, C, image_size, image_size), or a one-line error."""
        return check_images(x, f"{type(self).__name__}.{where}", channels=self.channels, levels=self.levels,
                            image_size=self.image_size)


# ----------------------------------------------------------------------------
# Latent diffusion


def drop_labels(labels, p_uncond: float, null_class: int, device: str):
    """Each label replaced by ``null_class`` with probability ``p_uncond`` (classifier-free
    guidance's training, Ho & Salimans 2022, alg. 1), from minigen's seeded stream as DDPM.loss draws."""
    if labels is None:
        return None
    drop = backend.generator(device).random(labels.shape[0]) < p_uncond
    return where(drop, null_class, labels)


def denoising_loss(ddpm: DDPM, x0: Tensor, labels=None) -> Tensor:
    """L_simple (Ho et al. 2020, eq. 14) of ``ddpm`` on float data ``x0``: the body of
    :meth:`DDPM.loss` after its scaling of integer levels, which latents skip.

    ``labels``: a checked (N,) Tensor or None; each is dropped to "no class"
    with probability p_uncond, as the pixel DDPM does for guidance.
    """
    n, device = x0.shape[0], x0.device
    t = randint(0, ddpm.schedule.T, (n,), device=device)
    noise = randn(*x0.shape, device=device)
    xt = q_sample(ddpm.schedule, x0, t, noise)
    target = {"eps": noise, "x0": x0, "v": v_target(ddpm.schedule, x0, t, noise)}[ddpm.prediction]
    labels = drop_labels(labels, ddpm.p_uncond, ddpm.num_classes, device)
    return F.mse_loss(ddpm.net(xt, t, labels), target)


class LatentDiffusion(TwoStageModel):
    """A DDPM on a frozen VAE's scaled latents (Rombach et al. 2022): Stable Diffusion in miniature.

    ``LatentDiffusion(autoencoder=vae, image_size=28, diffusion_settings={"T": 200})``;
    fit the VAE's scale first (``vae.fit_latent_scale(images)``): the latents
    the DDPM learns are ``vae.to_latents(x)``, which multiplies by it.

    **How the DDPM is reused.** The submodule ``diffusion`` is an ordinary
    :class:`DDPM` built for the latent tensor: ``channels`` = the VAE's
    latent channels, ``image_size`` = image_size / 4 (7 for 28x28 images).
    Its U-Net, schedule, guidance and samplers work on any float tensor; only
    its doors are for integer images: ``DDPM.loss`` checks levels and scales
    them to [-1, 1]. So training calls :func:`denoising_loss`, DDPM.loss's
    body on float latents, and sampling calls ``DDPM.generate`` (which
    returns the float x_0, here latents) with ``clip=False``: clipping each
    step's x0 estimate to [-1, 1] is right for pixels, wrong for latents of
    unit std. The DDPM's own ``levels``, ``sample`` and ``nll_bound`` (its
    discretised decoder is for pixel levels) are not used.

    **A 7x7 grid.** Every U-Net level but the last halves the size, and 7 is
    odd, so the latent U-Net has one level by default (``channel_mults=(1,)``):
    no down- or upsampling. Its 3x3 convolutions (conv in, 2 per ResBlock,
    conv out: 10 with one ResBlock per level) see 21x21 cells, more than the
    whole grid, so every cell's prediction still reads every other cell. We
    do not pad to 8x8: the padded row and column would be data the model must
    learn to generate and the decoder must ignore. Images of 32x32 (an 8x8
    grid) may use ``channel_mults=(1, 2)``.
    """

    Config = LatentDiffusionConfig

    def __init__(self, config: LatentDiffusionConfig | None = None, *, autoencoder: VAE | None = None,
                 **settings):
        super().__init__()
        config = self._adopt(configure(LatentDiffusionConfig, config, **settings), autoencoder, VAE)
        self.diffusion = DDPM(self.diffusion_config())

    def diffusion_config(self) -> DDPMConfig:
        """The latent DDPM's config: the latent grid's shape, the classes, then ``diffusion_settings``."""
        settings = {"channel_mults": LATENT_CHANNEL_MULTS, **self.config.diffusion_settings}
        mults = tuple(settings["channel_mults"])
        factor = 2 ** (len(mults) - 1)
        if self.latent_size % factor:
            raise UserError(f"LatentDiffusion: the latent grid is {self.latent_size}x{self.latent_size} "
                            f"(image_size {self.image_size} / {DOWNSAMPLING}), which channel_mults={mults} "
                            f"cannot halve {len(mults) - 1} time(s); use channel_mults=(1,)")
        return configure(DDPMConfig, channels=self.autoencoder.latent_channels, levels=self.levels,
                         image_size=self.latent_size, num_classes=self.num_classes, **settings)

    # -- the data: scaled latents ------------------------------------------------
    def latents(self, x, seed: int | None = None) -> Tensor:
        """The float data the DDPM learns: latent_scale * a posterior sample of each image,
        (N, latent_channels, image_size/4, image_size/4), no graph (the VAE is frozen)."""
        return self.autoencoder.to_latents(self._checked(x, "latents"), seed)

    def _checked_labels(self, labels, n: int, where: str):
        """Labels as a checked (n,) int64 array, or None (a conditional model then samples unconditionally)."""
        where = f"LatentDiffusion.{where}"
        if labels is None:
            return None
        if self.num_classes is None:
            raise UserError(f"{where}: this model was built without classes (num_classes=None); pass no labels")
        return check_labels(labels, n, self.num_classes, where)

    # -- training ----------------------------------------------------------------
    def loss(self, x, labels=None) -> Tensor:
        """L_simple on the latents of integer images ``x`` (N, C, H, W); gradients reach the DDPM only."""
        if labels is None and self.num_classes is not None:
            raise UserError(f"LatentDiffusion.loss: this model is class-conditional "
                            f"(num_classes={self.num_classes}); pass labels")
        z0 = self.autoencoder.to_latents(self._checked(x, "loss"))
        labels = self._checked_labels(labels, z0.shape[0], "loss")
        return denoising_loss(self.diffusion, z0, None if labels is None else tensor(labels, device=z0.device))

    # -- sampling ----------------------------------------------------------------
    def generate_latents(self, n: int, labels=None, *, sampler: str = "ddim", steps: int | None = None,
                         eta: float = 0.0, guidance: float = 1.0, seed: int = 0, device: str | None = None,
                         progress: bool = False, on_step=None) -> Tensor:
        """``n`` latents (n, latent_channels, s, s) from the DDPM's reverse chain, unclipped.

        The samplers and their settings are :class:`~minigen.models.ddpm.SamplerOptions`'
        (DDIM, Song et al. 2021, by default, with DDIM_STEPS steps); ``guidance`` w
        mixes eps = eps_uncond + w (eps_cond - eps_uncond) (Ho & Salimans 2022, eq. 6).
        """
        n = check_count(n, "LatentDiffusion.generate")
        labels = self._checked_labels(labels, n, "generate")
        steps = min(DDIM_STEPS, self.diffusion.schedule.T) if steps is None and sampler == "ddim" else steps
        return self.diffusion.generate(n, labels, sampler=sampler, steps=steps, eta=eta, guidance=guidance,
                                       seed=seed, device=device, progress=progress, clip=False, on_step=on_step)

    def sample(self, n: int, labels=None, **options):
        """``n`` images as integer levels (n, C, H, W): :meth:`generate_latents` decoded by the VAE."""
        return self.autoencoder.from_latents(self.generate_latents(n, labels, **options))

    generate = sample  # the decoded images, as the other two-stage model's generate


# ----------------------------------------------------------------------------
# A prior over VQ-VAE tokens


class TokenPrior(TwoStageModel):
    """An autoregressive prior over a frozen VQ-VAE's token grid (van den Oord et al. 2017, sec. 3.3).

    ``TokenPrior(autoencoder=vqvae, image_size=28, prior_settings={"hidden": 32})``.
    The submodule ``prior`` is a PixelSNAIL (or a Gated PixelCNN / PixelCNN,
    ``prior_family``) over one-channel "images" of ``codebook_size`` levels:
    the (N, 1, h, w) grid of token ids, in raster order.

    **What its NLL measures.** :meth:`loss` is -log p(tokens) in nats per image,
    exact by the chain rule, of the *code* of the image, not of its pixels:
    the VQ-VAE's decoder is deterministic, so this is no likelihood of x. It is
    the prior's side of the VQ-VAE's rate: the uniform prior of the VQ-VAE's
    training spends h w ln K nats per image (``VQVAE.rate``, there in bits), and
    whatever the prior learns below that is structure in the code. Compare it
    with that rate, never with a pixel model's NLL.

    **Token ids as ordinal inputs.** The prior's first layer reads each id k as
    the number 2k / (K - 1) - 1 in [-1, 1], as it reads grey levels, although
    codes have no order: code 5 is not "between" codes 4 and 6. The likelihood
    stays exact (the outputs are a K-way softmax per position, whatever the
    inputs) and the model can still tell every code apart (a distinct number
    each, separated by the nonlinear layers above); what is lost is
    efficiency: neighbouring ids start out with similar features, so the first
    layers must learn to undo an arbitrary order. With K = 64 codes and a few
    hundred feature maps this costs little, and the prior is PixelSNAIL as it
    stands (same causality proofs, same cached sampler). The papers' priors
    embed each code (a learned vector per id), which needs a first layer that
    takes a one-hot or embedded input, a change to the prior networks.
    """

    Config = TokenPriorConfig

    def __init__(self, config: TokenPriorConfig | None = None, *, autoencoder: VQVAE | None = None, **settings):
        super().__init__()
        config = self._adopt(configure(TokenPriorConfig, config, **settings), autoencoder, VQVAE)
        self.codebook_size = self.autoencoder.codebook_size
        prior_class = PRIORS[config.prior_family]
        self.prior = prior_class(configure(prior_class.Config, channels=1, levels=self.codebook_size,
                                           num_classes=config.num_classes, **config.prior_settings))

    # -- the data: token grids ----------------------------------------------------
    def encode(self, x):
        """Integer images (N, C, H, W) -> their token grids (N, h, w), int64 codes, as
        ``VQVAE.encode_tokens`` gives them (no graph: the VQ-VAE is frozen)."""
        return self.autoencoder.encode_tokens(self._checked(x, "encode"))

    def _as_prior_images(self, tokens, where: str):
        """Token grids (N, h, w) -> the prior's one-channel images (N, 1, h, w) of levels 0..K-1,
        or a one-line error."""
        size = self.latent_size
        data = tokens.data if isinstance(tokens, Tensor) else tokens
        if len(np.shape(data)) != 3:
            raise UserError(f"TokenPrior.{where}: tokens must have shape (N, {size}, {size}), "
                            f"got {tuple(np.shape(data))}")
        data = data if hasattr(data, "reshape") else np.asarray(data)
        return check_images(data[:, None], f"TokenPrior.{where}", channels=1, levels=self.codebook_size,
                            image_size=size, name="tokens")

    def log_prob_tokens(self, tokens, labels=None):
        """log p(tokens) in nats per grid, exactly (eq. 1 of the chain rule), (N,):
        ``tokens`` (N, h, w) codes 0..K-1."""
        return self.prior.log_prob(self._as_prior_images(tokens, "log_prob_tokens"), labels)

    # -- training ----------------------------------------------------------------
    def loss(self, x, labels=None) -> Tensor:
        """-log p(tokens of x) in nats per image, batch mean: the prior's NLL of the code
        (gradients reach the prior only)."""
        return -self.log_prob_tokens(self.encode(x), labels).mean()

    # -- sampling ----------------------------------------------------------------
    def sample_tokens(self, n: int, labels=None, *, temperature: float = 1.0, seed: int = 0, cached: bool = True,
                      device: str | None = None, progress: bool = False, on_step=None):
        """``n`` token grids (n, h, w) drawn from the prior in raster order; ``cached``
        (the default) gives the same grids as the naive sampler, faster."""
        grids = self.prior.sample(n, (self.latent_size, self.latent_size), labels, temperature=temperature,
                                  cached=cached, seed=seed, device=device, progress=progress, on_step=on_step)
        return grids[:, 0]

    def sample(self, n: int, labels=None, **options):
        """``n`` images as integer levels (n, C, H, W): :meth:`sample_tokens` decoded by the VQ-VAE."""
        return self.autoencoder.decode_tokens(self.sample_tokens(n, labels, **options))

    generate = sample  # the decoded images, as LatentDiffusion.generate

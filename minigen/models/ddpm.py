"""DDPM, the model: a U-Net that predicts the noise, wrapped around the diffusion process.

The process itself (schedules, closed forms, reverse steps, the bound's
terms, and the index convention: code step 0 is the paper's t = 1) lives in
:mod:`minigen.models.diffusion`. This module adds what needs the network:

- scaling integer levels to [-1, 1] and back;
- the training loss L_simple (Ho et al. 2020, eq. 14), with the labels
  dropped for classifier-free guidance (Ho & Salimans 2022);
- one sampler, :meth:`DDPM.generate` (:meth:`DDPM.sample` rounds its output
  to levels), configured by :class:`SamplerOptions`;
- the variational bound on -log p(x) (Ho et al. eq. 5), :meth:`DDPM.nll_bound`.

A model is built from a :class:`DDPMConfig`: ``DDPM(DDPMConfig(T=100))`` and
``DDPM(T=100)`` are the same model, and ``model.config`` is the dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor
from ..engine.creation import full, randint, randn, tensor
from ..engine.ops import cat, where
from ..errors import UserError
from ..progress import tqdm
from .config import configure
from .diffusion import (VARIANCES, Schedule, ancestral_step, at_step, bound_steps, ddim_step, ddim_timesteps,
                        discretized_gaussian_log_likelihood, eps_from_x0, gaussian_kl, posterior_mean, prior_kl,
                        q_sample, reverse_variance, v_target, x0_from_eps, x0_from_v)
from .inputs import check_count, check_images, check_labels, check_number
from .unet import UNet

PREDICTIONS = ("eps", "x0", "v")
SAMPLERS = ("ddpm", "ddim")
DDIM_STEPS = 50  # DDIM's number of steps when none is given


@dataclass(frozen=True)
class DDPMConfig:
    """The settings of a DDPM: the data, the diffusion process, and the U-Net."""

    channels: int = 1
    levels: int = 17  # integer grey levels 0..levels-1 per sub-pixel
    image_size: int = 8
    T: int = 1000
    schedule: str = "linear"  # a key of diffusion.SCHEDULES
    prediction: str = "eps"  # what the network outputs: "eps", "x0" or "v"
    variance: str = "small"  # the reverse variance: beta_tilde ("small") or beta ("large")
    num_classes: int | None = None  # None: unconditional
    p_uncond: float = 0.1  # how often training drops the label (classifier-free guidance)
    base_channels: int = 32
    channel_mults: tuple = (1, 2)
    num_res_blocks: int = 1
    groups: int = 8

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))  # checkpoints store a list
        if self.prediction not in PREDICTIONS:
            raise UserError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.variance not in VARIANCES:
            raise UserError(f"variance must be one of {VARIANCES}, got {self.variance!r}")
        if not 0 <= self.p_uncond < 1:
            raise UserError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        factor = 2 ** (len(self.channel_mults) - 1)  # the U-Net halves the size once per extra level
        if self.image_size % factor:
            raise UserError(f"DDPMConfig: image_size ({self.image_size}) must be divisible by "
                            f"2**(len(channel_mults) - 1) = {factor} for channel_mults={self.channel_mults}; "
                            f"change image_size or use fewer channel_mults")
        try:
            Schedule.make(self.schedule, self.T)  # checks T against the schedule (linear needs T >= 21)
        except ValueError as error:
            raise UserError(f"DDPMConfig: {error}") from None


@dataclass(frozen=True)
class SamplerOptions:
    """How to run the reverse chain; :meth:`DDPM.sample` and :meth:`DDPM.generate` take
    these as ``options=SamplerOptions(...)`` or as keywords (``sampler="ddim", steps=10``)."""

    sampler: str = "ddpm"  # "ddpm": ancestral over all T steps (Ho et al. alg. 2); "ddim": Song et al. 2021
    steps: int | None = None  # DDIM's number of steps (None: DDIM_STEPS); the ancestral sampler takes all T
    eta: float = 0.0  # DDIM's noise: 0 is deterministic, 1 has the ancestral sampler's variance
    spacing: str = "uniform"  # DDIM's steps, "uniform" or "quadratic" (see ddim_timesteps)
    clip: bool = True  # clip each step's x0 estimate to [-1, 1]
    guidance: float = 1.0  # classifier-free guidance weight w; 1 is the plain conditional model
    seed: int = 0  # seeds x_T and every step's noise
    progress: bool = False  # show a progress bar

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise UserError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer))
                                       or self.steps < 1):
            raise UserError(f"SamplerOptions: steps must be None (DDIM_STEPS = {DDIM_STEPS}) or an integer >= 1, "
                            f"got {self.steps!r}")
        check_number(self.eta, "SamplerOptions", "eta", 0.0, 1.0)
        check_number(self.guidance, "SamplerOptions", "guidance")

    def timesteps(self, T: int) -> list:
        """The code steps the chain visits, from the noisiest down."""
        if self.sampler == "ddpm":
            return list(range(T))[::-1]
        return ddim_timesteps(T, DDIM_STEPS if self.steps is None else self.steps, self.spacing)[::-1]


def _standard_normal(rng: np.random.Generator, shape, device: str) -> Tensor:
    """z ~ N(0, I) drawn by a NumPy generator and moved to ``device``.

    Raw array work on purpose: the host generator gives the same numbers on
    every device, so a seed means the same samples on the CPU and the GPU.
    """
    return tensor(rng.standard_normal(shape, dtype=np.float32), device=device)


def simple_loss(model: "DDPM", x0, labels, draw_steps, draw_noise):
    """L_simple (Ho et al. 2020, eq. 14, algorithm 1): the network's mean squared error at a random step.

    ``x0`` (N, C, S, S): the images scaled to [-1, 1]; ``labels`` (N,) or None.
    Draw one code step per image, uniform over all of ``model.schedule``'s T
    steps, with ``draw_steps(low, high, count)`` (``count`` integers in
    [low, high), a Tensor), then the noise with ``draw_noise(shape)`` (a Tensor
    of N(0, 1) draws), in that order; diffuse x0 to x_t in closed form. The
    network ``model.net(x_t, t, labels)`` predicts ``model.prediction``: the
    noise ("eps"), x0 ("x0") or v ("v", :func:`v_target`); the loss is the
    mean squared error of the prediction to its target (F.mse_loss), a scalar
    Tensor. For classifier-free guidance the network reads
    ``model.drop_labels(labels, N, x0.device)`` (each label dropped with
    probability p_uncond), not ``labels``.
    """
    ### BEGIN SOLUTION
    n = x0.shape[0]
    t = draw_steps(0, model.schedule.T, n)
    noise = draw_noise(x0.shape)
    xt = q_sample(model.schedule, x0, t, noise)
    target = {"eps": noise, "x0": x0, "v": v_target(model.schedule, x0, t, noise)}[model.prediction]
    return F.mse_loss(model.net(xt, t, model.drop_labels(labels, n, x0.device)), target)
    ### END SOLUTION


def guided_prediction(conditional, unconditional, guidance: float):
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): the network's conditional and
    unconditional ("no class") outputs mixed with weight ``guidance`` = w:

        eps = eps_uncond + w (eps_cond - eps_uncond)

    w = 1 is the plain conditional model, w = 0 the unconditional one, w > 1
    pushes further towards the class. Tensors of one shape in, one out.
    """
    ### BEGIN SOLUTION
    return unconditional + guidance * (conditional - unconditional)
    ### END SOLUTION


class DDPM(nn.Module):
    """A U-Net that predicts the noise (or x0, or v) and the chain around it.

    Images go in and come out as integer levels 0..K-1; inside they are
    scaled to [-1, 1]. The schedule is plain data recomputed from the config,
    never a parameter: optimizers and EMA cannot touch it.

    Class conditioning uses classifier-free guidance (Ho & Salimans 2022): in
    training the label is replaced by the "no class" label ``num_classes``
    with probability ``p_uncond``; at sampling the two predictions are mixed,
    eps = eps_uncond + guidance * (eps_cond - eps_uncond).
    """

    Config = DDPMConfig

    def __init__(self, config: DDPMConfig | None = None, **settings):
        super().__init__()
        config = configure(DDPMConfig, config, **settings)
        self.config = config
        self.channels, self.levels, self.image_size = config.channels, config.levels, config.image_size
        self.prediction, self.variance = config.prediction, config.variance
        self.num_classes, self.p_uncond = config.num_classes, config.p_uncond
        self.schedule = Schedule.make(config.schedule, config.T)
        self.net = UNet(config.channels, config.base_channels, config.channel_mults, config.num_res_blocks,
                        config.num_classes, config.groups)

    # -- data scaling ------------------------------------------------------------
    def scale(self, x) -> Tensor:
        """Integer levels 0..K-1 (a Tensor or an array) -> floats in [-1, 1]."""
        x = x if isinstance(x, Tensor) else Tensor(x)  # an array is wrapped as it is, on its own device
        return x.astype("float32") * (2 / (self.levels - 1)) - 1

    def unscale(self, x: Tensor):
        """Floats in [-1, 1] -> the nearest integer level (clipped), as an int64 backend array.

        Rounding has no Tensor op (it has no gradient): the last step is array work.
        """
        xp = backend.get_array_module(x.data)
        if not bool(xp.isfinite(x.data).all()):
            raise ValueError(f"DDPM.unscale: x has {int((~xp.isfinite(x.data)).sum())} NaN or infinite value(s), "
                             f"which have no level; the chain that made it diverged")
        levels = ((x + 1) * ((self.levels - 1) / 2)).clip(0, self.levels - 1)
        return backend.get_array_module(levels.data).rint(levels.data).astype(np.int64)

    def _device(self) -> str:
        return next((p.device for p in self.parameters()), "cpu")

    def _checked_images(self, x, where: str):
        """``x`` as an int64 array (N, C, S, S) of levels, or a one-line error (see :mod:`minigen.models.inputs`)."""
        return check_images(x, f"DDPM.{where}", channels=self.channels, levels=self.levels,
                            image_size=self.image_size)

    # -- training ------------------------------------------------------------------
    def loss(self, x, labels=None):
        """L_simple (Ho et al. eq. 14): mean squared error of the prediction at a uniform t.

        ``x`` (N, C, S, S): a Tensor, an array or a nested list of integer levels (floats of
        integer value pass too); ``labels``: one class per image (a conditional model needs them).
        """
        x0 = self.scale(self._checked_images(x, "loss"))
        n, device = x0.shape[0], x0.device
        if labels is None and self.num_classes is not None:
            raise ValueError(f"DDPM.loss: this model is class-conditional (num_classes={self.num_classes}); "
                             f"pass labels")
        labels = self._sampling_labels(labels, n, device, "DDPM.loss")
        draw_steps = lambda low, high, count: randint(low, high, (count,), device=device)
        draw_noise = lambda shape: randn(*shape, device=device)
        return simple_loss(self, x0, labels, draw_steps, draw_noise)

    def drop_labels(self, labels, n: int, device: str):
        """Checked training labels with each replaced by "no class" with probability p_uncond."""
        if labels is None:
            return None
        # float64 uniforms from minigen's seeded stream (mg.rand draws float32, another stream)
        drop = backend.generator(device).random(n) < self.p_uncond
        return where(drop, self.num_classes, labels)

    def _sampling_labels(self, labels, n: int, device: str, where: str):
        """Labels as a (n,) int Tensor; a conditional model given none samples unconditionally."""
        if labels is None:
            return None if self.num_classes is None else full(n, self.num_classes, device=device)
        if self.num_classes is None:
            raise ValueError(f"{where}: this model was built without classes (num_classes=None); pass no labels")
        return tensor(check_labels(labels, n, self.num_classes, where), device=device)

    # -- the reverse process ---------------------------------------------------------
    def predict_eps_x0(self, xt, t, labels=None, guidance: float = 1.0, clip: bool = True):
        """The network's noise estimate and the x0 it implies (clipped to [-1, 1] if asked).

        With ``clip``, eps is recomputed from the clipped x0 so the two stay consistent.
        """
        out = self._guided_output(xt, t, labels, guidance)
        if self.prediction == "eps":
            eps = out
            x0 = x0_from_eps(self.schedule, xt, t, eps)
        elif self.prediction == "x0":
            x0 = out
        else:
            x0 = x0_from_v(self.schedule, xt, t, out)
        if clip:
            x0 = x0.clip(-1.0, 1.0)
        if clip or self.prediction != "eps":
            eps = eps_from_x0(self.schedule, xt, t, x0)
        return eps, x0

    def _guided_output(self, xt, t, labels, guidance):
        """The network's output, mixed with the unconditional one when ``guidance`` != 1
        (one batch of 2n: the labels, then "no class")."""
        if labels is None or guidance == 1.0:
            return self.net(xt, t, labels)
        n = xt.shape[0]
        null = full(n, self.num_classes, device=xt.device)
        both = self.net(cat([xt, xt]), cat([t, t]), cat([labels, null]))
        conditional, unconditional = both[:n], both[n:]
        return guided_prediction(conditional, unconditional, guidance)

    def p_mean_variance(self, xt, t, labels=None, guidance: float = 1.0, clip: bool = True):
        """Mean and variance of p(x_{t-1} | x_t), and the x0 estimate."""
        _, x0 = self.predict_eps_x0(xt, t, labels, guidance, clip)
        variance, _ = reverse_variance(self.schedule, self.variance)
        return posterior_mean(self.schedule, x0, xt, t), at_step(variance, t, xt), x0

    # -- sampling ----------------------------------------------------------------------
    def sample(self, n: int, labels=None, *, options: SamplerOptions | None = None, device: str | None = None,
               on_step=None, **settings):
        """Draw ``n`` images as integer levels, an int64 array (n, C, H, W): :meth:`generate`, rounded."""
        return self.unscale(self.generate(n, labels, options=options, device=device, on_step=on_step, **settings))

    def generate(self, n: int, labels=None, *, options: SamplerOptions | None = None, device: str | None = None,
                 on_step=None, x_T=None, **settings) -> Tensor:
        """Run the reverse chain from x_T ~ N(0, I) and return the final x_0 (floats, Tensor).

        ``options`` (or keywords naming its fields, see :class:`SamplerOptions`)
        choose the sampler: ancestral over all T steps (Ho et al. alg. 2) or
        DDIM (Song et al. 2021, eq. 12). ``x_T`` replaces the starting noise;
        ``on_step(t, x_t, x0_estimate)`` is called at every step (for figures).
        """
        n = check_count(n, "DDPM.generate")
        options = configure(SamplerOptions, options, **settings)
        device = device or self._device()
        shape = (n, self.channels, self.image_size, self.image_size)
        if x_T is not None and tuple(x_T.shape) != shape:
            raise ValueError(f"DDPM.generate: x_T must have shape {shape} (n, channels, image_size, image_size), "
                             f"got {tuple(x_T.shape)}")
        labels = self._sampling_labels(labels, n, device, "DDPM.generate")
        timesteps = options.timesteps(self.schedule.T)
        rng = np.random.default_rng(options.seed)
        x = _standard_normal(rng, shape, device) if x_T is None else x_T
        draw_noise = lambda: _standard_normal(rng, x.shape, device)
        visits = list(zip(timesteps, timesteps[1:] + [-1]))  # (t, the next step t_prev); -1 is the clean data
        with self.evaluating():
            for t, t_prev in tqdm(visits, desc=options.sampler, disable=not options.progress):
                t_batch = full(n, t, device=device)
                if options.sampler == "ddpm":
                    mean, variance, x0 = self.p_mean_variance(x, t_batch, labels, options.guidance, options.clip)
                    x = ancestral_step(mean, variance, t, draw_noise)
                else:
                    eps, x0 = self.predict_eps_x0(x, t_batch, labels, options.guidance, options.clip)
                    ab_prev = float(self.schedule.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
                    x = ddim_step(x0, eps, float(self.schedule.alpha_bar[t]), ab_prev, options.eta, draw_noise)
                if on_step is not None:
                    on_step(t, x, x0)
        return x

    # -- likelihood --------------------------------------------------------------------
    def nll_bound(self, x, labels=None, seed: int = 0, timesteps: int | None = None, progress: bool = False):
        """The variational bound on -log p(x) in nats per image (Ho et al. eq. 5), shape (N,).

            L = KL(q(x_T|x_0) || N(0, I))                          prior
              + sum_{t=2..T} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
              - log p(x_0 | x_1)                                     discretised decoder

        ``x`` holds integer levels, so this bounds the same discrete likelihood
        that PixelCNN computes exactly. ``timesteps=K`` estimates the middle sum
        from K steps instead of all T - 1, without bias (see :func:`bound_steps`).
        """
        x0 = self.scale(self._checked_images(x, "nll_bound"))
        labels = self._sampling_labels(labels, x0.shape[0], x0.device, "DDPM.nll_bound")
        rng = np.random.default_rng(seed)
        middle, weights = bound_steps(self.schedule.T, timesteps, rng)
        per_image = lambda values: values.reshape(values.shape[0], -1).sum(axis=1)
        with self.evaluating():
            total = per_image(prior_kl(self.schedule, x0))
            for t, weight in tqdm(list(zip(middle, weights)), desc="bound", disable=not progress):
                total = total + weight * per_image(self._step_kl(x0, int(t), labels, rng))
            total = total + per_image(self._decoder_nll(x0, labels, rng))
        return total

    def _diffused(self, x0, t: int, rng):
        """x_t drawn from q(x_t | x_0) at the one code step t, and t as a batch."""
        t_batch = full(x0.shape[0], t, device=x0.device)
        return q_sample(self.schedule, x0, t_batch, _standard_normal(rng, x0.shape, x0.device)), t_batch

    def _step_kl(self, x0, t: int, labels, rng):
        """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) at code step t >= 1."""
        xt, t_batch = self._diffused(x0, t, rng)
        true_mean = posterior_mean(self.schedule, x0, xt, t_batch)
        true_logvar = at_step(self.schedule.posterior_log_variance_clipped, t_batch, x0)
        model_mean, _, _ = self.p_mean_variance(xt, t_batch, labels, clip=False)
        _, log_variance = reverse_variance(self.schedule, self.variance)
        return gaussian_kl(true_mean, true_logvar, model_mean, at_step(log_variance, t_batch, xt))

    def _decoder_nll(self, x0, labels, rng):
        """L_0 = -log p(x_0 | x_1), the discretised Gaussian decoder (Ho et al. sec. 3.3)."""
        x1, t_batch = self._diffused(x0, 0, rng)
        model_mean, _, _ = self.p_mean_variance(x1, t_batch, labels, clip=False)
        _, log_variance = reverse_variance(self.schedule, self.variance)
        log_scale = 0.5 * at_step(log_variance, t_batch, x1)
        return -discretized_gaussian_log_likelihood(x0, model_mean, log_scale, self.levels)

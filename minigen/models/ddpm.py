"""Denoising diffusion probabilistic models (DDPM), minimal but exact.

Notation follows Ho et al. (2020), "Denoising Diffusion Probabilistic Models".
The forward process adds Gaussian noise in T steps,

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),

which has the closed form (eq. 4), with alpha_t = 1 - beta_t and
alpha_bar_t = prod_{s<=t} alpha_s,

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

A network eps_theta(x_t, t) learns to predict the noise; sampling runs the
chain backwards from x_T ~ N(0, I).

**Index convention.** Arrays are indexed by code step ``t = 0 .. T-1``, which
is the paper's t = 1 .. T. So ``alpha_bar[0]`` is the paper's alpha_bar_1 and
``alpha_bar_prev[0] = 1`` (the paper's alpha_bar_0: no noise at all).

Schedules are computed in float64 and cast to float32 once, on use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..engine import backend
from ..engine import functional as F
from ..engine import nn
from ..engine.autograd import Tensor, no_grad
from ..engine.ops import where
from .unet import UNet

MAX_BETA = 0.999  # beta clipped here: beta near 1 makes the reverse step singular


# ----------------------------------------------------------------------------
# Noise schedules


def linear_betas(T: int) -> np.ndarray:
    """Ho et al. (2020): beta from 1e-4 to 0.02 over 1000 steps, scaled by 1000/T
    for other T so that the total noise (sum of beta) stays the same.

    Without the scaling, a short chain ends far from pure noise (for T = 100,
    sqrt(alpha_bar_T) is about 0.6); the schedule tests catch that pitfall.
    """
    scale = 1000 / T
    if scale * 0.02 > MAX_BETA:
        raise ValueError(f"linear schedule needs T >= 21 (beta_T = {scale * 0.02:.2f} >= 1 for T = {T})")
    ### BEGIN SOLUTION
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    ### END SOLUTION


def betas_from_alpha_bar(alpha_bar_fn, T: int) -> np.ndarray:
    """beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T), clipped at MAX_BETA.

    ``alpha_bar_fn`` maps time u in [0, 1] (an array) to alpha_bar; it is
    normalised so that alpha_bar(0) = 1.
    """
    ### BEGIN SOLUTION
    t = np.arange(T + 1, dtype=np.float64) / T
    alpha_bar = alpha_bar_fn(t) / alpha_bar_fn(0.0)
    return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], MAX_BETA)
    ### END SOLUTION


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021), eq. 17: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi/2).

    The offset s keeps beta_1 from being vanishingly small; betas come from
    :func:`betas_from_alpha_bar` (clipped at MAX_BETA = 0.999).
    """
    ### BEGIN SOLUTION
    return betas_from_alpha_bar(lambda u: np.cos((u + s) / (1 + s) * math.pi / 2) ** 2, T)
    ### END SOLUTION


def sigmoid_betas(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Chen (2023), "On the Importance of Noise Scheduling for Diffusion Models":
    alpha_bar follows a rescaled sigmoid, flatter than cosine at both ends."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    return betas_from_alpha_bar(lambda u: (v_end - sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start), T)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}


@dataclass(frozen=True)
class Schedule:
    """Every per-step constant of the forward process and its posterior (float64).

    posterior q(x_{t-1} | x_t, x_0) = N(mean_coef_x0 x_0 + mean_coef_xt x_t, posterior_variance)
    (Ho et al. eqs. 6-7).
    """

    name: str
    betas: np.ndarray

    @classmethod
    def make(cls, name: str, T: int) -> "Schedule":
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
        if T < 2:
            raise ValueError(f"a schedule needs T >= 2 steps, got {T}")
        return cls(name, SCHEDULES[name](T))

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1 - self.betas

    @property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """alpha_bar at the previous step; 1 before the first step (the clean data)."""
        return np.concatenate([[1.0], self.alpha_bar[:-1]])

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar)."""
        return self.alpha_bar / (1 - self.alpha_bar)

    @property
    def posterior_variance(self) -> np.ndarray:
        """beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); 0 at the first step."""
        return self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        """log beta_tilde, with the first step's log 0 replaced by the second step's value."""
        return np.log(np.concatenate([self.posterior_variance[1:2], self.posterior_variance[1:]]))

    @property
    def mean_coef_x0(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alpha_bar_prev) / (1 - self.alpha_bar)

    @property
    def mean_coef_xt(self) -> np.ndarray:
        return (1 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1 - self.alpha_bar)


def _at(values: np.ndarray, t, like):
    """values[t] as float32 on like's device, shaped (N, 1, 1, 1) to broadcast over images."""
    xp = backend.get_array_module(like.data if isinstance(like, Tensor) else like)
    picked = xp.asarray(values.astype(np.float32))[t.data if isinstance(t, Tensor) else t]
    return Tensor(picked.reshape((-1,) + (1,) * (like.ndim - 1)))


# ----------------------------------------------------------------------------
# Closed forms


def q_sample(schedule: Schedule, x0, t, noise):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. eq. 4).

    ``t`` holds one code step per image; ``_at(values, t, x0)`` picks values[t]
    shaped to broadcast over the images.
    """
    ### BEGIN SOLUTION
    return _at(np.sqrt(schedule.alpha_bar), t, x0) * x0 + _at(np.sqrt(1 - schedule.alpha_bar), t, x0) * noise
    ### END SOLUTION


def x0_from_eps(schedule: Schedule, xt, t, eps):
    """Invert q_sample: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    ### BEGIN SOLUTION
    return (xt - _at(np.sqrt(1 - schedule.alpha_bar), t, xt) * eps) / _at(np.sqrt(schedule.alpha_bar), t, xt)
    ### END SOLUTION


def eps_from_x0(schedule: Schedule, xt, t, x0):
    """The noise that takes x_0 to x_t: (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    return (xt - _at(np.sqrt(schedule.alpha_bar), t, xt) * x0) / _at(np.sqrt(1 - schedule.alpha_bar), t, xt)


def posterior_mean(schedule: Schedule, x0, xt, t):
    """Mean of q(x_{t-1} | x_t, x_0)   (Ho et al. eq. 7):

        beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
          + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t
    """
    ### BEGIN SOLUTION
    return _at(schedule.mean_coef_x0, t, xt) * x0 + _at(schedule.mean_coef_xt, t, xt) * xt
    ### END SOLUTION


def ancestral_step(mean, variance, t: int, draw_noise):
    """One step of ancestral sampling (Ho et al. alg. 2, line 4): x_{t-1} = mean + sigma_t z.

    ``t`` is the code step (0 is the paper's t = 1, the last step of the
    chain), where no noise is added: the result is the final image.
    ``draw_noise()`` returns z ~ N(0, I); call it only when noise is added,
    so the last step uses no random numbers.
    """
    ### BEGIN SOLUTION
    if t == 0:
        return mean
    return mean + variance.sqrt() * draw_noise()
    ### END SOLUTION


def ddim_step(x0, eps, alpha_bar: float, alpha_bar_prev: float, eta: float, draw_noise):
    """One DDIM step (Song et al. 2021, eq. 12), from x_t to x_{t_prev}:

        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma  = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev)

    ``eta = 0`` is deterministic; ``eta = 1`` has the ancestral sampler's
    variance. ``draw_noise()`` gives z; call it only when sigma > 0. Rounding
    can make 1 - ab_prev - sigma^2 slightly negative: treat that as 0.
    """
    ### BEGIN SOLUTION
    sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * draw_noise()
    return x_prev
    ### END SOLUTION


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp() - 1)


def _standard_normal_cdf(x):
    """Phi(x), by the tanh approximation of Ho et al.'s code (absolute error < 3e-4)."""
    return 0.5 * (1 + F.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale, levels: int):
    """log P(x) when x in [-1, 1] takes ``levels`` evenly spaced values and the
    decoder is N(mean, e^{2 log_scale}) integrated over each value's bin
    (Ho et al. sec. 3.3); the end bins extend to -inf and +inf."""
    half_bin = 1.0 / (levels - 1)
    inv_std = (-log_scale).exp()
    cdf_plus = _standard_normal_cdf(inv_std * (x - mean + half_bin))
    cdf_minus = _standard_normal_cdf(inv_std * (x - mean - half_bin))
    tiny = 1e-12
    log_below = cdf_plus.clip(tiny, None).log()  # the lowest bin: (-inf, x + half_bin]
    log_above = (1 - cdf_minus).clip(tiny, None).log()  # the highest bin: [x - half_bin, inf)
    log_bin = (cdf_plus - cdf_minus).clip(tiny, None).log()
    values = x.data
    return where(values < -1 + half_bin, log_below, where(values > 1 - half_bin, log_above, log_bin))


# ----------------------------------------------------------------------------
# The model: a denoising network wrapped with its schedule


PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("small", "large")


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

    def __init__(self, channels: int = 1, levels: int = 17, image_size: int = 8, T: int = 1000,
                 schedule: str = "linear", prediction: str = "eps", variance: str = "small",
                 num_classes: int | None = None, p_uncond: float = 0.1, base_channels: int = 32,
                 channel_mults=(1, 2), num_res_blocks: int = 1, groups: int = 8):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if not 0 <= p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
        self.config = dict(channels=channels, levels=levels, image_size=image_size, T=T, schedule=schedule,
                           prediction=prediction, variance=variance, num_classes=num_classes,
                           p_uncond=p_uncond, base_channels=base_channels,
                           channel_mults=list(channel_mults), num_res_blocks=num_res_blocks, groups=groups)
        self.channels, self.levels, self.image_size = channels, levels, image_size
        self.prediction, self.variance, self.num_classes, self.p_uncond = prediction, variance, num_classes, p_uncond
        self.schedule = Schedule.make(schedule, T)
        self.net = UNet(channels, base_channels, tuple(channel_mults), num_res_blocks, num_classes, groups)

    # -- data scaling ------------------------------------------------------------
    def scale(self, x):
        """Integer levels 0..K-1 -> floats in [-1, 1]."""
        data = x.data if isinstance(x, Tensor) else x
        return Tensor((data.astype(np.float32) * np.float32(2 / (self.levels - 1)) - 1).astype(np.float32))

    def unscale(self, x):
        """Floats in [-1, 1] -> the nearest integer level (clipped)."""
        xp = backend.get_array_module(x.data)
        levels = xp.rint((x.data + 1) * ((self.levels - 1) / 2))
        return xp.clip(levels, 0, self.levels - 1).astype(np.int64)

    def _device(self) -> str:
        return next((p.device for p in self.parameters()), "cpu")

    def _noise(self, rng, shape, device):
        """Standard normal noise from a NumPy generator, on ``device`` (same numbers on every device)."""
        return Tensor(backend.to_device(rng.standard_normal(shape, dtype=np.float32), device))

    # -- training ------------------------------------------------------------------
    def loss(self, x, labels=None):
        """L_simple (Ho et al. eq. 14): mean squared error of the prediction at a uniform t."""
        x0 = self.scale(x)
        n, device = x0.shape[0], x0.device
        t = Tensor(backend.generator(device).integers(0, self.schedule.T, size=n))
        noise = Tensor(backend.generator(device).standard_normal(x0.shape, dtype=np.float32))
        xt = q_sample(self.schedule, x0, t, noise)
        target = {"eps": noise, "x0": x0, "v": self._v(x0, t, noise)}[self.prediction]
        return F.mse_loss(self.net(xt, t, self._drop_labels(labels, n, device)), target)

    def _v(self, x0, t, eps):
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022)."""
        return _at(np.sqrt(self.schedule.alpha_bar), t, x0) * eps - _at(np.sqrt(1 - self.schedule.alpha_bar), t, x0) * x0

    def _drop_labels(self, labels, n: int, device: str):
        """Training labels with each replaced by "no class" with probability p_uncond."""
        if labels is None and self.num_classes is not None:
            raise ValueError(f"this model is class-conditional (num_classes={self.num_classes}); pass labels")
        labels = self._sampling_labels(labels, n, device)
        if labels is None:
            return None
        drop = backend.generator(device).random(n) < self.p_uncond
        xp = backend.get_array_module(labels.data)
        return Tensor(xp.where(xp.asarray(drop), self.num_classes, labels.data).astype(np.int64))

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
        else:  # v
            x0 = _at(np.sqrt(self.schedule.alpha_bar), t, xt) * xt - _at(np.sqrt(1 - self.schedule.alpha_bar), t, xt) * out
        if clip:
            x0 = x0.clip(-1.0, 1.0)
        if clip or self.prediction != "eps":
            eps = eps_from_x0(self.schedule, xt, t, x0)
        return eps, x0

    def _guided_output(self, xt, t, labels, guidance):
        if labels is None or guidance == 1.0:
            return self.net(xt, t, labels)
        n = xt.shape[0]
        xp = backend.get_array_module(xt.data)
        null = Tensor(xp.full((n,), self.num_classes, dtype=np.int64))
        both = self.net(Tensor(xp.concatenate([xt.data, xt.data])), Tensor(xp.concatenate([t.data, t.data])),
                        Tensor(xp.concatenate([labels.data, null.data])))
        conditional, unconditional = both[:n], both[n:]
        return unconditional + guidance * (conditional - unconditional)

    def reverse_variance(self) -> np.ndarray:
        """sigma_t^2 of p(x_{t-1} | x_t): beta_tilde ("small") or beta ("large", Ho et al. sec. 3.2).

        "large" uses beta_tilde at the first step, as beta_1 there would add
        noise to the final image (Nichol & Dhariwal's convention).
        """
        if self.variance == "small":
            return self.schedule.posterior_variance
        return np.concatenate([self.schedule.posterior_variance[1:2], self.schedule.betas[1:]])

    def p_mean_variance(self, xt, t, labels=None, guidance: float = 1.0, clip: bool = True):
        """Mean and variance of p(x_{t-1} | x_t), and the x0 estimate."""
        _, x0 = self.predict_eps_x0(xt, t, labels, guidance, clip)
        return posterior_mean(self.schedule, x0, xt, t), _at(self.reverse_variance(), t, xt), x0

    # -- sampling ----------------------------------------------------------------------
    def sample(self, n: int, labels=None, guidance: float = 1.0, sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, spacing: str = "uniform", clip: bool = True, seed: int = 0,
               device: str | None = None, progress: bool = False, on_step=None):
        """Draw ``n`` images as integer levels, (n, C, H, W). See :meth:`generate`."""
        x = self.generate(n, labels=labels, guidance=guidance, sampler=sampler, steps=steps, eta=eta,
                          spacing=spacing, clip=clip, seed=seed, device=device, progress=progress, on_step=on_step)
        return self.unscale(x)

    def generate(self, n: int, labels=None, guidance: float = 1.0, sampler: str = "ddpm", steps: int | None = None,
                 eta: float = 0.0, spacing: str = "uniform", clip: bool = True, seed: int = 0,
                 device: str | None = None, progress: bool = False, on_step=None, x_T=None):
        """Run the reverse chain from x_T ~ N(0, I) and return the final x_0 (floats, Tensor).

        ``sampler="ddpm"``: ancestral sampling over all T steps (Ho et al. alg. 2).
        ``sampler="ddim"``: Song et al. (2021) over ``steps`` steps with ``eta``
        (0: deterministic) and ``spacing`` "uniform" or "quadratic".
        ``on_step(t, x_t, x0_estimate)`` is called at every step (for figures).
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        device = device or self._device()
        rng = np.random.default_rng(seed)
        shape = (n, self.channels, self.image_size, self.image_size)
        x = self._noise(rng, shape, device) if x_T is None else x_T
        labels = self._sampling_labels(labels, n, device)
        timesteps = list(range(self.schedule.T))[::-1] if sampler == "ddpm" else \
            ddim_timesteps(self.schedule.T, steps or 50, spacing)[::-1]
        was_training = self.training
        self.eval()
        with no_grad():
            for k, t in enumerate(tqdm(timesteps, desc=sampler, disable=not progress)):
                t_batch = Tensor(backend.xp_for(device).full((n,), t, dtype=np.int64))
                if sampler == "ddpm":
                    x, x0 = self._ancestral_step(x, t, t_batch, labels, guidance, clip, rng)
                else:
                    t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
                    x, x0 = self._ddim_step(x, t, t_prev, t_batch, labels, guidance, clip, eta, rng)
                if on_step is not None:
                    on_step(t, x, x0)
        self.train(was_training)
        return x

    def _sampling_labels(self, labels, n: int, device: str):
        """Labels as a (n,) int Tensor; a conditional model given none samples unconditionally."""
        if labels is None:
            return None if self.num_classes is None else \
                Tensor(backend.xp_for(device).full((n,), self.num_classes, dtype=np.int64))
        if self.num_classes is None:
            raise ValueError("this model was built without classes (num_classes=None); pass no labels")
        array = np.asarray(backend.to_device(labels.data, "cpu") if isinstance(labels, Tensor) else labels)
        array = np.broadcast_to(array.astype(np.int64), (n,))
        if array.min() < 0 or array.max() >= self.num_classes:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got {sorted(set(array.tolist()))}")
        return Tensor(backend.to_device(np.ascontiguousarray(array), device))

    def _ancestral_step(self, x, t, t_batch, labels, guidance, clip, rng):
        mean, variance, x0 = self.p_mean_variance(x, t_batch, labels, guidance, clip)
        return ancestral_step(mean, variance, t, lambda: self._noise(rng, x.shape, x.device)), x0

    def _ddim_step(self, x, t, t_prev, t_batch, labels, guidance, clip, eta, rng):
        """x_{t_prev} from x_t by :func:`ddim_step`; t_prev = -1 is the clean data (alpha_bar = 1)."""
        eps, x0 = self.predict_eps_x0(x, t_batch, labels, guidance, clip)
        ab = float(self.schedule.alpha_bar[t])
        ab_prev = float(self.schedule.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        return ddim_step(x0, eps, ab, ab_prev, eta, lambda: self._noise(rng, x.shape, x.device)), x0

    # -- likelihood --------------------------------------------------------------------
    def nll_bound(self, x, labels=None, seed: int = 0, timesteps: int | None = None, progress: bool = False):
        """The variational bound on -log p(x) in nats per image (Ho et al. eq. 5), shape (N,).

            L = KL(q(x_T|x_0) || N(0, I))                          prior
              + sum_{t=2..T} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
              - log p(x_0 | x_1)                                     discretised decoder

        ``x`` holds integer levels, so this bounds the same discrete likelihood
        that PixelCNN computes exactly. ``timesteps=K`` estimates the middle sum
        from K steps instead of all T - 1, without bias: the last step (t = T),
        whose term is the largest and most variable when the schedule clips
        beta near 1 (cosine), is always counted; K - 1 others are drawn at
        random and weighted (T - 2) / (K - 1).
        """
        rng = np.random.default_rng(seed)
        x0 = self.scale(x)
        labels = self._sampling_labels(labels, x0.shape[0], x0.device)
        middle, weights = self._bound_steps(timesteps, rng)
        per_image = lambda values: values.reshape(values.shape[0], -1).sum(axis=1)
        was_training = self.training
        self.eval()
        with no_grad():
            total = per_image(self._prior_kl(x0))
            for t, weight in tqdm(list(zip(middle, weights)), desc="bound", disable=not progress):
                total = total + weight * per_image(self._step_kl(x0, int(t), labels, rng))
            total = total + per_image(self._decoder_nll(x0, labels, rng))
        self.train(was_training)
        return total

    def _bound_steps(self, timesteps: int | None, rng):
        """The code steps 1..T-1 of the bound's middle sum to evaluate, and the weight of each."""
        T = self.schedule.T
        if timesteps is None or timesteps >= T - 1:
            return np.arange(1, T), np.ones(T - 1)
        if timesteps < 1:
            raise ValueError(f"timesteps must be at least 1 (or None for all {T - 1}), got {timesteps}")
        if timesteps == 1:  # one random step stands for all
            return rng.integers(1, T, size=1), np.array([float(T - 1)])
        drawn = rng.integers(1, T - 1, size=timesteps - 1)
        return np.append(drawn, T - 1), np.append(np.full(timesteps - 1, (T - 2) / (timesteps - 1)), 1.0)

    def _prior_kl(self, x0):
        """KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2 with m = sqrt(ab_T) x0, v = 1 - ab_T."""
        ab_T = float(self.schedule.alpha_bar[-1])
        return 0.5 * ((1 - ab_T) + ab_T * x0 * x0 - 1 - math.log(1 - ab_T))

    def _diffused(self, x0, t, rng):
        t_batch = Tensor(backend.xp_for(x0.device).full((x0.shape[0],), t, dtype=np.int64))
        return q_sample(self.schedule, x0, t_batch, self._noise(rng, x0.shape, x0.device)), t_batch

    def _log_variance(self, t_batch, like):
        """log sigma_t^2 of the reverse step; at the first step beta_tilde_2 stands in
        for beta_tilde_1 = 0 (it sets the decoder's width)."""
        variance = self.reverse_variance()
        return _at(np.log(np.concatenate([self.schedule.posterior_variance[1:2], variance[1:]])), t_batch, like)

    def _step_kl(self, x0, t, labels, rng):
        xt, t_batch = self._diffused(x0, t, rng)
        true_mean = posterior_mean(self.schedule, x0, xt, t_batch)
        true_logvar = _at(self.schedule.posterior_log_variance_clipped, t_batch, x0)
        model_mean, _, _ = self.p_mean_variance(xt, t_batch, labels, clip=False)
        return gaussian_kl(true_mean, true_logvar, model_mean, self._log_variance(t_batch, xt))

    def _decoder_nll(self, x0, labels, rng):
        x1, t_batch = self._diffused(x0, 0, rng)
        model_mean, _, _ = self.p_mean_variance(x1, t_batch, labels, clip=False)
        log_scale = 0.5 * self._log_variance(t_batch, x1)
        return -discretized_gaussian_log_likelihood(x0, model_mean, log_scale, self.levels)


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> list:
    """The increasing code steps a DDIM chain visits (Song et al. 2021, appendix C.2).

    "uniform": every (T // steps)-th step from 0; "quadratic": steps packed
    towards t = 0 as i^2, where the image takes shape.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and T={T}, got {steps}")
    if spacing == "uniform":
        return list(range(0, T, T // steps))[:steps]
    if spacing == "quadratic":
        seq = (np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(int)
        return sorted(set(int(s) for s in seq))
    raise ValueError(f"spacing must be 'uniform' or 'quadratic', got {spacing!r}")

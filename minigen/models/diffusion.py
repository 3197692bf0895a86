"""The Gaussian diffusion process of DDPM: schedules, closed forms, sampling steps, likelihood terms.

No network lives here: everything is a function of a :class:`Schedule` and of
tensors (the model that predicts the noise is :mod:`minigen.models.ddpm`).
Notation follows Ho et al. (2020), "Denoising Diffusion Probabilistic Models".
The forward process adds Gaussian noise in T steps,

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)          (eq. 2)

which has the closed form, with alpha_t = 1 - beta_t and
alpha_bar_t = prod_{s<=t} alpha_s,

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)      (eq. 4)

and, given x_0, a Gaussian posterior q(x_{t-1} | x_t, x_0) (eqs. 6-7) that the
reverse process p(x_{t-1} | x_t) imitates. The variational bound on -log p(x_0)
(eq. 5) is a sum of KL divergences between such Gaussians and a discretised
decoder term (sec. 3.3).

**Index convention.** Arrays are indexed by code step ``t = 0 .. T-1``, which
is the paper's t = 1 .. T. So ``alpha_bar[0]`` is the paper's alpha_bar_1 and
``alpha_bar_prev[0] = 1`` (the paper's alpha_bar_0: no noise at all).

Schedules are computed in float64 and cast to float32 once, on use
(:func:`at_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..engine.autograd import Tensor
from ..engine.creation import tensor
from ..engine.ops import where

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
    """The T betas, float64 array of shape (T,), of a schedule given as alpha_bar(u):
    beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T) for t = 1..T, clipped at MAX_BETA.

    ``alpha_bar_fn`` maps times u in [0, 1] (a NumPy array) to alpha_bar; it need
    not be normalised: divide it by alpha_bar_fn(0) first, so that the schedule
    starts from alpha_bar(0) = 1 (Nichol & Dhariwal 2021, eq. 17).
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
    """Every per-step constant of the forward process and its posterior, computed once (float64).

    As in improved-diffusion's ``GaussianDiffusion``, each constant is a named
    array indexed by code step; only ``name`` and ``betas`` are given, the rest
    follow from them in ``__post_init__``:

    - ``alpha_bar`` and its square roots scale x_0 and the noise in q(x_t | x_0) (eq. 4);
    - the posterior q(x_{t-1} | x_t, x_0) = N(mean_coef_x0 x_0 + mean_coef_xt x_t,
      posterior_variance) (eqs. 6-7).
    """

    name: str
    betas: np.ndarray
    alphas: np.ndarray = field(init=False, repr=False)
    alpha_bar: np.ndarray = field(init=False, repr=False)
    alpha_bar_prev: np.ndarray = field(init=False, repr=False)
    """alpha_bar at the previous step; 1 before the first step (the clean data)."""
    sqrt_alpha_bar: np.ndarray = field(init=False, repr=False)
    sqrt_one_minus_alpha_bar: np.ndarray = field(init=False, repr=False)
    snr: np.ndarray = field(init=False, repr=False)
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar)."""
    posterior_variance: np.ndarray = field(init=False, repr=False)
    """beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); 0 at the first step."""
    posterior_log_variance_clipped: np.ndarray = field(init=False, repr=False)
    """log beta_tilde, with the first step's log 0 replaced by the second step's value."""
    mean_coef_x0: np.ndarray = field(init=False, repr=False)
    mean_coef_xt: np.ndarray = field(init=False, repr=False)

    @classmethod
    def make(cls, name: str, T: int) -> "Schedule":
        """The schedule ``name`` (a key of SCHEDULES) with T steps."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
        if T < 2:
            raise ValueError(f"a schedule needs T >= 2 steps, got {T}")
        return cls(name, SCHEDULES[name](T))

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        alphas = 1 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        posterior_variance = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
        derived = dict(
            betas=betas, alphas=alphas, alpha_bar=alpha_bar, alpha_bar_prev=alpha_bar_prev,
            sqrt_alpha_bar=np.sqrt(alpha_bar), sqrt_one_minus_alpha_bar=np.sqrt(1 - alpha_bar),
            snr=alpha_bar / (1 - alpha_bar),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=np.log(np.concatenate([posterior_variance[1:2], posterior_variance[1:]])),
            mean_coef_x0=betas * np.sqrt(alpha_bar_prev) / (1 - alpha_bar),
            mean_coef_xt=(1 - alpha_bar_prev) * np.sqrt(alphas) / (1 - alpha_bar))
        for name, value in derived.items():
            object.__setattr__(self, name, value)  # the dataclass is frozen: set once, here

    @property
    def T(self) -> int:
        return len(self.betas)


def at_step(values: np.ndarray, t, like: Tensor) -> Tensor:
    """``values[t]``: a per-step schedule constant for each image's code step.

    ``values`` is a float64 schedule array of length T, ``t`` holds one code
    step per image (a Tensor, array or list of ints). The result is float32
    on ``like``'s device, shaped (N, 1, ..., 1) so that it broadcasts over
    ``like``'s images: ``at_step(schedule.sqrt_alpha_bar, t, x0) * x0``.
    """
    picked = tensor(values, dtype="float32", device=like.device)[t]
    return picked.reshape((-1,) + (1,) * (like.ndim - 1))


# ----------------------------------------------------------------------------
# Closed forms


def q_sample(schedule: Schedule, x0, t, noise):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. eq. 4).

    ``t`` holds one code step per image; ``at_step(values, t, x0)`` picks values[t]
    shaped to broadcast over the images.
    """
    ### BEGIN SOLUTION
    return at_step(schedule.sqrt_alpha_bar, t, x0) * x0 + at_step(schedule.sqrt_one_minus_alpha_bar, t, x0) * noise
    ### END SOLUTION


def x0_from_eps(schedule: Schedule, xt, t, eps):
    """Invert q_sample: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    ### BEGIN SOLUTION
    return (xt - at_step(schedule.sqrt_one_minus_alpha_bar, t, xt) * eps) / at_step(schedule.sqrt_alpha_bar, t, xt)
    ### END SOLUTION


def eps_from_x0(schedule: Schedule, xt, t, x0):
    """The noise that takes x_0 to x_t: (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    return (xt - at_step(schedule.sqrt_alpha_bar, t, xt) * x0) / at_step(schedule.sqrt_one_minus_alpha_bar, t, xt)


def v_target(schedule: Schedule, x0, t, eps):
    """The "velocity" v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022, sec. 4)."""
    return at_step(schedule.sqrt_alpha_bar, t, x0) * eps - at_step(schedule.sqrt_one_minus_alpha_bar, t, x0) * x0


def x0_from_v(schedule: Schedule, xt, t, v):
    """Invert :func:`v_target` given x_t: x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
    return at_step(schedule.sqrt_alpha_bar, t, xt) * xt - at_step(schedule.sqrt_one_minus_alpha_bar, t, xt) * v


def posterior_mean(schedule: Schedule, x0, xt, t):
    """Mean of q(x_{t-1} | x_t, x_0)   (Ho et al. eq. 7):

        beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
          + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t
    """
    ### BEGIN SOLUTION
    return at_step(schedule.mean_coef_x0, t, xt) * x0 + at_step(schedule.mean_coef_xt, t, xt) * xt
    ### END SOLUTION


VARIANCES = ("small", "large")


def reverse_variance(schedule: Schedule, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """sigma_t^2 of p(x_{t-1} | x_t) and its log, per code step (Ho et al. sec. 3.2).

    "small" is beta_tilde (the posterior variance), "large" is beta; "large"
    uses beta_tilde at the first step, as beta_1 there would add noise to the
    final image. The log uses beta_tilde_2 at the first step, where
    beta_tilde_1 = 0 (it sets the decoder's width). Nichol & Dhariwal's
    conventions, as in their code.
    """
    if kind not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {kind!r}")
    first = schedule.posterior_variance[1:2]
    variance = schedule.posterior_variance if kind == "small" else np.concatenate([first, schedule.betas[1:]])
    return variance, np.log(np.concatenate([first, variance[1:]]))


# ----------------------------------------------------------------------------
# Reverse steps


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


# ----------------------------------------------------------------------------
# Terms of the variational bound (Ho et al. eq. 5)


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp() - 1)


def prior_kl(schedule: Schedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)), elementwise:
    (v + m^2 - 1 - log v) / 2 with m = sqrt(alpha_bar_T) x_0, v = 1 - alpha_bar_T."""
    ab_T = float(schedule.alpha_bar[-1])
    return 0.5 * ((1 - ab_T) + ab_T * x0 * x0 - 1 - math.log(1 - ab_T))


def _standard_normal_cdf(x):
    """Phi(x), by the tanh approximation of Ho et al.'s code (absolute error < 3e-4)."""
    return 0.5 * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)).tanh())


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
    return where(x < -1 + half_bin, log_below, where(x > 1 - half_bin, log_above, log_bin))


def bound_steps(T: int, timesteps: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The code steps 1..T-1 of the bound's middle sum to evaluate, and the weight of each.

    ``None`` (or K >= T - 1): every step, weight 1. K steps estimate the sum
    without bias: the last step (t = T), whose term is the largest and most
    variable when the schedule clips beta near 1 (cosine), is always counted;
    K - 1 others are drawn at random and weighted (T - 2) / (K - 1).
    """
    if timesteps is None or timesteps >= T - 1:
        return np.arange(1, T), np.ones(T - 1)
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1 (or None for all {T - 1}), got {timesteps}")
    if timesteps == 1:  # one random step stands for all
        return rng.integers(1, T, size=1), np.array([float(T - 1)])
    drawn = rng.integers(1, T - 1, size=timesteps - 1)
    return np.append(drawn, T - 1), np.append(np.full(timesteps - 1, (T - 2) / (timesteps - 1)), 1.0)

"""The diffusion process without a network: schedules, index conventions, closed forms
against Monte Carlo, reverse variances, timestep spacing and the bound's step weights."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.engine.autograd import Tensor
from minigen.models.diffusion import (
    SCHEDULES, Schedule, at_step, bound_steps, ddim_timesteps, eps_from_x0, gaussian_kl, posterior_mean, prior_kl,
    q_sample, reverse_variance, v_target, x0_from_eps, x0_from_v)

T_OFFERED = [25, 50, 100, 250, 1000, 4000]


def ends_in_noise(betas) -> bool:
    """x_T must be nearly pure noise: sqrt(alpha_bar_T) < 0.01."""
    return math.sqrt(np.prod(1 - np.asarray(betas, dtype=np.float64))) < 0.01


# ----------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", T_OFFERED)
def test_every_schedule_ends_in_noise(name, T):
    schedule = Schedule.make(name, T)
    assert np.all(np.diff(schedule.alpha_bar) < 0), "alpha_bar must decrease"
    assert np.all((schedule.betas > 0) & (schedule.betas <= 0.999))
    assert ends_in_noise(schedule.betas)
    assert schedule.betas.dtype == np.float64


def test_the_unscaled_linear_pitfall_is_caught():
    assert not ends_in_noise(np.linspace(1e-4, 0.02, 100))


def test_cosine_matches_its_formula():
    T, s = 1000, 0.008
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = Schedule.make("cosine", T).alpha_bar
    t = np.arange(1, T + 1)  # code index t - 1 is the paper's t
    unclipped = slice(0, 900)
    np.testing.assert_allclose(alpha_bar[unclipped], (f(t) / f(0))[unclipped], rtol=1e-10)
    assert Schedule.make("cosine", T).betas.max() == pytest.approx(0.999)


def test_snr_and_posterior_variance_definitions():
    sch = Schedule.make("linear", 1000)
    np.testing.assert_allclose(sch.snr, sch.alpha_bar / (1 - sch.alpha_bar))
    assert np.all(sch.posterior_variance[1:] <= sch.betas[1:])


def test_precomputed_arrays_are_float64_and_follow_from_beta():
    sch = Schedule.make("cosine", 100)
    np.testing.assert_array_equal(sch.alpha_bar, np.cumprod(1 - sch.betas))
    np.testing.assert_array_equal(sch.sqrt_alpha_bar, np.sqrt(sch.alpha_bar))
    np.testing.assert_array_equal(sch.sqrt_one_minus_alpha_bar, np.sqrt(1 - sch.alpha_bar))
    np.testing.assert_array_equal(sch.posterior_log_variance_clipped[1:], np.log(sch.posterior_variance[1:]))
    assert sch.posterior_log_variance_clipped[0] == sch.posterior_log_variance_clipped[1]
    for name in ("alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr",
                 "posterior_variance", "posterior_log_variance_clipped", "mean_coef_x0", "mean_coef_xt"):
        values = getattr(sch, name)
        assert values.dtype == np.float64 and values.shape == (100,), name
    assert sch.T == 100 and sch.name == "cosine"


def test_index_conventions_at_both_ends():
    """Code step 0 is the paper's t = 1; the last code step is t = T."""
    sch = Schedule.make("linear", 1000)
    assert sch.alpha_bar_prev[0] == 1.0 and sch.alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert sch.posterior_variance[0] == 0.0
    assert sch.alpha_bar[-1] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
    x0, noise = Tensor(np.ones((2, 1, 1, 1), np.float32)), Tensor(np.zeros((2, 1, 1, 1), np.float32))
    xt = q_sample(sch, x0, Tensor(np.array([0, 999])), noise).numpy().ravel()
    np.testing.assert_allclose(xt, np.sqrt([sch.alpha_bar[0], sch.alpha_bar[-1]]), rtol=1e-6)
    assert ddim_timesteps(1000, 1000) == list(range(1000))
    assert ddim_timesteps(1000, 10)[0] == 0 and ddim_timesteps(1000, 10)[-1] == 900


def test_schedule_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown schedule 'cubic'"):
        Schedule.make("cubic", 100)
    with pytest.raises(ValueError, match="T >= 21"):
        Schedule.make("linear", 10)


def test_at_step_picks_each_images_value_in_float32_shaped_to_broadcast():
    values = np.linspace(0.0, 1.0, 5)
    like = mg.zeros(3, 2, 4, 4)
    picked = at_step(values, mg.tensor(np.array([4, 0, 2])), like)
    assert picked.shape == (3, 1, 1, 1) and picked.dtype == np.float32 and picked.device == like.device
    np.testing.assert_array_equal(picked.numpy().ravel(), np.float32([1.0, 0.0, 0.5]))
    assert at_step(values, [1, 1], mg.zeros(2, 3)).shape == (2, 1)


# ----------------------------------------------------------------------------
# Closed forms against Monte Carlo


def test_q_sample_moments_match_the_closed_form():
    sch = Schedule.make("cosine", 100)
    rng = np.random.default_rng(0)
    n, t = 200_000, 37
    x0 = Tensor(np.full((n, 1, 1, 1), 0.6, np.float32))
    xt = q_sample(sch, x0, Tensor(np.full(n, t)), Tensor(rng.standard_normal((n, 1, 1, 1)).astype(np.float32)))
    values = xt.numpy().ravel()
    assert values.mean() == pytest.approx(0.6 * math.sqrt(sch.alpha_bar[t]), abs=4e-3)
    assert values.var() == pytest.approx(1 - sch.alpha_bar[t], rel=1e-2)


def test_step_by_step_noising_matches_the_closed_form():
    sch = Schedule.make("linear", 50)
    rng = np.random.default_rng(1)
    x = np.full(1_000_000, -0.4)
    for beta in sch.betas[:20]:
        x = np.sqrt(1 - beta) * x + np.sqrt(beta) * rng.standard_normal(x.shape)
    assert x.mean() == pytest.approx(-0.4 * math.sqrt(sch.alpha_bar[19]), abs=5e-3)
    assert x.var() == pytest.approx(1 - sch.alpha_bar[19], rel=2e-2)


def test_posterior_mean_equals_the_epsilon_form_of_eq_11():
    sch = Schedule.make("linear", 1000)
    rng = np.random.default_rng(2)
    t = Tensor(np.array([0, 1, 500, 999]))
    xt = Tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    eps = Tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    mean = posterior_mean(sch, x0_from_eps(sch, xt, t, eps), xt, t).numpy()
    a, b, ab = (v[t.data].reshape(-1, 1, 1, 1) for v in (sch.alphas, sch.betas, sch.alpha_bar))
    eq11 = (xt.numpy() - b / np.sqrt(1 - ab) * eps.numpy()) / np.sqrt(a)
    np.testing.assert_allclose(mean, eq11, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(eps_from_x0(sch, xt, t, x0_from_eps(sch, xt, t, eps)).numpy(), eps.numpy(),
                               rtol=1e-3, atol=2e-3)


def test_v_target_and_x0_from_v_invert_each_other():
    sch = Schedule.make("cosine", 100)
    rng = np.random.default_rng(6)
    t = Tensor(np.array([0, 40, 99]))
    x0 = Tensor(rng.uniform(-1, 1, (3, 1, 2, 2)).astype(np.float32))
    eps = Tensor(rng.standard_normal((3, 1, 2, 2)).astype(np.float32))
    xt = q_sample(sch, x0, t, eps)
    np.testing.assert_allclose(x0_from_v(sch, xt, t, v_target(sch, x0, t, eps)).numpy(), x0.numpy(), atol=1e-5)


def test_posterior_matches_monte_carlo():
    """Sample (x_{t-1}, x_t) from the forward process, keep pairs with x_t near a value,
    and compare x_{t-1}'s mean and variance with q(x_{t-1} | x_t, x_0)."""
    sch = Schedule.make("linear", 100)
    rng = np.random.default_rng(3)
    t, x0, n = 30, 0.5, 2_000_000
    prev = math.sqrt(sch.alpha_bar[t - 1]) * x0 + math.sqrt(1 - sch.alpha_bar[t - 1]) * rng.standard_normal(n)
    xt = math.sqrt(sch.alphas[t]) * prev + math.sqrt(sch.betas[t]) * rng.standard_normal(n)
    near = np.abs(xt - 0.3) < 0.01
    mean = sch.mean_coef_x0[t] * x0 + sch.mean_coef_xt[t] * 0.3
    assert prev[near].mean() == pytest.approx(mean, abs=5e-3)
    assert prev[near].var() == pytest.approx(sch.posterior_variance[t], rel=5e-2)


def test_gaussian_kl_matches_monte_carlo():
    rng = np.random.default_rng(4)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = m1 + math.sqrt(0.5) * rng.standard_normal(1_000_000)
    log_p = -0.5 * (np.log(2 * np.pi) + lv1 + (x - m1) ** 2 / 0.5)
    log_q = -0.5 * (np.log(2 * np.pi) + lv2 + (x - m2) ** 2 / 1.7)
    t = lambda v: Tensor(np.array(v, np.float64))
    kl = gaussian_kl(t(m1), t(lv1), t(m2), t(lv2)).item()
    assert kl == pytest.approx((log_p - log_q).mean(), abs=3e-3)


def test_prior_kl_is_the_gaussian_kl_against_the_standard_normal():
    sch = Schedule.make("linear", 50)
    x0 = mg.tensor(np.array([-1.0, 0.0, 0.7]), dtype="float64")
    ab = sch.alpha_bar[-1]
    constant = lambda value: mg.full(3, value, dtype="float64")
    expected = gaussian_kl(math.sqrt(ab) * x0, constant(math.log(1 - ab)), constant(0.0), constant(0.0))
    np.testing.assert_allclose(prior_kl(sch, x0).numpy(), expected.numpy(), rtol=1e-9, atol=1e-15)


# ----------------------------------------------------------------------------
# Reverse variances, DDIM spacing, the bound's steps


def test_reverse_variances_small_and_large():
    sch = Schedule.make("cosine", 20)
    small, log_small = reverse_variance(sch, "small")
    large, log_large = reverse_variance(sch, "large")
    np.testing.assert_array_equal(small, sch.posterior_variance)
    np.testing.assert_array_equal(log_small, sch.posterior_log_variance_clipped)
    np.testing.assert_array_equal(large[1:], sch.betas[1:])
    assert large[0] == small[1], "the first step uses beta_tilde, not beta_1"
    np.testing.assert_array_equal(log_large, np.log(large))
    with pytest.raises(ValueError, match="variance must be one of"):
        reverse_variance(sch, "learned")


def test_quadratic_spacing_packs_steps_near_the_data():
    steps = ddim_timesteps(1000, 20, "quadratic")
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) <= 20
    gaps = np.diff(steps)
    assert gaps[0] < gaps[-1]
    with pytest.raises(ValueError, match="spacing must be 'uniform' or 'quadratic'"):
        ddim_timesteps(1000, 20, "cubic")


@pytest.mark.parametrize("timesteps", [1, 2, 4])
def test_bound_estimate_weights_every_step_once_on_average(timesteps):
    """The K-step estimate is unbiased: over many draws each of the T - 1 steps counts once on average,
    and the last step (the largest term under the cosine schedule) is counted in every draw when K > 1."""
    T = 20
    rng = np.random.default_rng(0)
    counted = np.zeros(T)
    draws = 20_000
    for _ in range(draws):
        steps, weights = bound_steps(T, timesteps, rng)
        np.add.at(counted, steps, weights)
        assert timesteps == 1 or (T - 1) in steps
    np.testing.assert_allclose(counted[1:] / draws, 1.0, atol=0.06)
    assert counted[0] == 0, "step 0 is the decoder's, not the middle sum's"
    assert list(bound_steps(T, None, rng)[0]) == list(range(1, T))
    with pytest.raises(ValueError, match="timesteps must be at least 1"):
        bound_steps(T, 0, rng)

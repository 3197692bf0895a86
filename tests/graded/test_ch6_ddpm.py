"""Graded checks of chapter 6: DDPM's reverse process and DDIM."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.models.diffusion import Schedule, q_sample


def images_and_steps(seed=0):
    rng = np.random.default_rng(seed)
    x0 = mg.tensor(rng.uniform(-1, 1, (4, 1, 3, 3)).astype(np.float32))
    eps = mg.tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    return x0, eps, mg.tensor(np.array([0, 1, 30, 99]))


@pytest.mark.task6_1
def test_x0_from_eps_inverts_q_sample(graded, unchanged):
    schedule = Schedule.make("linear", 100)
    x0, eps, t = images_and_steps()
    xt = q_sample(schedule, x0, t, eps)
    with unchanged(schedule, xt, t, eps):  # the sampler still needs x_t after predicting x_0
        out = graded.x0_from_eps(schedule, xt, t, eps)
    np.testing.assert_allclose(out.numpy(), x0.numpy(), atol=2e-4)


@pytest.mark.task6_1
def test_x0_from_eps_closed_form(graded, unchanged):
    schedule = Schedule.make("cosine", 100)
    x0, eps, t = images_and_steps(1)
    ab = schedule.alpha_bar[t.numpy()].reshape(4, 1, 1, 1)
    expected = (x0.numpy() - np.sqrt(1 - ab) * eps.numpy()) / np.sqrt(ab)
    with unchanged(schedule, x0, t, eps):
        out = graded.x0_from_eps(schedule, x0, t, eps)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.task6_2
def test_posterior_mean_closed_form(graded, unchanged):
    schedule = Schedule.make("linear", 100)
    x0, xt, t = images_and_steps(2)
    steps = t.numpy()
    beta, ab = schedule.betas[steps], schedule.alpha_bar[steps]
    ab_prev = np.where(steps > 0, schedule.alpha_bar[np.maximum(steps - 1, 0)], 1.0)
    coef_x0 = (beta * np.sqrt(ab_prev) / (1 - ab)).reshape(4, 1, 1, 1)
    coef_xt = ((1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab)).reshape(4, 1, 1, 1)
    with unchanged(schedule, x0, xt, t):
        out = graded.posterior_mean(schedule, x0, xt, t)
    np.testing.assert_allclose(out.numpy(), coef_x0 * x0.numpy() + coef_xt * xt.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.task6_2
def test_posterior_mean_at_the_first_step_is_x0(graded):
    # alpha_bar_prev = 1 at code step 0: q(x_{t-1} | x_t, x_0) is x_0 itself.
    schedule = Schedule.make("cosine", 50)
    x0, xt, _ = images_and_steps(3)
    t = mg.tensor(np.zeros(4, dtype=np.int64))
    np.testing.assert_allclose(graded.posterior_mean(schedule, x0, xt, t).numpy(), x0.numpy(), atol=1e-5)


class Noise:
    """draw_noise for the tests: a fixed z, and a count of the draws."""

    def __init__(self, z):
        self.z, self.draws = z, 0

    def __call__(self):
        self.draws += 1
        return self.z


@pytest.mark.task6_3
def test_ancestral_step_adds_noise_except_at_the_last_step(graded, unchanged):
    mean = mg.tensor(np.array([[0.5, -0.25]], dtype=np.float32))
    variance = mg.tensor(np.array([[0.04]], dtype=np.float32))
    noise = Noise(mg.tensor(np.array([[1.0, -2.0]], dtype=np.float32)))
    with unchanged(mean, variance, noise.z):
        out = graded.ancestral_step(mean, variance, 1, noise)
    np.testing.assert_allclose(out.numpy(), [[0.7, -0.65]], rtol=1e-6)
    assert noise.draws == 1
    np.testing.assert_array_equal(graded.ancestral_step(mean, variance, 0, noise).numpy(), mean.numpy())
    assert noise.draws == 1, "code step 0 (the paper's t = 1) adds no noise and draws none"


@pytest.mark.task6_3
def test_ancestral_step_at_every_step(graded):
    mean = mg.tensor(np.zeros((1, 3), dtype=np.float32))
    variance = mg.tensor(np.full((1, 1), 0.25, dtype=np.float32))
    for t in range(1, 6):
        noise = Noise(mg.tensor(np.ones((1, 3), dtype=np.float32)))
        np.testing.assert_allclose(graded.ancestral_step(mean, variance, t, noise).numpy(), 0.5, rtol=1e-6)


@pytest.mark.task6_4
def test_deterministic_ddim_step(graded):
    x0 = mg.tensor(np.array([0.5, -1.0], dtype=np.float32))
    eps = mg.tensor(np.array([1.0, 2.0], dtype=np.float32))
    noise = Noise(mg.tensor(np.array([10.0, 10.0], dtype=np.float32)))
    out = graded.ddim_step(x0, eps, 0.5, 0.8, 0.0, noise).numpy()
    np.testing.assert_allclose(out, math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2) * eps.numpy(), rtol=1e-6)
    assert noise.draws == 0
    np.testing.assert_allclose(graded.ddim_step(x0, eps, 0.5, 1.0, 0.0, noise).numpy(), x0.numpy(), rtol=1e-6)


@pytest.mark.task6_4
def test_stochastic_ddim_step(graded, unchanged):
    x0 = mg.tensor(np.array([0.5, -1.0], dtype=np.float32))
    eps = mg.tensor(np.array([1.0, 2.0], dtype=np.float32))
    z = mg.tensor(np.array([-1.0, 0.5], dtype=np.float32))
    sigma2 = (1 - 0.8) / (1 - 0.5) * (1 - 0.5 / 0.8)  # eta = 1: 0.15
    with unchanged(x0, eps, z):
        out = graded.ddim_step(x0, eps, 0.5, 0.8, 1.0, Noise(z)).numpy()
    expected = math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2 - sigma2) * eps.numpy() + math.sqrt(sigma2) * z.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    half = graded.ddim_step(x0, eps, 0.5, 0.8, 0.5, Noise(z)).numpy()
    expected = math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2 - sigma2 / 4) * eps.numpy() + math.sqrt(sigma2) / 2 * z.numpy()
    np.testing.assert_allclose(half, expected, rtol=1e-5)

"""Graded checks of chapter 5: noise schedules and the forward process."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.models.diffusion import Schedule


@pytest.mark.task5_1
def test_linear_schedule_of_ho_et_al(graded):
    betas = graded.linear_betas(1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-12)


@pytest.mark.task5_1
def test_linear_schedule_scales_with_T(graded):
    betas = graded.linear_betas(100)
    assert betas[0] == pytest.approx(1e-3) and betas[-1] == pytest.approx(0.2)
    # The total noise stays that of T = 1000 (without the scaling sqrt(alpha_bar_T) would be ~0.6 here).
    assert betas.sum() == pytest.approx(10.05, rel=1e-9)  # (1e-4 + 0.02) / 2 * 1000, for every T
    assert math.sqrt(np.prod(1 - betas)) < 0.01


@pytest.mark.task5_1
@pytest.mark.parametrize("T", [300, 750])
def test_linear_schedule_for_a_T_that_does_not_divide_1000(graded, T):
    betas = graded.linear_betas(T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, T) * (1000 / T), rtol=1e-12)
    assert betas.sum() == pytest.approx(10.05, rel=1e-9)


@pytest.mark.task5_2
def test_betas_from_a_linear_alpha_bar(graded):
    # alpha_bar = 1 - u at u = 0, 1/4, ..., 1: ratios 3/4, 2/3, 1/2, 0; the last beta is clipped.
    betas = graded.betas_from_alpha_bar(lambda u: 1 - u, 4)
    np.testing.assert_allclose(betas, [0.25, 1 / 3, 0.5, 0.999], rtol=1e-12)


@pytest.mark.task5_2
def test_betas_from_alpha_bar_normalise_and_clip(graded):
    betas = graded.betas_from_alpha_bar(lambda u: 2 * np.exp(-5 * u**2), 50)
    ab = np.exp(-5 * (np.arange(51) / 50) ** 2)
    np.testing.assert_allclose(betas, np.minimum(1 - ab[1:] / ab[:-1], 0.999), rtol=1e-10)
    assert graded.betas_from_alpha_bar(lambda u: np.cos(u * np.pi / 2) ** 2, 10)[-1] == 0.999


def cosine_alpha_bar(u, s=0.008):
    return np.cos((u + s) / (1 + s) * np.pi / 2) ** 2


@pytest.mark.task5_3
def test_cosine_schedule_of_nichol_and_dhariwal(graded):
    T = 1000
    betas = graded.cosine_betas(T)
    ab = cosine_alpha_bar(np.arange(T + 1) / T)
    # All but the last step: the last beta is where the clip acts (task 5.2).
    np.testing.assert_allclose(betas[:-1], (1 - ab[1:] / ab[:-1])[:-1], rtol=1e-9)
    assert betas[0] == pytest.approx(1 - cosine_alpha_bar(1 / T) / cosine_alpha_bar(0.0), rel=1e-9)
    # alpha_bar(T) is ~0, so the last beta is ~1 unless clipped (the check runs with the reference
    # betas_from_alpha_bar, so a mistake in task 5.2 does not cost this task too).
    assert betas[-1] == 0.999, f"the last beta is {betas[-1]!r}: clip at 0.999 (betas_from_alpha_bar does)"


@pytest.mark.task5_3
def test_cosine_schedule_with_another_offset(graded):
    betas = graded.cosine_betas(20, s=0.1)
    ab = cosine_alpha_bar(np.arange(21) / 20, s=0.1)
    np.testing.assert_allclose(betas[:-1], (1 - ab[1:] / ab[:-1])[:-1], rtol=1e-9)


@pytest.mark.task5_4
def test_q_sample_closed_form(graded, unchanged):
    schedule = Schedule.make("linear", 100)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    noise = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    t = np.array([0, 10, 50, 99])
    with unchanged(schedule, x0, t, noise):
        xt = graded.q_sample(schedule, mg.tensor(x0), mg.tensor(t), mg.tensor(noise))
    ab = schedule.alpha_bar[t].reshape(4, 1, 1, 1)
    np.testing.assert_allclose(xt.numpy(), np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise, rtol=1e-5, atol=1e-6)


@pytest.mark.task5_4
def test_q_sample_statistics(graded):
    schedule = Schedule.make("cosine", 50)
    x0 = mg.tensor(np.full((20000, 1, 1, 1), 0.8, dtype=np.float32))
    t = mg.tensor(np.full(20000, 25))
    noise = mg.tensor(np.random.default_rng(1).standard_normal((20000, 1, 1, 1)).astype(np.float32))
    xt = graded.q_sample(schedule, x0, t, noise).numpy()
    ab = schedule.alpha_bar[25]
    assert xt.mean() == pytest.approx(math.sqrt(ab) * 0.8, abs=0.03)
    assert xt.var() == pytest.approx(1 - ab, rel=0.05)

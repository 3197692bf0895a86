"""Graded checks of chapter 4: PixelCNN likelihood, bits/dim and sampling."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.course.chain_rule import all_images
from minigen.models import pixelcnn as reference


def log_softmax(logits, axis):
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.task4_1
def test_log_prob_picks_the_target_levels(graded, unchanged):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)  # N, K, C, H, W
    x = rng.integers(0, 3, size=(2, 2, 2, 2))
    with unchanged(logits, x):
        log_p = graded.categorical_log_prob(mg.tensor(logits), x)
    picked = np.take_along_axis(log_softmax(logits.astype(np.float64), 1), x[:, None], axis=1)
    np.testing.assert_allclose(log_p.numpy(), picked.reshape(2, -1).sum(axis=1), rtol=1e-5)


@pytest.mark.task4_1
def test_probabilities_of_all_2x2_binary_images_sum_to_one(graded):
    logits = np.random.default_rng(1).standard_normal((1, 2, 1, 2, 2)).astype(np.float32)
    images = all_images(4).reshape(16, 1, 2, 2)
    log_p = graded.categorical_log_prob(mg.tensor(np.repeat(logits, 16, axis=0)), images)
    assert np.exp(log_p.numpy().astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.task4_1
def test_log_prob_gradient_reaches_the_logits(graded, unchanged):
    rng = np.random.default_rng(3)
    array = rng.standard_normal((2, 4, 1, 2, 3)).astype(np.float32)
    x = rng.integers(0, 4, size=(2, 1, 2, 3))
    logits = mg.tensor(array, requires_grad=True)
    with unchanged(logits, x):
        log_p = graded.categorical_log_prob(logits, x)
    assert getattr(log_p, "requires_grad", False), \
        "log p does not require grad: compute it with Tensor ops on the logits, so training can backpropagate"
    log_p.sum().backward()
    assert logits.grad is not None, "no gradient reached the logits: keep log p inside the graph (Tensor ops)"
    one_hot = (np.arange(4).reshape(1, 4, 1, 1, 1) == x[:, None]).astype(np.float64)
    expected = one_hot - np.exp(log_softmax(array.astype(np.float64), 1))  # d log p / d logits
    np.testing.assert_allclose(logits.grad, expected, atol=1e-5)


@pytest.mark.task4_2
def test_bits_per_dim(graded):
    assert graded.bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-12)
    assert graded.bits_per_dim(100.0, 784) == pytest.approx(100.0 / (784 * math.log(2)), rel=1e-12)


@pytest.mark.task4_2
def test_bits_per_dim_of_large_losses(graded, unchanged):
    # An untrained model on a large image: 1e5 nats, where exp(nats) overflows.
    assert graded.bits_per_dim(1e5, 784) == pytest.approx(1e5 / (784 * math.log(2)), rel=1e-12)
    nats = np.array([1e5, 3e5])
    with unchanged(nats):
        bits = graded.bits_per_dim(nats, 3072)
    np.testing.assert_allclose(bits, nats / (3072 * math.log(2)), rtol=1e-12)


@pytest.mark.task4_3
def test_sample_levels_by_hand(graded):
    logits = mg.tensor(np.log(np.tile([[0.2, 0.3, 0.5]], (6, 1))))
    uniform = np.array([0.0, 0.19, 0.21, 0.49, 0.51, 0.99])
    np.testing.assert_array_equal(graded.sample_levels(logits, uniform), [0, 0, 1, 1, 2, 2])


@pytest.mark.task4_3
def test_sample_levels_stays_in_range_and_matches_the_reference(graded):
    rng = np.random.default_rng(2)
    logits = mg.tensor(rng.standard_normal((5000, 7)) * 3)
    uniform = np.concatenate([rng.random(4999), [np.nextafter(1.0, 0.0)]])
    levels = np.asarray(graded.sample_levels(logits, uniform))
    assert levels.min() >= 0 and levels.max() <= 6
    np.testing.assert_array_equal(levels, reference.sample_levels(logits, uniform))


@pytest.mark.task4_3
def test_sample_levels_with_large_logits(graded, unchanged):
    # Only differences of logits matter: around +-1000 a softmax must subtract the max before exp.
    probs = np.log([0.2, 0.3, 0.5])
    uniform = np.array([0.0, 0.19, 0.21, 0.49, 0.51, 0.99])
    for offset in (1000.0, -1000.0):
        logits = mg.tensor(np.tile(probs + offset, (6, 1)).astype(np.float32))
        with unchanged(logits, uniform):
            levels = graded.sample_levels(logits, uniform)
        np.testing.assert_array_equal(levels, [0, 0, 1, 1, 2, 2], err_msg=f"logits around {offset:g}")


class CountingModel:
    """Logits that depend on everything drawn so far, so a wrong order gives other images."""

    def __init__(self, levels):
        self.levels, self.calls = levels, 0

    def __call__(self, x):
        self.calls += 1
        n, c, h, w = x.shape
        weights = np.arange(1, c * h * w + 1).reshape(1, c, h, w)
        score = (x * weights).sum(axis=(1, 2, 3)).reshape(n, 1, 1, 1, 1)
        k = np.arange(self.levels).reshape(1, -1, 1, 1, 1)
        positions = np.arange(c * h * w).reshape(1, 1, c, h, w)
        return mg.tensor(np.cos(score * 0.7 + k * 1.3 + positions * 0.4).astype(np.float32) * 3)


def run_loop(loop, temperature, seed=0, shape=(4, 2, 3, 3)):
    x = np.zeros(shape, dtype=np.int64)
    uniform = np.random.default_rng(seed).random(x.shape)
    model, drawn = CountingModel(levels=4), []
    before = uniform.copy()
    loop(model, x, uniform, temperature, lambda c, i, j: drawn.append((c, i, j)))
    np.testing.assert_array_equal(uniform, before, err_msg="the uniform numbers were changed in place")
    return x, model.calls, drawn


@pytest.mark.task4_4
def test_sampling_loop_visits_sub_pixels_in_raster_and_colour_order(graded):
    x, calls, drawn = run_loop(graded.naive_sampling_loop, 1.0)
    assert drawn == [(c, i, j) for i in range(3) for j in range(3) for c in range(2)]
    assert calls == 18, "one network evaluation per sub-pixel"
    np.testing.assert_array_equal(x, run_loop(reference.naive_sampling_loop, 1.0)[0])


@pytest.mark.task4_4
def test_sampling_loop_on_wide_colour_images(graded):
    shape = (3, 3, 2, 4)  # C = 3 colours, H = 2 rows, W = 4 columns
    x, calls, drawn = run_loop(graded.naive_sampling_loop, 1.0, seed=2, shape=shape)
    assert drawn == [(c, i, j) for i in range(2) for j in range(4) for c in range(3)]
    assert calls == 24, "one network evaluation per sub-pixel"
    np.testing.assert_array_equal(x, run_loop(reference.naive_sampling_loop, 1.0, seed=2, shape=shape)[0])


@pytest.mark.task4_4
def test_sampling_loop_applies_the_temperature(graded):
    for temperature in (0.3, 2.0):
        np.testing.assert_array_equal(run_loop(graded.naive_sampling_loop, temperature, seed=1)[0],
                                      run_loop(reference.naive_sampling_loop, temperature, seed=1)[0])

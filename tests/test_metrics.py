"""Sample-quality measures: exact Frechet distances, class balance, and their behaviour on digits."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.data import ImageSet, load_digits
from minigen.models.classifier import train_classifier
from minigen.metrics import bits_per_dim, class_balance, frechet_distance, independent_pixel_nll, sample_quality, sqrtm_psd


def test_sqrtm_of_a_psd_matrix():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    m = a @ a.T
    root = sqrtm_psd(m)
    np.testing.assert_allclose(root @ root, m, atol=1e-10)


def test_frechet_distance_of_gaussians_has_its_closed_form():
    """For N(mu1, s1^2 I) and N(mu2, s2^2 I) in d dims: |mu1 - mu2|^2 + d (s1 - s2)^2."""
    rng = np.random.default_rng(1)
    d, n = 3, 400_000
    a = rng.standard_normal((n, d)) * 1.0 + 0.5
    b = rng.standard_normal((n, d)) * 2.0 - 0.5
    assert frechet_distance(a, b) == pytest.approx(d * 1.0 + d * 1.0, rel=2e-2)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_class_balance_entropy():
    uniform = class_balance(np.repeat(np.arange(10), 5))
    assert uniform["entropy_bits"] == pytest.approx(math.log2(10))
    single = class_balance(np.zeros(20, dtype=np.int64))
    assert single["entropy_bits"] == 0 and single["counts"][0] == 20


def test_real_digits_score_better_than_noise_and_than_one_repeated_digit():
    """Held-out real digits are close to the test split; noise and mode collapse are far."""
    real = load_digits("train").images[:400]
    noise = np.random.default_rng(0).integers(0, 17, real.shape)
    collapsed = np.repeat(real[:1], 400, axis=0)
    scores = {name: sample_quality(images, 17) for name, images in
              {"real": real, "noise": noise, "collapsed": collapsed}.items()}
    fd = {name: s["frechet_distance"] for name, s in scores.items()}
    assert fd["real"] < 0.5 * fd["noise"] and fd["real"] < 0.5 * fd["collapsed"], fd
    assert scores["real"]["class_balance"]["entropy_bits"] > 3.2
    assert scores["collapsed"]["class_balance"]["entropy_bits"] == 0


def test_the_classifier_depends_on_its_seed_only_and_leaves_the_callers_stream_alone():
    digits = load_digits("train")
    mg.manual_seed(1)
    first, _ = train_classifier(digits, epochs=1, seed=3, progress=False)
    after_first = mg.randn(3).numpy()
    mg.manual_seed(2)
    mg.randn(5)  # a different stream state before the call
    second, _ = train_classifier(digits, epochs=1, seed=3, progress=False)
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[name], value, err_msg=name)
    mg.manual_seed(1)
    assert np.array_equal(mg.randn(3).numpy(), after_first), "the caller's random stream is untouched"


def test_independent_pixels_fit_counts_with_add_one_smoothing():
    train_set = ImageSet(np.array([[[[0, 1]]], [[[0, 0]]]], dtype=np.uint8), np.zeros(2, int), 2)
    test_set = ImageSet(np.array([[[[1, 1]]]], dtype=np.uint8), np.zeros(1, int), 2)
    # pixel 0: one 1 in two images -> (0 + 1) / (2 + 2); pixel 1: (1 + 1) / (2 + 2)
    assert independent_pixel_nll(train_set, test_set) == pytest.approx(-np.log(1 / 4) - np.log(2 / 4))


def test_bits_per_dim_converts_nats():
    assert bits_per_dim(64 * np.log(2), 64) == pytest.approx(1.0)

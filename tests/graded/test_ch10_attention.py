"""Graded checks of chapter 10: the causal attention mask and one key/value-cached attention step."""

import numpy as np
import pytest

import minigen as mg
from minigen.models import pixelsnail as reference


def strictly_earlier(height, width):
    """The mask written out pixel pair by pixel pair: (p, q) is True when q comes before p."""
    places = height * width
    return np.array([[q < p for q in range(places)] for p in range(places)])


@pytest.mark.task10_1
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 2), (4, 4), (1, 5)])
def test_the_mask_allows_exactly_the_strictly_earlier_pixels(graded, size):
    mask = np.asarray(graded.earlier_pixels(*size, np))
    height, width = size
    assert mask.shape == (height * width, height * width), "one row per query pixel, one column per key pixel"
    assert mask.dtype == bool, "a boolean mask: True where the query may attend"
    np.testing.assert_array_equal(mask, strictly_earlier(height, width))


@pytest.mark.task10_1
def test_the_first_pixel_attends_to_nothing_and_no_pixel_to_itself(graded):
    mask = np.asarray(graded.earlier_pixels(3, 4, np))
    assert not mask[0].any(), "the first pixel has no earlier pixel"
    assert not np.diagonal(mask).any(), "a key reads its own whole pixel: the diagonal must be False"
    np.testing.assert_array_equal(mask.sum(axis=1), np.arange(12))


def random_cache(seed, n=2, heads=3, places=5, dk=4, dv=6, scale=1.0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n, heads, dk)) * scale).astype(np.float32)
    keys = (rng.standard_normal((n, heads, places, dk)) * scale).astype(np.float32)
    values = rng.standard_normal((n, heads, places, dv)).astype(np.float32)
    return q, keys, values


def attention_in_float64(q, keys, values):
    scores = np.einsum("nhd,nhpd->nhp", q.astype(np.float64), keys.astype(np.float64)) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("nhp,nhpd->nhd", weights, values.astype(np.float64))


@pytest.mark.task10_2
@pytest.mark.parametrize("places", [1, 2, 7])
def test_one_step_is_softmax_of_scaled_scores_times_values(graded, unchanged, places):
    q, keys, values = random_cache(places, places=places)
    with unchanged(q, keys, values):
        out = graded.attend_to_cache(mg.tensor(q), mg.tensor(keys), mg.tensor(values))
    assert tuple(out.shape) == (2, 3, 6), "(N, heads, dv): one output per image and head"
    assert out.dtype == np.float32, "float32 in, float32 out"
    np.testing.assert_allclose(out.numpy(), attention_in_float64(q, keys, values), rtol=1e-4, atol=1e-5)


@pytest.mark.task10_2
def test_an_empty_cache_gives_zeros(graded):
    q, keys, values = random_cache(0, places=0)
    out = graded.attend_to_cache(mg.tensor(q), mg.tensor(keys), mg.tensor(values))
    assert tuple(out.shape) == (2, 3, 6), "the first pixel: zeros of shape (N, heads, dv)"
    assert not np.asarray(out.numpy()).any()


@pytest.mark.task10_2
def test_large_scores_do_not_overflow(graded):
    q, keys, values = random_cache(1, scale=40.0)
    out = graded.attend_to_cache(mg.tensor(q), mg.tensor(keys), mg.tensor(values))
    assert np.isfinite(out.numpy()).all(), "shift the scores by their maximum before exp"
    np.testing.assert_allclose(out.numpy(), attention_in_float64(q, keys, values), rtol=1e-3, atol=1e-4)


@pytest.mark.task10_2
def test_the_gradient_reaches_the_query_keys_and_values(graded):
    q, keys, values = random_cache(2)
    ours = [mg.tensor(a, requires_grad=True) for a in (q, keys, values)]
    theirs = [mg.tensor(a, requires_grad=True) for a in (q, keys, values)]
    weights = mg.tensor(np.random.default_rng(3).standard_normal((2, 3, 6)).astype(np.float32))
    (graded.attend_to_cache(*ours) * weights).sum().backward()
    (reference.attend_to_cache(*theirs) * weights).sum().backward()
    for name, mine, right in zip(("q", "keys", "values"), ours, theirs):
        assert mine.grad is not None, f"no gradient reached {name}: compute the step with Tensor ops"
        np.testing.assert_allclose(mine.grad, right.grad, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.task10_2
def test_the_cached_sampler_draws_the_naive_samplers_images_with_your_step(graded, monkeypatch):
    mg.manual_seed(0)
    model = reference.PixelSNAIL(channels=3, levels=3, hidden=6, blocks=1, residual_layers=1,
                                 key_channels=4, value_channels=5, num_classes=2)
    labels = [0, 1]
    naive = model.sample(2, (2, 3), labels=labels, seed=4)
    monkeypatch.setattr(reference, "attend_to_cache", graded.attend_to_cache)
    cached = model.sample(2, (2, 3), labels=labels, seed=4, cached=True)
    np.testing.assert_array_equal(cached, naive)

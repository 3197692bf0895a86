"""The bundled digits: fixed split, levels, labels, and batching."""

import numpy as np
import pytest

from minigen.data import batches, load_digits, quantize


def test_digits_split_is_fixed_and_disjoint():
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.images.shape[1:] == (1, 8, 8) and train.images.max() == 16
    np.testing.assert_array_equal(load_digits("test").labels, test.labels)
    everything = load_digits("all")
    together = sorted(r.tobytes() for r in np.concatenate([train.images, test.images]))
    assert together == sorted(r.tobytes() for r in everything.images), "the split must partition the set"
    assert set(np.unique(test.labels)) == set(range(10))


def test_quantize_maps_ends_to_ends():
    levels = np.arange(17, dtype=np.uint8)
    binary = quantize(levels, 17, 2)
    np.testing.assert_array_equal(binary, (levels >= 8).astype(np.uint8))
    assert load_digits("train", levels=4).images.max() == 3
    with pytest.raises(ValueError, match="at least 2, got 1"):
        quantize(levels, 17, 1)


def test_batches_cover_everything_once():
    x, y = np.arange(10)[:, None], np.arange(10)
    seen = [b[1].numpy() for b in batches((x, y), 4, seed=1)]
    assert [len(s) for s in seen] == [4, 4, 2]
    assert sorted(np.concatenate(seen)) == list(range(10))
    again = [b[1].numpy() for b in batches((x, y), 4, seed=1)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, again))
    with pytest.raises(ValueError, match=r"different lengths \[10, 3\]"):
        next(batches((x, y[:3]), 4))

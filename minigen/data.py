"""Data sets and mini-batches.

The offline default is scikit-learn's bundled 8x8 handwritten digits: 1,797
images with 17 grey levels (0..16), shipped inside the package, so every
demo, chapter and test runs without a network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import backend
from .autograd import Tensor

DIGITS_LEVELS = 17
SPLIT_SEED = 0  # the fixed train/test split of the digits
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class ImageSet:
    """Images as integer levels 0..levels-1, shape (N, C, H, W), with labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    levels: int

    def __len__(self) -> int:
        return len(self.images)

    def scaled(self, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """The images as float32 in [low, high] (level 0 -> low, top level -> high)."""
        unit = self.images.astype(np.float32) / (self.levels - 1)
        return (low + (high - low) * unit).astype(np.float32)


def quantize(images: np.ndarray, levels_in: int, levels_out: int) -> np.ndarray:
    """Map integer levels 0..levels_in-1 evenly onto 0..levels_out-1 (rounding)."""
    if levels_out < 2:
        raise ValueError(f"quantize: levels_out must be at least 2, got {levels_out}")
    scaled = np.floor(images.astype(np.float64) * (levels_out - 1) / (levels_in - 1) + 0.5)
    return scaled.astype(np.uint8)


def load_digits(split: str = "train", levels: int = DIGITS_LEVELS) -> ImageSet:
    """The 8x8 digits (1 channel), split 80/20 by a fixed seed, at ``levels`` grey levels."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"load_digits: split must be 'train', 'test' or 'all', got {split!r}")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    if levels != DIGITS_LEVELS:
        images = quantize(images, DIGITS_LEVELS, levels)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_test = int(round(TEST_FRACTION * len(images)))
    index = {"test": order[:n_test], "train": order[n_test:], "all": np.arange(len(images))}[split]
    return ImageSet(images[index], labels[index], levels)


def batches(arrays, batch_size: int, shuffle: bool = True, seed: int | None = None,
            device: str = "cpu", drop_last: bool = False):
    """Yield tuples of Tensors, one mini-batch at a time, from equal-length arrays.

    Shuffling uses its own generator seeded by ``seed`` (or minigen's seeded
    CPU generator), so an epoch's order can be repeated exactly.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"batches: arrays have different lengths {[len(a) for a in arrays]}")
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed) if seed is not None else backend.generator("cpu")
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        yield tuple(Tensor(backend.to_device(np.ascontiguousarray(a[index]), device)) for a in arrays)

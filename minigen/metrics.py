"""Every number the book reports, in one place: likelihoods in bits per
dimension, the independent-pixel baseline they must beat, and sample quality.

Sample quality without the internet: a digit classifier trained with the
engine itself supplies the features and the class predictions.

* Frechet distance (as in FID, Heusel et al. 2017, eq. 6) between real and
  generated images in the classifier's penultimate features: the distance of
  two Gaussians fitted to the two feature clouds,
      |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r^1/2 S_g S_r^1/2)^1/2).
  0 for identical distributions; it grows with blur, artefacts and missing modes.
* Class balance: the histogram of predicted classes of generated images, and
  its entropy in bits (log2(10) = 3.32 when all ten digits are equally common).

The numbers only mean something relative to each other on the same data
and sample size: the reference point is what as many real images score.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .engine.autograd import Tensor, no_grad
from .data import ImageSet, load_digits, quantize
from .models.classifier import train_classifier


# ----------------------------------------------------------------------------
# Likelihood


def bits_per_dim(nats_per_image, dims: int):
    """nats per image -> bits per sub-pixel: divide by D ln 2 (D sub-pixels per image).

    The unit of PixelCNN papers: 1 bit/dim means each sub-pixel costs as much
    as a fair coin.
    """
    ### BEGIN SOLUTION
    return nats_per_image / (dims * math.log(2))
    ### END SOLUTION


def independent_pixel_nll(train_set: ImageSet, test_set: ImageSet, smoothing: float = 1.0) -> float:
    """Test NLL (nats per image) of the baseline that ignores all structure between pixels.

    Each sub-pixel gets its own categorical distribution over the levels,
    fitted on ``train_set`` by counting, with ``smoothing`` added to every
    count (add-one by default, so a level never seen in training keeps some
    probability). Any model worth training must beat it.
    """
    levels = np.arange(train_set.levels).reshape(1, -1, 1, 1, 1)
    counts = (train_set.images[:, None] == levels).sum(axis=0) + smoothing  # (K, C, H, W)
    log_probs = np.log(counts / counts.sum(axis=0))
    one_hot = test_set.images[:, None] == levels
    return float(-(one_hot * log_probs).sum() / len(test_set))


# ----------------------------------------------------------------------------
# Sample quality


@functools.lru_cache(maxsize=None)
def digit_classifier(seed: int = 0):
    """The conv-net classifier trained on the digits' training split (cached per process)."""
    model, _ = train_classifier(load_digits("train"), seed=seed, progress=False)
    return model.eval()


def _as_unit_digits(images: np.ndarray, levels: int) -> np.ndarray:
    """Integer images at ``levels`` -> floats in [0, 1], the classifier's input."""
    return (np.asarray(images, dtype=np.float32) / (levels - 1)).astype(np.float32)


def features_and_predictions(images: np.ndarray, levels: int, batch_size: int = 512):
    """Penultimate features (N, F) and predicted classes (N,) of integer digit images."""
    model = digit_classifier()
    unit = _as_unit_digits(images, levels)
    features, classes = [], []
    with no_grad():
        for start in range(0, len(unit), batch_size):
            h = model.features(Tensor(unit[start:start + batch_size]))
            features.append(h.numpy())
            classes.append(model.head(h).numpy().argmax(axis=1))
    return np.concatenate(features).astype(np.float64), np.concatenate(classes)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigenvectors."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = sqrtm_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def class_balance(classes: np.ndarray, num_classes: int = 10) -> dict:
    """Counts per predicted class and the entropy of their frequencies in bits."""
    counts = np.bincount(classes, minlength=num_classes)
    freq = counts / counts.sum()
    entropy = -sum(f * math.log2(f) for f in freq if f > 0)
    return {"counts": counts.tolist(), "entropy_bits": float(entropy), "max_entropy_bits": math.log2(num_classes)}


def sample_quality(images: np.ndarray, levels: int) -> dict:
    """Frechet distance to the digits' test split (at the same ``levels``) and class balance.

    Also reports the distance that as many *real* training images reach: the
    floor for this sample size (the estimate is biased upwards for small n).
    """
    def digits(split):
        data = load_digits(split)
        return quantize(data.images, data.levels, levels) if levels != data.levels else data.images

    test_features, _ = features_and_predictions(digits("test"), levels)
    fake_features, classes = features_and_predictions(images, levels)
    real_features, _ = features_and_predictions(digits("train")[: len(images)], levels)
    return {
        "frechet_distance": frechet_distance(test_features, fake_features),
        "real_images_frechet_distance": frechet_distance(test_features, real_features),
        "class_balance": class_balance(classes),
        "n": int(len(images)),
    }

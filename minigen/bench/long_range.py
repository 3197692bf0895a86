"""Long-range dependencies, measured: does an autoregressive model see far back?

A claim often made about autoregressive image models is that they "capture
long-range dependencies". A convolutional PixelCNN sees only what its stacked
kernels reach (a few rows for a few layers); PixelSNAIL's causal attention
reaches every earlier pixel in one layer. This experiment puts a number on
the difference with data whose dependence spans the whole image:

    copy-row images: every pixel is a fair coin, except the last row, which
    copies the first.

So the best possible model pays exactly 1 bit for each free pixel and 0 bits
for each copied one, and a model that cannot see the first row from the last
pays 1 bit there too. Each model trains for the same wall-clock time; we
report its test bits per copied pixel and per free pixel, beside its
parameter count and the number of steps it managed.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..engine import backend, optim
from ..engine import functional as F
from ..engine.autograd import Tensor, no_grad


def copy_row_images(n: int, size: int = 16, seed=0) -> np.ndarray:
    """``n`` binary ``size`` x ``size`` images, (n, 1, size, size) int64: fair coins,
    except that the last row is a copy of the first."""
    if size < 2:
        raise ValueError(f"copy_row_images: size must be at least 2 (a first and a last row), got {size}")
    images = np.random.default_rng(seed).integers(0, 2, size=(n, 1, size, size))
    images[:, :, -1, :] = images[:, :, 0, :]
    return images


def copied_pixels(size: int) -> np.ndarray:
    """(size, size) bool: True where a copy-row image's pixel is determined by an earlier one (the last row)."""
    mask = np.zeros((size, size), dtype=bool)
    mask[-1] = True
    return mask


def nats_per_subpixel(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """-log p(x_i | x_<i) for every sub-pixel of every image, in nats: (N, C, H, W).

    The sum over one image's sub-pixels is ``-model.log_prob`` of it (eq. 1 of
    van den Oord et al. 2016: the chain rule's factors, one per sub-pixel)."""
    parts = []
    with model.evaluating(), no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            logits = model(x)
            target = Tensor(backend.to_device(np.asarray(x, dtype=np.int64), _device_of(model)))
            parts.append(backend.to_device(F.cross_entropy(logits, target, axis=1, reduction="none").data, "cpu"))
    return np.concatenate(parts)


def bits_split(model, images: np.ndarray, dependent: np.ndarray) -> tuple[float, float]:
    """(bits per dependent sub-pixel, bits per other sub-pixel), averaged over ``images``;
    ``dependent`` is an (H, W) mask such as :func:`copied_pixels`."""
    nats = nats_per_subpixel(model, images)
    where = np.broadcast_to(dependent, nats.shape)
    return float(nats[where].mean() / math.log(2)), float(nats[~where].mean() / math.log(2))


def _device_of(model) -> str:
    return next(iter(model.parameters())).device


def receptive_field(network, shape: tuple, pick, seed: int = 0) -> np.ndarray:
    """Which inputs an output depends on, by autograd: |d(random mix of ``pick(network(x))``) / dx|
    summed over a batch of random inputs ``x`` of ``shape`` (N, C, H, W); returns (C, H, W).

    An input the output cannot see gets a gradient of exactly 0 (masked
    weights are exact zeros), so ``field > 0`` is the receptive field. The
    random mix of the picked outputs keeps their gradients from cancelling.
    For an autoregressive model: ``receptive_field(model.network, shape,
    lambda logits: logits[:, :, c, i, j])``; for a U-Net:
    ``receptive_field(lambda x: unet(x, t), shape, lambda eps: eps[:, c, i, j])``."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.uniform(-1, 1, shape).astype(np.float32), requires_grad=True)
    picked = pick(network(x))
    (picked * Tensor(rng.standard_normal(picked.shape).astype(np.float32))).sum().backward()
    return np.abs(backend.to_device(x.grad, "cpu")).sum(axis=0)


def parameter_count(model) -> int:
    """The number of trained numbers in ``model``."""
    return int(sum(p.size for p in model.parameters()))


def nll_nats(model, images: np.ndarray) -> float:
    """The mean test negative log-likelihood, in nats per image (exact for an autoregressive model)."""
    return float(nats_per_subpixel(model, images).sum(axis=(1, 2, 3)).mean())


def epochs_of(images: np.ndarray, batch: int, seed: int = 0):
    """``draw_batch(step)`` for :func:`train_for` from a fixed training set: the
    mini-batches of one shuffled epoch after another (the last partial batch dropped)."""
    per_epoch = len(images) // batch
    if per_epoch < 1:
        raise ValueError(f"epochs_of: {len(images)} images are fewer than one batch of {batch}")
    orders = {}

    def draw_batch(step: int) -> np.ndarray:
        epoch, k = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng((seed, epoch)).permutation(len(images))
        return images[orders[epoch][k * batch:(k + 1) * batch]]
    return draw_batch


def train_for(model, draw_batch, seconds: float, lr: float = 3e-3, max_steps: int | None = None) -> int:
    """Adam on ``model.loss`` of ``draw_batch(step)`` (an integer image batch) until
    ``seconds`` of wall-clock time (or ``max_steps``) have passed; returns the steps taken.

    A fixed time rather than a fixed number of steps: the comparison asks what
    each architecture learns for the same compute, and a step of attention
    costs more than a step of convolution."""
    opt = optim.Adam(model.parameters(), lr=lr)
    device, steps = _device_of(model), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and (max_steps is None or steps < max_steps):
        opt.zero_grad()
        model.loss(backend.to_device(draw_batch(steps), device)).backward()
        opt.step()
        steps += 1
    return steps


def long_range_experiment(builders: dict, size: int = 16, seconds: float = 60.0, n_test: int = 512,
                          batch: int = 32, lr: float = 3e-3, seed: int = 0, progress=None) -> list[dict]:
    """Train each model that ``builders`` (name -> function returning a fresh model)
    makes for ``seconds`` on copy-row images of ``size``, then measure it on test images.

    Every training batch is freshly drawn, so no model can memorise its data:
    a model's free pixels cost at least 1 bit, and what it pays above 0 on the
    copied ones is what it failed to see.

    One row per model: name, parameters, training steps, bits per copied pixel
    and per free pixel, and the test NLL in bits per image."""
    test = copy_row_images(n_test, size, seed=seed)
    dependent = copied_pixels(size)
    rows = []
    for name, build in builders.items():
        with backend.seeded(seed):
            model = build()
        steps = train_for(model, lambda step: copy_row_images(batch, size, seed=(seed, 1, step)), seconds, lr=lr)
        copied, free = bits_split(model, test, dependent)
        rows.append(dict(model=name, parameters=parameter_count(model), steps=steps,
                         copied_bits=copied, free_bits=free,
                         bits_per_image=copied * dependent.sum() + free * (~dependent).sum()))
        if progress is not None:
            progress(rows[-1])
    return rows

"""A small convolutional digit classifier, trained with the engine itself.

It is the engine's first real test (``minigen classify`` trains it and
reports its accuracy), and the judge of generated digits: minigen.metrics
takes its penultimate features for Frechet distances and its predictions for
class balance and guidance checks.
"""

from __future__ import annotations

import time

import numpy as np

from ..engine import backend
from ..engine import functional as F
from ..engine import nn, optim
from ..data import ImageSet, batches
from ..progress import tqdm


class DigitClassifier(nn.Module):
    """conv3x3(16) -> ReLU -> conv3x3 stride 2 (32) -> ReLU -> linear(10), for HxW images."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        half = (image_size + 1) // 2
        self.head = nn.Linear(2 * width * half * half, num_classes)

    def features(self, x):
        """The penultimate activations, flattened: (N, 2 * width * (H/2) * (W/2))."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return h.reshape(h.shape[0], -1)

    def forward(self, x):
        return self.head(self.features(x))


def accuracy(model: nn.Module, data: ImageSet, device: str = "cpu", batch_size: int = 512) -> float:
    """Fraction of ``data`` classified correctly."""
    correct = 0
    with model.evaluating():
        for x, y in batches((data.scaled(), data.labels), batch_size, shuffle=False, device=device):
            correct += int((model(x).numpy().argmax(axis=1) == y.numpy()).sum())
    return correct / len(data)


def train_classifier(train: ImageSet, epochs: int = 15, batch_size: int = 64, lr: float = 3e-3,
                     device: str = "cpu", seed: int = 0, progress: bool = True):
    """Train a DigitClassifier with Adam and cross-entropy; returns (model, seconds).

    ``seed`` fixes both the initial weights and the batch order, so the same
    seed gives the same classifier whatever random numbers were drawn before.
    """
    with backend.seeded(seed):
        model = DigitClassifier(train.images.shape[1], train.images.shape[-1]).to(device)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="classifier", disable=not progress)
    for epoch in bar:
        model.train()
        losses = []
        for x, y in batches((train.scaled(), train.labels), batch_size, seed=seed + epoch, device=device):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses):.3f}")
    return model, time.perf_counter() - start

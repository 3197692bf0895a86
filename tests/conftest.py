"""Shared fixtures: every test that takes ``device`` runs on the CPU and, where
CuPy and a CUDA GPU exist, again on the GPU (same test body)."""

import numpy as np
import pytest

import minigen as mg

GPU = pytest.mark.skipif(not mg.cuda_available(), reason="needs CuPy and a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, GPU])]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    mg.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)

"""Shared fixtures: every test that takes ``device`` runs on the CPU and again on
"cuda" (same test body); those cuda variants carry the ``gpu`` marker.

"cuda" is a real GPU where CuPy sees one. Everywhere else (every CPU machine,
CI) it is the strict CuPy stand-in of tests/fake_cupy.py, installed here as the
``cupy`` module before any test module is imported: a second device that
refuses implicit conversion to NumPy and NumPy/device mixing, as CuPy does. So
the gpu tests always run, and catch device bugs without a GPU; only a real GPU
run checks speed, memory and real kernels (see the README's Tests section).
``-m "not gpu"`` leaves them out.
"""

import sys

import numpy as np
import pytest

import minigen as mg
from minigen.engine import backend

from . import fake_cupy


def _real_gpu() -> bool:
    """True when the real CuPy imports and sees a CUDA GPU."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


REAL_GPU = _real_gpu()
if not REAL_GPU:
    fake_cupy.install()

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_report_header(config):
    if REAL_GPU:
        return "cuda device: real CuPy on a GPU"
    return "cuda device: the strict CuPy stand-in tests/fake_cupy.py (no GPU here)"


def pytest_unconfigure(config):
    fake_cupy.uninstall()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def cuda_stand_in(monkeypatch):
    """The stand-in as minigen's CuPy for one test, even where a real GPU is, with
    its synchronisation count at 0: for tests of the stand-in and of synchronisation."""
    monkeypatch.setattr(backend, "_cupy", fake_cupy)
    monkeypatch.setitem(sys.modules, "cupyx", fake_cupy.cupyx)
    monkeypatch.setattr(fake_cupy.cuda, "synchronizations", 0)
    return fake_cupy


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    mg.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)

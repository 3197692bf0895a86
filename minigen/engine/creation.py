"""Making tensors: from data, filled with constants, or random (seeded)."""

from __future__ import annotations

import numpy as np

from . import backend
from .autograd import Tensor, default_dtype


def _as_shape(shape) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def tensor(data, requires_grad: bool = False, dtype=None, device: str = "cpu") -> Tensor:
    """A new leaf tensor holding a copy of ``data`` on ``device``.

    Floating-point data becomes float32 unless ``dtype`` says otherwise;
    integer and boolean data keep their type (they are labels and masks).
    """
    if isinstance(data, Tensor):
        data = data.data
    device = backend.check_device(device)
    if backend.device_of(data) != device and not isinstance(data, (list, tuple, int, float, bool)):
        data = backend.to_device(data, device)
    xp = backend.xp_for(device)
    array = xp.array(data, copy=True)
    array = array.astype(default_dtype(array) if dtype is None else np.dtype(dtype), copy=False)
    return Tensor(array, requires_grad=requires_grad)


def _filled(fill, shape, dtype, device, requires_grad):
    xp = backend.xp_for(device)
    return Tensor(fill(xp)(_as_shape(shape), dtype=np.dtype(dtype)), requires_grad=requires_grad)


def zeros(*shape, dtype="float32", device="cpu", requires_grad=False) -> Tensor:
    return _filled(lambda xp: xp.zeros, shape, dtype, device, requires_grad)


def ones(*shape, dtype="float32", device="cpu", requires_grad=False) -> Tensor:
    return _filled(lambda xp: xp.ones, shape, dtype, device, requires_grad)


def full(shape, fill_value, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    """A tensor of ``shape`` filled with ``fill_value``: float32 for a float, int64 for an int."""
    if dtype is None:
        dtype = np.int64 if isinstance(fill_value, (int, np.integer)) and not isinstance(fill_value, bool) \
            else np.float32
    xp = backend.xp_for(backend.check_device(device))
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return Tensor(xp.full(shape, fill_value, dtype=np.dtype(dtype)), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device="cpu") -> Tensor:
    """Evenly spaced values in [start, stop), as ``numpy.arange`` (int64 for ints, else float32)."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = np.int64 if all(isinstance(v, (int, np.integer)) for v in (start, stop, step)) else np.float32
    xp = backend.xp_for(backend.check_device(device))
    return Tensor(xp.arange(start, stop, step, dtype=np.dtype(dtype)))


def randn(*shape, dtype="float32", device="cpu", requires_grad=False) -> Tensor:
    """Standard normal samples from the seeded generator (see ``manual_seed``)."""
    array = backend.generator(device).standard_normal(_as_shape(shape), dtype=np.float32)
    return Tensor(array.astype(dtype, copy=False), requires_grad=requires_grad)


def rand(*shape, dtype="float32", device="cpu", requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the seeded generator."""
    array = backend.generator(device).random(_as_shape(shape), dtype=np.float32)
    return Tensor(array.astype(dtype, copy=False), requires_grad=requires_grad)


def randint(low: int, high: int, shape, device="cpu") -> Tensor:
    """Integers in [low, high) from the seeded generator (int64)."""
    return Tensor(backend.generator(device).integers(low, high, size=tuple(shape), dtype=np.int64))

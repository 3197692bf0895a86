"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module in minigen that imports ``cupy``. Everything else asks
it for the array module (``xp``) that matches its arrays, so one piece of code
runs on both devices:

    xp = get_array_module(x)      # numpy or cupy
    y = xp.exp(x)                 # runs where x lives

Devices are named ``"cpu"`` and ``"cuda"``. Arrays never move between them
silently: :func:`to_device` is the one explicit door, and an operation that
mixes devices raises :class:`DeviceError` naming both.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

DEVICES = ("cpu", "cuda")

INSTALL_HINT = (
    "install the GPU extra: pip install 'minigen[gpu]' (CuPy for CUDA 12; "
    "on CUDA 13 install cupy-cuda13x instead)"
)


class DeviceError(RuntimeError):
    """A device was asked for that is not there, or two devices were mixed."""


_cupy = None  # the cupy module once imported successfully


def _import_cupy():
    """Import CuPy on first use, or raise a DeviceError saying how to get it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as exc:
            raise DeviceError(
                f"device='cuda' needs CuPy, which is not installed ({exc}); {INSTALL_HINT}"
            ) from None
        _cupy = cupy
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    try:
        cupy = _import_cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "not available"
        return False


def check_device(device: str) -> str:
    """Return ``device`` normalised ("cuda:0" -> "cuda"), or raise a clear error."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; use one of {DEVICES}")
    if name == "cuda":
        cupy = _import_cupy()
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise DeviceError(
                f"CuPy is installed but cannot reach a CUDA GPU ({exc}); "
                "check the NVIDIA driver with nvidia-smi, or use device='cpu'"
            ) from None
        if count == 0:
            raise DeviceError("CuPy is installed but found no CUDA GPU; use device='cpu'")
    return name


def xp_for(device: str):
    """The array module for a device name: numpy for "cpu", cupy for "cuda"."""
    return np if check_device(device) == "cpu" else _cupy


def is_cupy_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


def device_of(array) -> str:
    """The device an array lives on."""
    return "cuda" if is_cupy_array(array) else "cpu"


def get_array_module(*arrays):
    """numpy, or cupy if any argument is a CuPy array (the ``cupy.get_array_module`` rule)."""
    return _cupy if any(is_cupy_array(a) for a in arrays) else np


def to_device(array, device: str):
    """Copy an array to ``device`` (no copy if it is already there)."""
    device = check_device(device)
    if device == device_of(array):
        return array
    if device == "cpu":
        return _cupy.asnumpy(array)
    return _cupy.asarray(array)


def check_same_device(arrays, what: str) -> str:
    """Return the common device of ``arrays``; raise naming both if they differ."""
    devices = [device_of(a) for a in arrays]
    for d in devices[1:]:
        if d != devices[0]:
            raise DeviceError(
                f"{what}: inputs are on different devices ({devices[0]} and {d}); "
                "move them to one device first with .to(device)"
            )
    return devices[0] if devices else "cpu"


def synchronize(device: str = "cuda") -> None:
    """Wait until all queued GPU work is done (a no-op on the CPU).

    GPU calls return before the work finishes; a timer read without this
    measures only how fast work was queued.
    """
    if device != "cpu" and _cupy is not None:
        _cupy.cuda.Device().synchronize()


# ----------------------------------------------------------------------------
# Random numbers: one seeded generator per device.

_generators: dict = {}


def manual_seed(seed: int) -> None:
    """Seed every random stream minigen uses (CPU, and GPU when CuPy is loaded)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generators.clear()
    _generators["seed"] = int(seed)


def generator(device: str = "cpu"):
    """The seeded random generator for ``device`` (numpy/cupy ``Generator``).

    Both support ``random``, ``standard_normal`` and ``integers``.
    """
    device = check_device(device)
    if device not in _generators:
        seed = _generators.get("seed")
        xp = np if device == "cpu" else _cupy
        _generators[device] = xp.random.default_rng(seed)
    return _generators[device]


@contextmanager
def seeded(seed: int):
    """Run a block with minigen's random streams seeded by ``seed``, then give the
    caller's streams back exactly as they were (a reproducible side computation)."""
    saved = dict(_generators)
    manual_seed(seed)
    try:
        yield
    finally:
        _generators.clear()
        _generators.update(saved)


def get_rng_state() -> dict:
    """The CPU generator's state as plain JSON-able data (for checkpoints)."""
    return generator("cpu").bit_generator.state


def set_rng_state(state: dict) -> None:
    generator("cpu").bit_generator.state = state


# ----------------------------------------------------------------------------
# Array helpers used by several ops (kept here, in one place).


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` with repeated indices summed (in place)."""
    if is_cupy_array(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


# ----------------------------------------------------------------------------
# CPU threads and memory: how the process shares the machine.

NUM_THREADS_DEFAULT = "one core left free: max(1, cores - 1)"
"""The documented default of :func:`set_num_threads` (see :func:`default_num_threads`)."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Where a user (or a BLAS loaded later) reads the thread count from the environment."""


def default_num_threads() -> int:
    """BLAS threads minigen uses unless told otherwise: every core but one, at least one.

    A BLAS call splits its work evenly between its threads and waits for the
    slowest; when another process holds one of the cores, the thread that
    shares it runs at half speed and the whole product with it. Leaving one
    core free keeps a step's speed predictable on a shared machine (a
    notebook, a data loader, a browser) at a small cost on an idle one:
    benchmarks/training.py measures both, and the README has its table. Call
    ``set_num_threads(n)`` to use every core on an idle machine.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def set_num_threads(n: int | None = None) -> int:
    """Use ``n`` threads in the CPU's BLAS library (matrix products; None: :func:`default_num_threads`).

    Returns the number set. Through ``threadpoolctl`` when it is installed,
    which reaches the BLAS that NumPy is linked against while the process
    runs; otherwise the ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
    ``MKL_NUM_THREADS`` variables are set, which a BLAS reads only when it is
    first loaded, so then call it before importing NumPy (or set them in the
    shell). GPU arrays are not affected.
    """
    n = default_num_threads() if n is None else n
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    n = int(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(n)
        return n
    threadpool_limits(limits=n, user_api="blas")
    return n


def keep_freed_memory(keep: bool = True) -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back
    (``keep=False``: hand back what is kept now, and from then on at glibc's
    default 128 KiB thresholds).

    A training step allocates and frees the same large arrays (im2col matrices,
    activations, gradients) every time. By default glibc gives blocks over
    128 KiB back to the operating system on ``free`` and asks for fresh ones
    on the next ``malloc``, and every new page then costs a page fault (a
    large share of a CPU training step). Raising the mmap and trim
    thresholds keeps those pages in the process for the next step, as
    PyTorch's caching allocator does. The cost: the process keeps its peak
    memory after a step instead of shrinking back. Returns False where there
    is no glibc (macOS, Windows, musl): nothing changes there.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap, trim = (32 * 2**20, 2**30) if keep else (128 * 2**10, 128 * 2**10)  # 32 MiB: glibc's largest allowed
    applied = bool(libc.mallopt(m_mmap_threshold, mmap) and libc.mallopt(m_trim_threshold, trim))
    if not keep:
        libc.malloc_trim(0)
    _freed_memory["kept"] = keep and applied
    return applied


_freed_memory = {"kept": False}


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` is in force now."""
    return _freed_memory["kept"]


def apply_default_num_threads() -> int | None:
    """At import: :func:`default_num_threads`, unless the user already chose a count
    in one of :data:`THREAD_VARIABLES` (that choice stands). Returns the count set, or None."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return None
    return set_num_threads()


keep_freed_memory()
apply_default_num_threads()  # mg.set_num_threads(n) changes it later

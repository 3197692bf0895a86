"""minigen: image generation from scratch, taught in code.

The engine in one screen::

    import minigen as mg
    x = mg.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x
"""

from .engine import ops as _ops  # attaches operators and methods to Tensor
from .engine.autograd import Function, Tensor, is_grad_enabled, no_grad
from .engine.backend import DeviceError, cuda_available, manual_seed, synchronize
from .engine.gradcheck import GradcheckError, gradcheck
from .engine.creation import arange, full, ones, rand, randint, randn, tensor, zeros
from .engine.ops import cat, stack, where
from .engine import backend, functional, nn, optim
from .checkpoint import CheckpointError, load, save

__version__ = "0.1.0"

__all__ = [
    "Function", "Tensor", "DeviceError", "tensor", "zeros", "ones", "full", "arange", "randn", "rand", "randint",
    "cat", "stack", "where", "no_grad", "is_grad_enabled", "manual_seed", "synchronize",
    "cuda_available", "gradcheck", "GradcheckError", "backend", "functional", "nn", "optim",
    "save", "load", "CheckpointError",
]

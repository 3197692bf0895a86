"""minigen: image generation from scratch, taught in code.

The engine in one screen::

    import minigen as mg
    x = mg.tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()          # x.grad == 2 * x

The house, one room per line (the README draws it as a tree)::

    engine/      the autograd core: backend (NumPy or CuPy), Tensor and backward, ops,
                 creation, functional, nn, optim, gradcheck
    files        atomic writes, writability checks;  errors: UserError;  progress: the bar a terminal or notebook needs
    checkpoint   mg.save / mg.load;  data: data sets and batches;  viz: image grids
    models/      pixelcnn, pixelsnail, unet, diffusion (the process), ddpm (the module), classifier,
                 autoencoder (VAE, VQ-VAE), latent (latent diffusion, token prior)
    metrics      bits/dim, the independent-pixel baseline, Frechet distance, class balance
    train        one training loop for every family, checkpoints, resume
    course/      exercise stubs, the grader and its pytest plugin, book tools
    bench/       the timing harness, `minigen bench`, PyTorch twins
    cli          the `minigen` command

Imports point down only, layer by layer (:data:`LAYERS`, lowest first): a
module may import from its own layer or a lower one, never a higher one. So
the engine imports nothing else of minigen, and models never import course,
bench, train or the CLI. No module imports another module's ``_private``
name: a helper used in two places gets a public name and one home.
tests/project/test_architecture.py enforces both.
"""

from .engine import ops as _ops  # attaches operators and methods to Tensor
from .engine.autograd import Function, Tensor, is_grad_enabled, no_grad
from .engine.backend import DeviceError, cuda_available, manual_seed, set_num_threads, synchronize
from .engine.gradcheck import GradcheckError, gradcheck
from .engine.creation import arange, full, ones, rand, randint, randn, tensor, zeros
from .engine.ops import cat, stack, where
from .engine import backend, functional, nn, optim
from .checkpoint import CheckpointError, load, save

__version__ = "0.1.0"

import os as _os

if _os.environ.get("MINIGEN_EXERCISES"):  # a student's chapter files replace the library's task functions
    from .course.student import apply_from_environment as _apply_exercises
    _apply_exercises()

LAYERS = (
    ("engine",),
    ("files", "errors", "progress"),
    ("checkpoint", "data", "viz"),
    ("models",),
    ("metrics", "train"),
    ("course", "bench"),
    ("cli", "__main__", "minigen"),
)
"""The import layers, lowest first: a module imports only from its own layer or below."""

__all__ = [
    "Function", "Tensor", "DeviceError", "tensor", "zeros", "ones", "full", "arange", "randn", "rand", "randint",
    "cat", "stack", "where", "no_grad", "is_grad_enabled", "manual_seed", "synchronize",
    "cuda_available", "set_num_threads", "gradcheck", "GradcheckError", "backend", "functional", "nn", "optim",
    "save", "load", "CheckpointError",
]

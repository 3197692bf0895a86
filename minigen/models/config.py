"""One config dataclass per model family, and the one way to fill it in.

Every model is built from a frozen dataclass of its settings (nanoGPT's
``GPTConfig`` is the pattern): ``PixelCNN(PixelCNNConfig(hidden=32))`` and
``PixelCNN(hidden=32)`` build the same model, and ``model.config`` is the
dataclass. Checkpoints store ``config_dict(model.config)``; training, the CLI
and the benchmarks read the dataclass's fields instead of a constructor's
signature, so a setting has exactly one home and one default. Each config
checks its settings in ``__post_init__`` with :func:`check_integers` and
:func:`check_odd`, which raise one-line errors naming the setting.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import UserError


def configure(config_class: type, config=None, **settings):
    """``config`` (default: ``config_class()``) with ``settings`` replaced, checked by name.

    An unknown name is a one-line UserError (a ValueError) that lists the settings there are,
    instead of dataclasses' TypeError about an unexpected keyword argument.
    """
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        raise TypeError(f"expected a {config_class.__name__}, got {type(config).__name__}")
    names = [field.name for field in dataclasses.fields(config_class)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise UserError(f"{config_class.__name__} has no setting {', '.join(map(repr, unknown))}; "
                        f"its settings are {', '.join(names)}")
    return dataclasses.replace(config, **settings)


def config_dict(config) -> dict:
    """The config as plain JSON-ready values (tuples become lists), for checkpoints."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(config).items()}


def setting_names(config_class: type) -> list[str]:
    """The names of a config's settings, in declaration order."""
    return [field.name for field in dataclasses.fields(config_class)]


def check_integers(config, **minimums) -> None:
    """A UserError naming the first setting of ``config`` that is not an integer >= its minimum."""
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise UserError(f"{type(config).__name__}: {name} must be an integer >= {minimum}, got {value!r}")


def check_odd(config, *names) -> None:
    """Kernels need a centre tap, or output (i, j) would not line up with input (i, j)."""
    for name in names:
        if getattr(config, name) % 2 == 0:
            raise UserError(f"{type(config).__name__}: {name} must be odd, got {getattr(config, name)}")

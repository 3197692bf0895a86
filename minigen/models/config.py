"""One config dataclass per model family, and the one way to fill it in.

Every model is built from a frozen dataclass of its settings (nanoGPT's
``GPTConfig`` is the pattern): ``PixelCNN(PixelCNNConfig(hidden=32))`` and
``PixelCNN(hidden=32)`` build the same model, and ``model.config`` is the
dataclass. Checkpoints store ``config_dict(model.config)``; training, the CLI
and the benchmarks read the dataclass's fields instead of a constructor's
signature, so a setting has exactly one home and one default.
"""

from __future__ import annotations

import dataclasses


def configure(config_class: type, config=None, **settings):
    """``config`` (default: ``config_class()``) with ``settings`` replaced, checked by name.

    An unknown name is a one-line ValueError that lists the settings there are,
    instead of dataclasses' TypeError about an unexpected keyword argument.
    """
    if config is None:
        config = config_class()
    elif not isinstance(config, config_class):
        raise TypeError(f"expected a {config_class.__name__}, got {type(config).__name__}")
    names = [field.name for field in dataclasses.fields(config_class)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"{config_class.__name__} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings are {', '.join(names)}")
    return dataclasses.replace(config, **settings)


def config_dict(config) -> dict:
    """The config as plain JSON-ready values (tuples become lists), for checkpoints."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(config).items()}


def setting_names(config_class: type) -> list[str]:
    """The names of a config's settings, in declaration order."""
    return [field.name for field in dataclasses.fields(config_class)]

"""The errors that mean "you asked for something that cannot be done", not "minigen has a bug".

The ``minigen`` command prints these as one line, ``minigen: <message>``, and
exits with status 2; every other exception keeps its traceback, because it is
a bug to report. Library code raises them where it checks what a user gave it
(settings, paths, images, options)::

    raise UserError("levels must be at most 256: images are 8-bit; use --levels 256 or fewer")

:class:`UserError` subclasses ValueError, so code (and tests) that catch
ValueError for bad input keep working. The project's own error types derive
from it: ``CheckpointError`` (minigen.checkpoint), ``DatasetError``
(minigen.data) and :class:`MissingFileError` below. The engine's
``DeviceError`` cannot (the engine imports nothing of minigen); the CLI lists
it beside UserError.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the input (a setting, a path, an option): its message says what to do instead."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named is not there (also a FileNotFoundError, for code that catches that)."""

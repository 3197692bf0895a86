"""Writing files so that they are never seen half-written.

Checkpoints, downloaded data, figures, exported notebooks, grading reports
and benchmark results all go through :func:`write_atomically`: an interrupted
run (Ctrl-C, a full disk, a crash) leaves the old file or none, never a
truncated one that fails later in a confusing way. :func:`check_writable`
says before a long run whether its outputs can be written at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets

from .errors import UserError


def write_atomically(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The data is flushed to disk (fsync) before the rename, and the rename is
    atomic, so ``path`` is never seen half-written; on any error the
    temporary file is removed and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomically(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`write_atomically`."""
    write_atomically(os.fspath(path), lambda file: file.write(text.encode("utf-8")))


def check_writable(path, what: str = "output") -> None:
    """Raise a UserError unless a file could be written at ``path``; nothing is created.

    Called before a long run, so that an output that cannot be written is
    found in a second, not after the work: ``path`` must not be a folder, the
    nearest folder above it that exists must really be a folder (not a file),
    and that folder must be writable (missing folders below it are made when
    writing). ``what`` names the file in the message ("--checkpoint").
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise UserError(f"cannot write {what} {path}: it is a folder; give a file name")
    folder = os.path.dirname(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UserError(f"cannot write {what} {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {path}: the folder {folder} is not writable; choose another path")

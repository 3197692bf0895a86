"""Saving and loading training state: one ``.npz`` file, no pickle, atomic writes.

``save(state, path)`` takes a nested dict whose leaves are arrays (NumPy,
CuPy or Tensors) and JSON values (int, float, str, bool, None), inside
dicts, lists and tuples:

    mg.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, "run.npz")
    state = mg.load("run.npz")        # the same tree, arrays as NumPy arrays

The file is an ordinary ``np.savez`` archive: each array under its path in
the tree ("model/blocks.0.weight"), plus one entry holding UTF-8 JSON
metadata: a format name and version, the tree with its non-array leaves, and
a SHA-256 checksum of the arrays. Three promises:

* No pickle, ever: arrays are read with ``allow_pickle=False`` and object
  arrays are refused when saving, so loading a file cannot run code.
* Atomic: the file is written beside its destination, flushed to disk and
  renamed over it, so ``path`` holds either the old checkpoint or the new
  one, never half of one (a crash mid-training cannot destroy the last save).
* Checked: a damaged, truncated or foreign file raises :class:`CheckpointError`
  saying what is wrong; nothing is returned half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile

import numpy as np

from .engine import backend
from .errors import MissingFileError, UserError
from .files import write_atomically
from .engine.autograd import Tensor

FORMAT = "minigen-checkpoint"
VERSION = 1
META_KEY = "__minigen_checkpoint__"  # the archive entry holding the JSON metadata


class CheckpointError(UserError):
    """A file is not a readable minigen checkpoint (damaged, truncated or foreign)."""


# ----------------------------------------------------------------------------
# Saving


def save(state: dict, path) -> None:
    """Write ``state`` (a nested dict, see the module docstring) to ``path`` atomically."""
    if not isinstance(state, dict):
        raise TypeError(f"save: state must be a dict, got {type(state).__name__}")
    arrays = {}
    tree = _encode(state, "", arrays)
    meta = {"format": FORMAT, "version": VERSION, "sha256": _checksum(arrays), "tree": tree}
    entries = {**arrays, META_KEY: np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    write_atomically(os.fspath(path), lambda file: np.savez(file, **entries))


def _encode(node, path: str, arrays: dict) -> dict:
    """The JSON description of ``node``; its arrays are moved into ``arrays`` under their path.

    Every node becomes a one-key dict naming its kind, so the tree is
    unambiguous: {"dict": [[key, node], ...]}, {"list": [...]},
    {"tuple": [...]}, {"array": archive key} or {"value": json value}.
    """
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):
                raise TypeError(f"save: dict keys must be strings, got {key!r} under {path or 'the top level'!r}")
        return {"dict": [[key, _encode(value, _join(path, key), arrays)] for key, value in node.items()]}
    if isinstance(node, (list, tuple)):
        kind = "tuple" if isinstance(node, tuple) else "list"
        return {kind: [_encode(value, _join(path, str(i)), arrays) for i, value in enumerate(node)]}
    if isinstance(node, Tensor):
        node = node.data
    if isinstance(node, np.ndarray) or backend.is_cupy_array(node):
        return {"array": _add_array(backend.to_device(node, "cpu"), path, arrays)}
    if isinstance(node, np.generic):
        node = node.item()  # NumPy scalars are stored as the Python numbers they hold
    if node is None or isinstance(node, (bool, int, float, str)):
        return {"value": node}
    raise TypeError(
        f"save: cannot store {path!r} of type {type(node).__name__}; "
        "use arrays, Tensors, numbers, strings, bools, None, lists, tuples and dicts"
    )


def _add_array(array: np.ndarray, path: str, arrays: dict) -> str:
    if array.dtype.hasobject:
        raise TypeError(
            f"save: {path!r} is an array of Python objects (dtype {array.dtype}); checkpoints hold "
            "numeric, boolean and string arrays only, because storing objects would need pickle"
        )
    if path in arrays or path == META_KEY:
        raise ValueError(f"save: two arrays would be stored under the same name {path!r}; rename a key")
    arrays[path] = array
    return path


def _join(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


def _checksum(arrays: dict) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = arrays[key]
        digest.update(json.dumps([key, array.dtype.str, list(array.shape)]).encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------
# Loading

# What reading a damaged archive can raise: zip and header errors, short
# reads, zip features never written (RuntimeError: encryption, unknown
# compression), malformed JSON or metadata (ValueError covers JSON and UTF-8).
_DAMAGE = (OSError, EOFError, ValueError, KeyError, TypeError, RuntimeError, struct.error, zipfile.BadZipFile)


def load(path) -> dict:
    """Read a checkpoint written by :func:`save`: the same tree, with NumPy arrays.

    Raises MissingFileError (a FileNotFoundError) if ``path`` does not exist and CheckpointError
    if it is not an intact minigen checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"load: no checkpoint file at {path!r}")
    try:
        return _read(path)
    except _DAMAGE as exc:
        raise CheckpointError(f"cannot load checkpoint {path!r}: {exc}") from exc


def _read(path: str) -> dict:
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not an .npz archive (the file is truncated, damaged, or not a checkpoint)")
    with np.load(path, allow_pickle=False) as archive:
        if META_KEY not in archive.files:
            raise CheckpointError("the archive has no minigen metadata; it was not written by minigen.save")
        meta = json.loads(archive[META_KEY].tobytes().decode("utf-8"))
        _check_header(meta)
        arrays = {key: archive[key] for key in archive.files if key != META_KEY}
    if _checksum(arrays) != meta["sha256"]:
        raise CheckpointError("the checksum of the arrays does not match; the file is damaged")
    used = set()
    state = _decode(meta["tree"], arrays, used)
    if used != set(arrays) or not isinstance(state, dict):
        raise CheckpointError("the arrays in the archive do not match its metadata")
    return state


def _check_header(meta) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("the metadata does not name the minigen checkpoint format")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"format version {meta.get('version')!r}, but this minigen reads version {VERSION}; "
            "load it with the minigen version that wrote it"
        )


def _decode(node: dict, arrays: dict, used: set):
    """The value described by ``node`` (see ``_encode``); records the array keys it uses."""
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"malformed metadata node {str(node)[:80]}")
    [(kind, body)] = node.items()
    if kind == "dict":
        return {key: _decode(value, arrays, used) for key, value in body}
    if kind in ("list", "tuple"):
        items = [_decode(value, arrays, used) for value in body]
        return items if kind == "list" else tuple(items)
    if kind == "array":
        if body not in arrays:
            raise CheckpointError(f"the metadata names an array {body!r} that the archive does not hold")
        used.add(body)
        return arrays[body]
    if kind == "value":
        return body
    raise CheckpointError(f"unknown metadata node kind {kind!r}")

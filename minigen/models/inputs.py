"""Checks at the models' doors: images, labels and counts, before any work is done.

Every model here reads images as integer levels 0..K-1 (K = ``levels``). A
mistake at the door would otherwise fail deep inside the network with a
message about broadcasting or a zero-size array, or, worse, give a finite and
meaningless number: a PixelCNN would score images of non-integer "levels", and
a DDPM would train on data scaled to [0, 1] as if it were levels. So each
public method (``log_prob``, ``loss``, ``nll_bound``, ``sample``, ...) first
calls these functions, which raise a one-line UserError (a ValueError) naming the argument, what
was expected and what was received.

What passes: a Tensor, a NumPy or CuPy array, or anything ``np.asarray``
takes (a nested list: accepting array-likes is friendlier than a TypeError);
integer or boolean values, and floats whose values are all exact integers
(data loaded or stored as floats). Rejected: NaN and infinity, fractions,
levels out of range, the wrong shape, an empty batch, and labels that are not
one class per image.

Each check is a few vectorised passes over the batch (isfinite, rint, min,
max), once per call; the samplers check once at the start, never per step.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import backend
from ..errors import UserError
from ..engine.autograd import Tensor


def _as_array(value, where: str, name: str, what: str):
    """The backend array inside ``value`` (a Tensor, an array or an array-like), of a numeric dtype."""
    data = value.data if isinstance(value, Tensor) else value
    if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
        if value is None or isinstance(value, (str, bytes, dict, set)):
            raise TypeError(f"{where}: {name} must be an array or Tensor of {what}, got {type(value).__name__}")
        try:
            data = np.asarray(value)
        except (TypeError, ValueError) as error:  # ragged lists, objects NumPy cannot hold
            raise TypeError(f"{where}: {name} must be an array or Tensor of {what}, "
                            f"got a {type(value).__name__} NumPy cannot convert ({error})") from None
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{where}: {name} must hold numbers ({what}), got dtype {data.dtype}")
    return data


def _first(mask, data):
    """The index (a tuple) and value of the first True entry of ``mask`` (error messages only)."""
    xp = backend.get_array_module(mask)
    flat = int(xp.argmax(mask.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, mask.shape))
    return index, data.reshape(-1)[flat].item()


def _check_whole(data, where: str, name: str, what: str) -> None:
    """Float values must be finite and exact integers; integer dtypes pass without a pass over the data."""
    if data.dtype.kind != "f":
        return
    xp = backend.get_array_module(data)
    finite = xp.isfinite(data)
    if not bool(finite.all()):
        index, value = _first(~finite, data)
        count = int((~finite).sum())
        raise UserError(f"{where}: {name} must hold finite {what}, got {count} NaN or infinite "
                        f"value(s), the first {value} at index {index}")
    fractional = xp.rint(data) != data
    if bool(fractional.any()):
        index, value = _first(fractional, data)
        raise UserError(f"{where}: {name} must hold whole numbers ({what}), got {value} at index {index}")


def check_images(x, where: str, *, channels: int, levels: int, image_size: int | None = None, name: str = "x"):
    """``x`` as an int64 backend array (N, C, H, W) of levels 0..levels-1, on its own device.

    ``where`` names the caller in the message ("PixelCNN.log_prob"). With
    ``image_size``, H and W must both equal it. The values are unchanged:
    a float array of integer values gives the same numbers downstream.
    """
    what = f"integer levels 0..{levels - 1}"
    data = _as_array(x, where, name, what)
    height, width = ("H", "W") if image_size is None else (image_size, image_size)
    if (data.ndim != 4 or data.shape[1] != channels
            or (image_size is not None and tuple(data.shape[2:]) != (image_size, image_size))):
        raise UserError(f"{where}: {name} must have shape (N, {channels}, {height}, {width}), "
                        f"got {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise UserError(f"{where}: {name} is an empty batch (shape {tuple(data.shape)}); pass at least one image")
    if data.size == 0:
        raise UserError(f"{where}: {name} has images with no pixels (shape {tuple(data.shape)})")
    try:
        _check_whole(data, where, name, what)
    except ValueError as error:
        if "whole numbers" in str(error) and 0 <= data.min().item() and data.max().item() <= 1:
            raise UserError(f"{error}; images scaled to [0, 1] become levels "
                            f"with rint(x * {levels - 1})") from None
        raise
    low, high = data.min().item(), data.max().item()
    if low < 0 or high >= levels:
        raise UserError(f"{where}: {name} must hold integer levels in 0..{levels - 1}, "
                        f"got values from {low} to {high}")
    return data if data.dtype == np.int64 else data.astype(np.int64)


def check_labels(labels, n: int, num_classes: int, where: str, name: str = "labels"):
    """``labels`` as an int64 backend array of shape (n,) with classes 0..num_classes-1, on its own device.

    One label (a number or a 0-d array) stands for every one of the n images.
    """
    what = f"class indices 0..{num_classes - 1}"
    data = _as_array(labels, where, name, what)
    if data.shape not in ((), (n,)):
        raise UserError(f"{where}: {name} must hold one class per image, shape ({n},), "
                        f"got shape {tuple(data.shape)}")
    _check_whole(data, where, name, what)
    xp = backend.get_array_module(data)
    data = xp.broadcast_to(data.astype(np.int64), (n,))
    if data.min().item() < 0 or data.max().item() >= num_classes:
        seen = sorted(set(data.tolist()))
        shown = ", ".join(map(str, seen[:10])) + (", ..." if len(seen) > 10 else "")
        raise UserError(f"{where}: {name} must be in 0..{num_classes - 1}, got [{shown}]")
    return data


def check_count(n, where: str, name: str = "n") -> int:
    """A number of images: an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"{where}: {name} (the number of images) must be an integer >= 1, got {n!r}")
    return int(n)


def check_number(value, where: str, name: str, low: float = -math.inf, high: float = math.inf,
                 open_low: bool = False) -> float:
    """A finite real number in [low, high] (or (low, high] with ``open_low``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value > high or value < low or (open_low and value == low):
        if high < math.inf:
            wanted = f"a number in {'(' if open_low else '['}{low}, {high}]"
        elif low > -math.inf:
            wanted = f"a finite number {'>' if open_low else '>='} {low}"
        else:
            wanted = "a finite number"
        raise UserError(f"{where}: {name} must be {wanted}, got {value!r}")
    return float(value)

"""Pictures of images: grids of samples, saved as PNG files.

    grid = image_grid(samples, levels=2, nrow=8)      # (H', W', 1) floats in [0, 1]
    save_grid(samples, 2, "samples.png")               # the same grid, enlarged, as a PNG
    save_grid(samples, 2, "samples.jpg")               # or a JPEG: the extension decides

Images are NCHW with 1 (grey) or 3 (RGB) channels: integer levels
0..levels-1, or floats in [0, 1] (then ``levels`` is None).
"""

from __future__ import annotations

import math
import os

import matplotlib.image
import numpy as np

from .engine import backend
from .engine.autograd import Tensor
from .errors import UserError
from .files import write_atomically

BORDER = 0.5  # the grey between the images of a grid
MIN_SIZE = 32  # save_grid enlarges images smaller than this (pixels) to be visible
GRID_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}  # file extension -> image format


def _as_unit_floats(images, levels: int | None) -> np.ndarray:
    """``images`` as a float32 NumPy array (N, C, H, W) with values in [0, 1]."""
    if isinstance(images, Tensor):
        images = images.data
    images = np.asarray(backend.to_device(images, "cpu"))
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid: expected images of shape (N, 1 or 3, H, W), got {images.shape}")
    if images.dtype.kind in "iub":
        if levels is None:
            raise ValueError("image_grid: integer images need levels (their number of grey levels)")
        if images.min() < 0 or images.max() >= levels:
            raise ValueError(f"image_grid: integer images must hold levels 0..{levels - 1}, "
                             f"got values from {images.min()} to {images.max()}")
        return images.astype(np.float32) / (levels - 1)
    if levels is not None:
        raise ValueError(f"image_grid: float images are intensities in [0, 1], so levels must be None "
                         f"(got levels={levels}); pass integer images to use levels")
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def image_grid(images, levels: int | None = None, nrow: int | None = None, scale: int = 1) -> np.ndarray:
    """The images side by side, ``nrow`` per row, each enlarged ``scale`` times (nearest
    neighbour), with a 1-pixel grey border around each: a (H', W', C) float array in [0, 1].

    ``nrow`` defaults to a square-ish grid (ceil(sqrt(N)) images per row).
    """
    images = _as_unit_floats(images, levels)
    n, channels, height, width = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    if nrow < 1 or scale < 1:
        raise ValueError(f"image_grid: nrow and scale must be positive, got nrow={nrow}, scale={scale}")
    images = images.repeat(scale, axis=2).repeat(scale, axis=3)
    height, width = height * scale, width * scale
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (height + 1) + 1, nrow * (width + 1) + 1, channels), BORDER, dtype=np.float32)
    for index, image in enumerate(images):
        top, left = 1 + (index // nrow) * (height + 1), 1 + (index % nrow) * (width + 1)
        grid[top:top + height, left:left + width] = image.transpose(1, 2, 0)
    return grid


def grid_format(path) -> str:
    """The image format that ``path``'s extension asks for; a UserError for any other extension,
    so a file named o.jpg never silently holds a PNG."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in GRID_FORMATS:
        raise UserError(f"cannot write an image grid to {os.fspath(path)}: {extension or 'no extension'} is not "
                        f"a format minigen writes; end the name with {', '.join(GRID_FORMATS)}")
    return GRID_FORMATS[extension]


def save_grid(images, levels: int | None, path, nrow: int | None = None,
              scale: int | None = None, title: str | None = None, real=None) -> np.ndarray:
    """Write :func:`image_grid` of ``images`` to ``path`` (PNG or JPEG, by its extension: see
    :func:`grid_format`), atomically; returns the grid.

    ``scale`` defaults to the smallest whole factor that makes each image at
    least MIN_SIZE pixels tall (8x8 digits become 32x32). With a ``title``
    (which model, sampler, steps, classes) or ``real`` images (a row of the
    data set, to compare with) the file is a captioned figure: the title line,
    the grid, and the real images below it. Missing folders of ``path`` are created.
    """
    if scale is None:
        scale = max(1, math.ceil(MIN_SIZE / max(np.shape(images)[2:])))
    image_format = grid_format(path)
    grid = image_grid(images, levels, nrow, scale)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if title is None and real is None:
        pixels = grid[:, :, 0] if grid.shape[2] == 1 else grid
        write_atomically(path, lambda file: matplotlib.image.imsave(file, pixels, cmap="gray", vmin=0, vmax=1,
                                                                       format=image_format))
        return grid
    reference = None if real is None else image_grid(real, levels, nrow or len(real), scale)
    figure = _captioned(grid, title, reference)
    write_atomically(path, lambda file: figure.savefig(file, format=image_format, dpi=CAPTION_DPI))
    return grid


CAPTION_DPI = 100
CAPTION_BAND = 28  # pixels of white above a grid, for its caption
MIN_CAPTIONED_WIDTH = 400  # pixels: room for a caption line
CAPTION_CHAR_WIDTH = 7  # pixels per character of a 9-point caption at CAPTION_DPI, rounded up


def _captioned(grid: np.ndarray, title: str | None, reference: np.ndarray | None):
    """A matplotlib Figure (no pyplot, no window): ``title`` over ``grid`` and, under it,
    ``reference`` (real images) with its own caption. The grids are stacked into one
    picture at one file pixel per grid pixel, centred on a white page as wide as the
    widest grid (at least MIN_CAPTIONED_WIDTH): the caption never changes the size."""
    from matplotlib.figure import Figure

    panels = [(grid, title or "")] + ([] if reference is None else [(reference, "real images, for comparison")])
    channels = max(panel.shape[2] for panel, _ in panels)
    width = max(MIN_CAPTIONED_WIDTH, *(panel.shape[1] for panel, _ in panels))
    height = sum(CAPTION_BAND + panel.shape[0] for panel, _ in panels)
    page = np.ones((height, width, channels), dtype=np.float32)
    figure = Figure(figsize=(width / CAPTION_DPI, height / CAPTION_DPI))
    top = 0
    for panel, caption in panels:
        fits = (width - 20) / max(1, len(caption) * CAPTION_CHAR_WIDTH)  # a long caption gets a smaller font
        figure.text(0.5, 1 - (top + CAPTION_BAND / 2) / height, caption, ha="center", va="center",
                    fontsize=9 * min(1.0, fits))
        top += CAPTION_BAND
        left = (width - panel.shape[1]) // 2
        page[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
        top += panel.shape[0]
    ax = figure.add_axes((0, 0, 1, 1))
    ax.imshow(page[:, :, 0] if channels == 1 else page, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    return figure

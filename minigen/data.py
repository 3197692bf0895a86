"""Data sets and mini-batches.

The offline default is scikit-learn's bundled 8x8 handwritten digits: 1,797
images with 17 grey levels (0..16), shipped inside the package, so every
demo, chapter and test runs without a network.

MNIST (28x28, 256 grey levels) and the fixed binarized MNIST of Larochelle &
Murray are read from the original files in a cache folder (see
:func:`data_dir`), downloaded there on first use. Every load checks each
file's sha256 against the table :data:`MNIST_FILES`, so a corrupt, truncated
or wrong file raises :class:`DatasetError` instead of loading half-way.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .engine import backend
from .errors import UserError
from .files import write_atomically
from .engine.autograd import Tensor
from .progress import tqdm

DIGITS_LEVELS = 17
MAX_LEVELS = 256  # images are stored as uint8 levels, and PNG grey is 8-bit: 256 levels at most
SPLIT_SEED = 0  # the fixed train/test split of the digits
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class ImageSet:
    """Images as integer levels 0..levels-1, shape (N, C, H, W), with labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    levels: int

    def __len__(self) -> int:
        return len(self.images)

    def scaled(self, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """The images as float32 in [low, high] (level 0 -> low, top level -> high)."""
        unit = self.images.astype(np.float32) / (self.levels - 1)
        return (low + (high - low) * unit).astype(np.float32)


def quantize(images: np.ndarray, levels_in: int, levels_out: int) -> np.ndarray:
    """Map integer levels 0..levels_in-1 evenly onto 0..levels_out-1 (rounding)."""
    if levels_out < 2:
        raise UserError(f"quantize: levels_out must be at least 2, got {levels_out}")
    if levels_out > MAX_LEVELS:
        raise UserError(f"quantize: levels_out must be at most {MAX_LEVELS} (images are stored as 8-bit "
                        f"levels), got {levels_out}")
    scaled = np.floor(images.astype(np.float64) * (levels_out - 1) / (levels_in - 1) + 0.5)
    return scaled.astype(np.uint8)


def binarize(data: ImageSet, method: str = "threshold", threshold: float = 0.5,
             seed: int = 0) -> ImageSet:
    """The images of ``data`` as 0/1 pixels (levels=2), labels unchanged.

    Each pixel's intensity p = level / (levels - 1) lies in [0, 1].
    ``method="threshold"`` sets a pixel to 1 when p >= ``threshold``: the same
    result every time. ``method="stochastic"`` draws each pixel from
    Bernoulli(p) with a generator seeded by ``seed``, so the same seed gives the
    same images and the mean of the result is close to the mean intensity.
    (The fixed binarized MNIST of :func:`load_binarized_mnist` was made once
    this way; resampling every epoch instead is a form of data augmentation.)
    """
    intensity = data.scaled()
    if method == "threshold":
        ones = intensity >= threshold
    elif method == "stochastic":
        ones = np.random.default_rng(seed).random(intensity.shape, dtype=np.float32) < intensity
    else:
        raise ValueError(f"binarize: method must be 'threshold' or 'stochastic', got {method!r}")
    return ImageSet(ones.astype(np.uint8), data.labels, 2)


def load_digits(split: str = "train", levels: int = DIGITS_LEVELS) -> ImageSet:
    """The 8x8 digits (1 channel), split 80/20 by a fixed seed, at ``levels`` grey levels."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"load_digits: split must be 'train', 'test' or 'all', got {split!r}")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    if levels != DIGITS_LEVELS:
        images = quantize(images, DIGITS_LEVELS, levels)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    n_test = int(round(TEST_FRACTION * len(images)))
    index = {"test": order[:n_test], "train": order[n_test:], "all": np.arange(len(images))}[split]
    return ImageSet(images[index], labels[index], levels)


# --------------------------------------------------------------------------
# MNIST files: where they come from, where they live, how they are checked
# --------------------------------------------------------------------------


class DatasetError(UserError):
    """A data file is missing, cannot be downloaded, or is not the expected file."""


class Source(NamedTuple):
    """Where a data file is downloaded from, and the sha256 of its exact bytes."""

    url: str
    sha256: str


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

# Canonical file name -> source. The checksum covers the file exactly as named:
# the gzip archive for the IDX files, the plain text for the .amat files. A
# gzipped copy of a plain file ("name.gz") is accepted and unzipped first.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": Source(
        MNIST_URL + "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": Source(
        MNIST_URL + "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": Source(
        MNIST_URL + "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": Source(
        MNIST_URL + "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    "binarized_mnist_train.amat": Source(
        BINARIZED_URL + "binarized_mnist_train.amat",
        "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
    "binarized_mnist_valid.amat": Source(
        BINARIZED_URL + "binarized_mnist_valid.amat",
        "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
    "binarized_mnist_test.amat": Source(
        BINARIZED_URL + "binarized_mnist_test.amat",
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
}

DOWNLOAD_TIMEOUT = 30  # seconds without an answer before a download gives up
CHUNK = 1 << 20  # download in 1 MiB pieces, so the progress bar moves


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the data files.

    ``root`` if given, else the environment variable ``MINIGEN_DATA``, else
    ``minigen`` inside the user's cache folder (``$XDG_CACHE_HOME``, which
    defaults to ``~/.cache``). Nothing is created here; a download creates it.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("MINIGEN_DATA"):
        return Path(os.environ["MINIGEN_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "minigen"


def _stored_names(name: str) -> tuple[str, ...]:
    """The names a file may have on disk: as in the table, or gzipped if it is plain."""
    return (name,) if name.endswith(".gz") else (name, name + ".gz")


def _find(folder: Path, name: str) -> Path | None:
    """The stored copy of table file ``name`` in ``folder``, or None."""
    for stored in _stored_names(name):
        if (folder / stored).is_file():
            return folder / stored
    return None


def _how_to_provide(names: list[str], folder: Path) -> str:
    """The sentence telling a user where to put files by hand."""
    files = ", ".join(" or ".join(_stored_names(name)) for name in names)
    urls = ", ".join(MNIST_FILES[name].url for name in names)
    return (f"put {files} into {folder} (they are at {urls}), or set the MINIGEN_DATA "
            f"environment variable (or pass root=) to a folder that holds them")


def _gunzip(data: bytes, path: Path) -> bytes:
    """Decompress gzip bytes read from ``path``; a damaged archive is a DatasetError."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path} is not a valid gzip file ({exc}); it is corrupt or truncated: "
            f"delete it and load again to re-download it") from None


def _check_sha256(data: bytes, name: str, where: str, fix: str) -> None:
    """Raise a DatasetError unless ``data`` has the sha256 recorded for ``name``."""
    expected = MNIST_FILES[name].sha256
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DatasetError(f"{where} is not the expected {name}: its sha256 is {actual}, "
                           f"expected {expected}; {fix}")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once (see ``files.write_atomically``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(os.fspath(path), lambda file: file.write(data))


def _fetch(url: str) -> bytes:
    """The bytes at ``url``, read in chunks under a tqdm progress bar."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        size = response.headers.get("Content-Length")
        chunks = []
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                  desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(CHUNK):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def _download(name: str, folder: Path, missing: list[str]) -> None:
    """Download table file ``name`` into ``folder``, verified, or leave nothing there."""
    url = MNIST_FILES[name].url
    try:
        data = _fetch(url)
    except (OSError, HTTPException) as exc:  # URLError, timeouts and HTTP errors are OSErrors
        raise DatasetError(f"could not download {url} ({exc}); this machine seems to be "
                           f"offline. To load without a network, "
                           f"{_how_to_provide(missing, folder)}") from None
    _check_sha256(data, name, where=f"the download from {url}",
                  fix="nothing was saved; try again, or fetch the file by hand")
    _atomic_write(folder / name, data)


def _read_verified(folder: Path, name: str) -> bytes:
    """The content of table file ``name``, checked, with its gzip compression removed."""
    path = _find(folder, name)
    data = path.read_bytes()
    if path.name != name:  # a gzipped copy of a plain file: the checksum is of the plain text
        data = _gunzip(data, path)
    _check_sha256(data, name, where=str(path),
                  fix="the file is corrupt or incomplete: delete it and load again to "
                      "re-download it (or copy a good one there)")
    return _gunzip(data, path) if name.endswith(".gz") else data


def _load_files(names: list[str], root: str | os.PathLike | None, download: bool) -> list[bytes]:
    """The verified contents of the table files ``names``, downloading missing ones."""
    folder = data_dir(root)
    missing = [name for name in names if _find(folder, name) is None]
    if missing and not download:
        raise DatasetError(f"{', '.join(missing)} not found in {folder} and download=False; "
                           f"pass download=True to fetch, or {_how_to_provide(missing, folder)}")
    for name in missing:
        _download(name, folder, missing)
    return [_read_verified(folder, name) for name in names]


# --------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------

IDX_IMAGES = 0x803  # IDX magic: two zero bytes, type 0x08 (uint8), 3 dimensions
IDX_LABELS = 0x801  # the same with 1 dimension
AMAT_PIXELS = 28 * 28
AMAT_LINE = 2 * AMAT_PIXELS  # each value '0'/'1' is followed by one space, the last by '\n'


def parse_idx(data: bytes, magic: int, source: str = "IDX data") -> np.ndarray:
    """Decode an uncompressed IDX file of unsigned bytes into an array.

    The layout (LeCun's MNIST format): a big-endian uint32 magic number whose
    last byte is the number of dimensions, one big-endian uint32 per dimension,
    then exactly prod(dims) bytes in row-major order. Anything shorter or
    longer is rejected, so a truncated file never loads half-way.
    """
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header "
                           f"({header} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{source}: IDX magic number is {found:#x}, expected {magic:#x}")
    dims = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(4, header, 4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DatasetError(f"{source}: {len(data)} bytes, but the header's dimensions {dims} "
                           f"need exactly {expected}; the file is truncated or has extra data")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def parse_amat(text: bytes, source: str = "amat data") -> np.ndarray:
    """Decode binarized-MNIST ``.amat`` text into a (N, 784) uint8 array of 0/1.

    Every line must be 784 characters '0' or '1' separated by single spaces and
    ended by a newline: exactly 1,568 bytes. Viewing the bytes as a
    (N, 1568) array, the values sit at even columns and the separators at odd
    ones, so parsing is a few vectorised comparisons instead of text splitting.
    """
    if len(text) == 0 or len(text) % AMAT_LINE:
        raise DatasetError(f"{source}: {len(text)} bytes is not a whole, positive number of "
                           f"{AMAT_LINE}-byte lines ({AMAT_PIXELS} values 0/1 separated by "
                           f"single spaces)")
    rows = np.frombuffer(text, np.uint8).reshape(-1, AMAT_LINE)
    values = rows[:, 0::2] - np.uint8(ord("0"))  # '0' -> 0, '1' -> 1, anything else >= 2
    separators = rows[:, 1::2]
    good = ((values <= 1).all(axis=1) & (separators[:, :-1] == ord(" ")).all(axis=1)
            & (separators[:, -1] == ord("\n")))
    if not good.all():
        line = int(np.argmin(good)) + 1
        raise DatasetError(f"{source}: line {line} is not {AMAT_PIXELS} values 0/1 separated "
                           f"by single spaces and ended by a newline")
    return values


# --------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------

MNIST_LEVELS = 256


def load_mnist(split: str = "train", root: str | os.PathLike | None = None,
               download: bool = True) -> ImageSet:
    """MNIST: 60,000 train or 10,000 test images (N, 1, 28, 28), levels 0..255, labels 0..9.

    Reads the original gzipped IDX files from :func:`data_dir` (``root``),
    downloading any that are missing when ``download`` is true. Each file's
    sha256 is checked on every load.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    image_bytes, label_bytes = _load_files(names, root, download)
    images = parse_idx(image_bytes, IDX_IMAGES, names[0])
    labels = parse_idx(label_bytes, IDX_LABELS, names[1])
    if len(images) != len(labels):
        raise DatasetError(f"MNIST {split}: {len(images)} images but {len(labels)} labels "
                           f"({names[0]}, {names[1]})")
    return ImageSet(images[:, None], labels.astype(np.int64), MNIST_LEVELS)


def load_binarized_mnist(split: str = "train", root: str | os.PathLike | None = None,
                         download: bool = True) -> ImageSet:
    """The fixed binarized MNIST: 50,000 train, 10,000 valid or 10,000 test images.

    Images are (N, 1, 28, 28) uint8 of 0/1 (levels=2), read from Larochelle's
    ``binarized_mnist_{split}.amat`` text file (or a gzipped ``.amat.gz``
    copy) in :func:`data_dir` (``root``), downloaded when missing and
    ``download`` is true. The files carry no labels, so ``labels`` is an
    array of -1. The sha256 of the text is checked on every load.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"load_binarized_mnist: split must be 'train', 'valid' or 'test', "
                         f"got {split!r}")
    name = f"binarized_mnist_{split}.amat"
    (text,) = _load_files([name], root, download)
    pixels = parse_amat(text, name)
    return ImageSet(pixels.reshape(-1, 1, 28, 28), np.full(len(pixels), -1, np.int64), 2)


def batches(arrays, batch_size: int, shuffle: bool = True, seed: int | None = None,
            device: str = "cpu", drop_last: bool = False):
    """Yield tuples of Tensors, one mini-batch at a time, from equal-length arrays.

    Shuffling uses its own generator seeded by ``seed`` (or minigen's seeded
    CPU generator), so an epoch's order can be repeated exactly.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"batches: arrays have different lengths {[len(a) for a in arrays]}")
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed) if seed is not None else backend.generator("cpu")
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        yield tuple(Tensor(backend.to_device(np.ascontiguousarray(a[index]), device)) for a in arrays)

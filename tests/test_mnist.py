"""MNIST and binarized MNIST: parsing, checksums, the cache folder, downloads, binarize.

The real files live in ``shared/data/mnist/`` beside the repository (read-only);
tests that need them skip when it is absent. No test touches the network:
downloads are served from local ``file://`` URLs or made to fail on purpose.
"""

import gzip
import hashlib
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minigen import data
from minigen.data import (
    DatasetError, ImageSet, binarize, data_dir, load_binarized_mnist, load_mnist,
    parse_amat, parse_idx,
)

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "mnist"
STORED = [
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    "binarized_mnist_train.amat.gz", "binarized_mnist_valid.amat.gz",
    "binarized_mnist_test.amat.gz",
]
TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def shared():
    """The folder of real MNIST files, or skip."""
    missing = [name for name in STORED if not (SHARED / name).is_file()]
    if missing:
        pytest.skip(f"real MNIST files not found in {SHARED}: {missing}")
    return SHARED


@pytest.fixture
def no_network(monkeypatch):
    """Make every download fail as it would on a machine without a network."""
    def offline(url, timeout=None):
        assert timeout == data.DOWNLOAD_TIMEOUT, "a download must never wait forever"
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)


def copy_files(source: Path, target: Path, names) -> Path:
    """Copy ``names`` from ``source`` into ``target`` (writable) and return ``target``."""
    target.mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, target / name)
    return target


def idx_bytes(magic: int, dims, payload: bytes) -> bytes:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, the data."""
    return b"".join(x.to_bytes(4, "big") for x in (magic, *dims)) + payload


def serve_locally(monkeypatch, name: str, path: Path) -> None:
    """Make the download of table file ``name`` fetch ``path`` through a file:// URL."""
    monkeypatch.setitem(data.MNIST_FILES, name, data.MNIST_FILES[name]._replace(url=path.as_uri()))


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("split, counts, mean", [
    ("train", [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], 33.3184),
    ("test", [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], 33.7912),
])
def test_load_mnist_matches_the_published_facts(shared, split, counts, mean):
    mnist = load_mnist(split, root=shared, download=False)
    assert mnist.images.shape == (sum(counts), 1, 28, 28) and mnist.images.dtype == np.uint8
    assert mnist.levels == 256 and mnist.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(mnist.labels, minlength=10), counts)
    assert mnist.images.mean() == pytest.approx(mean, abs=1e-3)
    assert mnist.images.flags.writeable, "loaded arrays own their memory, like load_digits"


@pytest.mark.parametrize("split, n, mean", [
    ("train", 50000, 0.1306), ("valid", 10000, 0.1311), ("test", 10000, 0.1325),
])
def test_load_binarized_mnist_matches_the_published_facts(shared, split, n, mean):
    binary = load_binarized_mnist(split, root=shared, download=False)
    assert binary.images.shape == (n, 1, 28, 28) and binary.images.dtype == np.uint8
    assert binary.levels == 2 and set(np.unique(binary.images)) == {0, 1}
    np.testing.assert_array_equal(binary.labels, np.full(n, -1))  # the files have no labels
    assert binary.images.mean() == pytest.approx(mean, abs=1e-3)


def test_plain_amat_loads_like_the_gzipped_copy(shared, tmp_path):
    name = "binarized_mnist_valid.amat"
    (tmp_path / name).write_bytes(gzip.decompress((shared / (name + ".gz")).read_bytes()))
    plain = load_binarized_mnist("valid", root=tmp_path, download=False)
    zipped = load_binarized_mnist("valid", root=shared, download=False)
    np.testing.assert_array_equal(plain.images, zipped.images)


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_damaged_idx_file_is_rejected_by_its_checksum(shared, tmp_path, damage):
    folder = copy_files(shared, tmp_path, TEST_FILES)
    path = folder / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    if damage == "flip a byte":
        raw[1000] ^= 0xFF
    else:
        del raw[len(raw) // 2:]
    path.write_bytes(bytes(raw))
    expected = data.MNIST_FILES[path.name].sha256
    actual = hashlib.sha256(raw).hexdigest()
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}.*sha256 is {actual}, expected {expected}"
                                           r".*delete it and load again to re-download"):
        load_mnist("test", root=folder, download=False)


def test_a_truncated_gzip_is_rejected_before_parsing(shared, tmp_path):
    path = tmp_path / "binarized_mnist_test.amat.gz"
    path.write_bytes((shared / path.name).read_bytes()[:100_000])
    with pytest.raises(DatasetError, match=rf"{re.escape(str(path))} is not a valid gzip file.*truncated"):
        load_binarized_mnist("test", root=tmp_path, download=False)


def test_a_changed_amat_text_is_rejected_by_its_checksum(shared, tmp_path):
    text = bytearray(gzip.decompress((shared / "binarized_mnist_test.amat.gz").read_bytes()))
    text[0] = ord("1") if text[0] == ord("0") else ord("0")  # one pixel flipped, still valid text
    (tmp_path / "binarized_mnist_test.amat").write_bytes(bytes(text))
    with pytest.raises(DatasetError, match=r"binarized_mnist_test.amat.*sha256 is [0-9a-f]{64}"):
        load_binarized_mnist("test", root=tmp_path, download=False)


def test_image_and_label_counts_must_agree(tmp_path, monkeypatch):
    files = {
        "t10k-images-idx3-ubyte.gz": idx_bytes(0x803, (3, 28, 28), bytes(3 * 784)),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(0x801, (2,), bytes([4, 2])),
    }
    for name, content in files.items():
        archive = gzip.compress(content)
        (tmp_path / name).write_bytes(archive)
        sha = hashlib.sha256(archive).hexdigest()  # make the table accept the made-up files
        monkeypatch.setitem(data.MNIST_FILES, name, data.MNIST_FILES[name]._replace(sha256=sha))
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        load_mnist("test", root=tmp_path, download=False)


def test_parse_idx_reads_exact_files_and_rejects_the_rest():
    good = idx_bytes(0x803, (2, 2, 3), bytes(range(12)))
    np.testing.assert_array_equal(parse_idx(good, 0x803), np.arange(12).reshape(2, 2, 3))
    with pytest.raises(DatasetError, match=r"23 bytes, but the header's dimensions \(2, 2, 3\) "
                                           r"need exactly 28; the file is truncated"):
        parse_idx(good[:-5], 0x803)
    with pytest.raises(DatasetError, match="29 bytes.*need exactly 28.*extra data"):
        parse_idx(good + b"\0", 0x803)
    with pytest.raises(DatasetError, match="magic number is 0x803, expected 0x801"):
        parse_idx(good, 0x801)
    with pytest.raises(DatasetError, match="too short for an IDX header"):
        parse_idx(good[:10], 0x803)


def test_parse_amat_accepts_only_the_exact_layout():
    line = (" ".join("01"[i % 2] for i in range(784)) + "\n").encode()
    assert len(line) == 1568
    values = parse_amat(line * 2)
    assert values.shape == (2, 784) and values.dtype == np.uint8
    np.testing.assert_array_equal(values[1], np.arange(784) % 2)
    bad_lines = {
        "a 2": line[:4] + b"2" + line[5:],
        "a double space": line[:3] + b"  " + line[4:-2] + b"\n",
        "a tab": line[:1] + b"\t" + line[2:],
        "CRLF": line[:-2] + b"\r\n",
    }
    for what, bad in bad_lines.items():
        with pytest.raises(DatasetError, match="line 2 is not 784 values"):
            parse_amat(line + bad)
    with pytest.raises(DatasetError, match="1567 bytes is not a whole, positive number of 1568-byte"):
        parse_amat(line[:-1])
    with pytest.raises(DatasetError, match="0 bytes"):
        parse_amat(b"")


# ---------------------------------------------------------------- cache folder and downloads


def test_data_dir_prefers_root_then_minigen_data_then_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir(tmp_path / "root") == tmp_path / "root"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("MINIGEN_DATA")
    assert data_dir() == tmp_path / "xdg" / "minigen"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == Path.home() / ".cache" / "minigen"


def test_offline_download_says_where_to_put_the_files(tmp_path, no_network):
    folder = tmp_path / "cache"
    with pytest.raises(DatasetError) as error:
        load_mnist("test", root=folder)
    message = str(error.value)
    assert "seems to be offline" in message and "Temporary failure" in message
    assert str(folder) in message and "MINIGEN_DATA" in message
    assert all(name in message for name in TEST_FILES)
    assert not folder.exists(), "a failed download leaves nothing behind"


def test_missing_file_without_download_never_touches_the_network(tmp_path, no_network):
    with pytest.raises(DatasetError, match=rf"binarized_mnist_valid.amat not found in {re.escape(str(tmp_path))} "
                                           r"and download=False.*binarized_mnist_valid.amat or "
                                           r"binarized_mnist_valid.amat.gz into .*MINIGEN_DATA"):
        load_binarized_mnist("valid", root=tmp_path, download=False)


def test_download_fetches_verifies_and_caches(shared, tmp_path, monkeypatch):
    for name in TEST_FILES:
        serve_locally(monkeypatch, name, shared / name)
    folder = tmp_path / "cache"
    fetched = load_mnist("test", root=folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(TEST_FILES), "no temporary files left"
    assert all((folder / n).read_bytes() == (shared / n).read_bytes() for n in TEST_FILES)
    monkeypatch.setattr(urllib.request, "urlopen", None)  # a second load must not download
    np.testing.assert_array_equal(load_mnist("test", root=folder).images, fetched.images)


def test_a_wrong_download_is_not_saved(shared, tmp_path, monkeypatch):
    name = "t10k-labels-idx1-ubyte.gz"
    serve_locally(monkeypatch, name, shared / "train-labels-idx1-ubyte.gz")  # the wrong file
    copy_files(shared, tmp_path, ["t10k-images-idx3-ubyte.gz"])
    with pytest.raises(DatasetError, match=rf"the download from file:.* is not the expected "
                                           rf"{name}: its sha256 is .*nothing was saved"):
        load_mnist("test", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t10k-images-idx3-ubyte.gz"]


def test_an_interrupted_write_leaves_no_partial_file(shared, tmp_path, monkeypatch):
    serve_locally(monkeypatch, "t10k-labels-idx1-ubyte.gz", shared / "t10k-labels-idx1-ubyte.gz")
    copy_files(shared, tmp_path, ["t10k-images-idx3-ubyte.gz"])

    def disk_full(source, target):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(data.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        load_mnist("test", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t10k-images-idx3-ubyte.gz"]


def test_bad_split_names_are_rejected():
    with pytest.raises(ValueError, match="'train' or 'test', got 'valid'"):
        load_mnist("valid")
    with pytest.raises(ValueError, match="'train', 'valid' or 'test', got 'dev'"):
        load_binarized_mnist("dev")
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------- binarize


def test_threshold_binarize_is_exact():
    grey = ImageSet(np.array([[[[0, 127, 128, 255]]]], np.uint8), np.array([7]), 256)
    binary = binarize(grey)
    assert binary.levels == 2 and binary.images.dtype == np.uint8
    np.testing.assert_array_equal(binary.images, [[[[0, 0, 1, 1]]]])
    np.testing.assert_array_equal(binary.labels, [7])
    three = ImageSet(np.array([[[[0, 1, 2]]]], np.uint8), np.array([0]), 3)
    np.testing.assert_array_equal(binarize(three).images, [[[[0, 1, 1]]]])  # 0.5 counts as on
    np.testing.assert_array_equal(binarize(three, threshold=0.75).images, [[[[0, 0, 1]]]])


def test_stochastic_binarize_is_seeded_and_keeps_the_mean():
    digits = data.load_digits("train")
    first = binarize(digits, method="stochastic", seed=3)
    np.testing.assert_array_equal(first.images, binarize(digits, "stochastic", seed=3).images)
    assert not np.array_equal(first.images, binarize(digits, "stochastic", seed=4).images)
    assert set(np.unique(first.images)) == {0, 1}
    assert first.images.mean() == pytest.approx(digits.scaled().mean(), abs=0.005)
    ends = ImageSet(np.array([[[[0, 16] * 500]]], np.uint8), np.array([0]), 17)
    np.testing.assert_array_equal(binarize(ends, "stochastic").images, ends.images // 16)
    with pytest.raises(ValueError, match="'threshold' or 'stochastic', got 'random'"):
        binarize(digits, method="random")

"""Checkpoints: round trips, atomic writes, and refusal of every damaged or foreign file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import minigen as mg
from minigen import checkpoint, nn
from minigen.checkpoint import CheckpointError, load, save


def _state():
    return {
        "model": {"blocks.0.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "blocks.0.bias": np.ones(3)},
        "optimizer": {"state": [{"step": 2, "exp_avg": np.full(2, 0.5, np.float32)}, {}], "betas": (0.9, 0.999)},
        "labels": np.array([3, 1, 4], dtype=np.int64),
        "mask": np.array([[True, False]]),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), np.float16),
        "tensor": mg.tensor([1.0, 2.0]),
        "epoch": 7, "loss": 0.125, "best": float("inf"), "name": "run é", "done": False, "note": None,
        "numpy_number": np.float32(0.5),
        "nested": {"list": [1, "two", [3.0, None]], "nothing": {}},
    }


def _assert_same(loaded, expected):
    """Equal values with equal types all the way down (Tensors come back as arrays)."""
    if isinstance(expected, mg.Tensor):
        expected = expected.numpy()
    if isinstance(expected, np.ndarray):
        assert isinstance(loaded, np.ndarray) and loaded.dtype == expected.dtype
        np.testing.assert_array_equal(loaded, expected)
    elif isinstance(expected, dict):
        assert isinstance(loaded, dict) and list(loaded) == list(expected)
        for key in expected:
            _assert_same(loaded[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for a, b in zip(loaded, expected):
            _assert_same(a, b)
    else:
        assert type(loaded) is type(expected) and loaded == expected


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "run.npz"
    save(_state(), path)
    return path


# ----------------------------------------------------------------------------
# Round trips


def test_round_trip_keeps_structure_values_and_types(saved):
    expected = _state()
    expected["numpy_number"] = 0.5  # NumPy scalars come back as Python numbers
    _assert_same(load(saved), expected)


def test_the_file_is_a_plain_npz_with_readable_names_and_json_metadata(saved):
    with np.load(saved, allow_pickle=False) as archive:
        assert "model/blocks.0.weight" in archive.files
        assert "optimizer/state/0/exp_avg" in archive.files
        meta = json.loads(archive[checkpoint.META_KEY].tobytes().decode("utf-8"))
    assert meta["format"] == checkpoint.FORMAT and meta["version"] == checkpoint.VERSION
    assert len(meta["sha256"]) == 64


def test_a_model_round_trips_through_a_checkpoint(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2))
    save({"model": model.state_dict()}, tmp_path / "model.npz")
    mg.manual_seed(3)
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2))
    other.load_state_dict(load(tmp_path / "model.npz")["model"])
    for p, q in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_device_arrays_are_saved_as_numpy(tmp_path, device):
    x = mg.tensor([[1.0, 2.0]], device=device)
    save({"tensor": x, "array": x.data}, tmp_path / "x.npz")
    loaded = load(tmp_path / "x.npz")
    assert all(isinstance(a, np.ndarray) for a in loaded.values())
    np.testing.assert_array_equal(loaded["array"], [[1.0, 2.0]])


def test_saving_again_replaces_the_file_and_leaves_no_temporary_files(saved):
    save({"epoch": 8}, saved)
    assert load(saved) == {"epoch": 8}
    assert os.listdir(saved.parent) == [saved.name]


def test_the_file_gets_the_usual_permissions(saved, tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # created with the process umask, like any file
    assert os.stat(saved).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


# ----------------------------------------------------------------------------
# What cannot be saved


@pytest.mark.parametrize(
    "state, message",
    [
        ({"x": np.array([{}, 1], dtype=object)}, "'x' is an array of Python objects.*would need pickle"),
        ({"a": {"b": {1, 2}}}, "cannot store 'a/b' of type set"),
        ({"a": {3: np.zeros(1)}}, "dict keys must be strings, got 3 under 'a'"),
        ([np.zeros(1)], "state must be a dict, got list"),
    ],
)
def test_unsupported_values_are_refused_before_anything_is_written(state, message, tmp_path):
    with pytest.raises(TypeError, match=message):
        save(state, tmp_path / "bad.npz")
    assert os.listdir(tmp_path) == []


def test_two_arrays_under_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same name 'a/b'"):
        save({"a/b": np.zeros(1), "a": {"b": np.ones(1)}}, tmp_path / "bad.npz")


# ----------------------------------------------------------------------------
# Atomic writes


def test_a_write_that_fails_midway_leaves_the_old_file_intact(saved, monkeypatch):
    original = saved.read_bytes()
    real_write_array = np.lib.format.write_array
    written = []

    def fail_on_the_second_array(*args, **kwargs):
        if written:
            raise OSError("disk full")
        written.append(True)
        real_write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_on_the_second_array)
    with pytest.raises(OSError, match="disk full"):
        save({"a": np.zeros(1000), "b": np.ones(1000)}, saved)
    assert written, "the failure must come after part of the file was written"
    monkeypatch.undo()
    assert saved.read_bytes() == original
    assert os.listdir(saved.parent) == [saved.name]
    _assert_same(load(saved)["model"], _state()["model"])


def test_an_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save({"a": np.zeros(3)}, tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------
# Damaged and foreign files


def _refused(path, *fragments):
    with pytest.raises(CheckpointError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.6, 0.99])
def test_a_truncated_file_is_refused(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    _refused(saved, "not an .npz archive", "truncated")


def _flip_byte_inside(path, needle: bytes):
    data = bytearray(path.read_bytes())
    at = data.index(needle) + len(needle) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_array_data_is_refused(saved):
    _flip_byte_inside(saved, np.arange(12, dtype=np.float32).tobytes())
    _refused(saved, "model/blocks.0.weight")


def test_a_flipped_byte_in_the_metadata_is_refused(saved):
    _flip_byte_inside(saved, b'"format"')
    _refused(saved, checkpoint.META_KEY)


def _rewrite(path, change):
    """Rewrite a checkpoint as a valid zip with ``change(entries, meta)`` applied (a forgery)."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {key: archive[key] for key in archive.files}
    meta = json.loads(entries.pop(checkpoint.META_KEY).tobytes())
    change(entries, meta)
    entries[checkpoint.META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **entries)


def test_changed_array_values_fail_the_checksum(saved):
    _rewrite(saved, lambda entries, meta: entries["labels"].__setitem__(0, 9))
    _refused(saved, "checksum")


def test_an_array_the_metadata_does_not_describe_is_refused(saved):
    def add_array(entries, meta):
        entries["extra"] = np.zeros(1)
        meta["sha256"] = checkpoint._checksum(entries)

    _rewrite(saved, add_array)
    _refused(saved, "do not match its metadata")


def test_a_newer_format_version_is_refused(saved):
    _rewrite(saved, lambda entries, meta: meta.update(version=99))
    _refused(saved, "format version 99", f"reads version {checkpoint.VERSION}")


def test_an_object_array_is_never_unpickled(saved):
    def smuggle(entries, meta):
        entries["labels"] = np.array([{"evil": 1}], dtype=object)  # np.savez pickles this

    _rewrite(saved, smuggle)
    assert zipfile.is_zipfile(saved)
    _refused(saved, "pickle")


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "write",
    [
        lambda path: path.write_bytes(np.random.default_rng(0).bytes(2000)),
        lambda path: path.write_bytes(b""),
        lambda path: path.write_bytes(_npy_bytes(np.arange(3))),
    ],
    ids=["random_bytes", "empty", "npy_array"],
)
def test_files_that_are_not_archives_are_refused(tmp_path, write):
    path = tmp_path / "x.npz"
    write(path)
    _refused(path, "not an .npz archive")


def test_an_npz_from_elsewhere_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    _refused(path, "not written by minigen.save")


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at .*missing.npz"):
        load(tmp_path / "missing.npz")

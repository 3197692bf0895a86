"""Atomic writes: the file is whole or untouched, and no temporary file is left behind."""

import os

import pytest

from minigen.files import write_atomically, write_text_atomically


def test_text_is_written_whole_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("old")
    write_text_atomically(path, "new: é")
    assert path.read_text(encoding="utf-8") == "new: é"
    assert os.listdir(tmp_path) == ["notes.md"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("kept")

    def half_then_fail(file):
        file.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(path), half_then_fail)
    assert path.read_text() == "kept"
    assert os.listdir(tmp_path) == ["result.json"]

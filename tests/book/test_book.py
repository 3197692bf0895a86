"""The book's conventions and its tooling: no stored outputs, the header and setup
cell every chapter shares, the index, ``minigen book export`` and its errors."""

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from minigen.course import book
from minigen.cli import main

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob(book.CHAPTER_GLOB))
CHAPTER_IDS = [path.stem for path in CHAPTERS]

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""
SETUP_LINES = [
    "import minigen as mg",
    'FAST = os.environ.get("MINIGEN_FAST") == "1"',
    'DEVICE = "cuda" if mg.cuda_available() else "cpu"',
    "mg.manual_seed(0)",
]


def test_the_book_has_chapters():
    assert [path.name for path in CHAPTERS][:1] == ["01-probability.md"]


# ----------------------------------------------------------------------------
# Nothing executed is stored


def _stored_outputs(notebook) -> list[int]:
    """Indices of the code cells that carry outputs or an execution count."""
    return [index for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]


def _notebook_files() -> list[Path]:
    """Every file under book/ that jupytext reads as a notebook (.md chapters, any .ipynb)."""
    return sorted(path for path in BOOK.rglob("*") if path.suffix in (".md", ".ipynb") and path.name != "README.md")


def test_stored_outputs_are_detected(tmp_path):
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=1, outputs=[
        nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])])
    assert _stored_outputs(executed) == [0]


@pytest.mark.parametrize("path", _notebook_files(), ids=lambda path: str(path.relative_to(BOOK)))
def test_no_chapter_holds_outputs(path):
    import jupytext

    assert _stored_outputs(jupytext.read(path)) == [], f"{path} holds outputs: clear them before committing"


def _tracked_book_files() -> list[str]:
    """The files under book/ that git tracks (in a git checkout), else those on disk."""
    listing = subprocess.run(["git", "ls-files", "book"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode == 0:
        return listing.stdout.splitlines()
    return [str(path.relative_to(ROOT)) for path in BOOK.rglob("*")]


def test_no_notebook_files_are_committed_under_book():
    notebooks = [name for name in _tracked_book_files() if name.endswith(".ipynb")]
    assert notebooks == [], f"commit chapters as MyST markdown (.md), not .ipynb: {notebooks}"


# ----------------------------------------------------------------------------
# The conventions every chapter follows


@pytest.mark.parametrize("path", CHAPTERS, ids=CHAPTER_IDS)
def test_chapter_starts_with_the_header_and_its_numbered_title(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER), f"{path.name} must start with the jupytext MyST header"
    number = int(path.name[:2])
    assert re.search(rf"^# {number}\. \S", text[len(HEADER):].lstrip("\n"), re.M), \
        f"{path.name}: the first heading must be '# {number}. Title'"


@pytest.mark.parametrize("path", CHAPTERS, ids=CHAPTER_IDS)
def test_first_code_cell_is_the_setup_cell(path):
    cells = [cell for cell in book.read_notebook(path).cells if cell.cell_type == "code"]
    assert cells, f"{path.name} has no code cells"
    setup = cells[0].source.splitlines()
    missing = [line for line in SETUP_LINES if not any(have.startswith(line) for have in setup)]
    assert missing == [], f"{path.name}: the first code cell lacks {missing}"


def test_readme_lists_every_chapter():
    index = (BOOK / "README.md").read_text(encoding="utf-8")
    for chapter in book.chapters():
        title = chapter.title.split(". ", 1)[1]
        assert chapter.path.name in index and title in index, f"book/README.md does not list {chapter.path.name}"


# ----------------------------------------------------------------------------
# The `minigen book` command


def test_book_list_prints_every_chapter_with_its_title(capsys):
    assert main(["book", "list"]) == 0
    out = capsys.readouterr().out
    for chapter in book.chapters():
        assert chapter.path.name in out and chapter.title in out


def test_export_writes_one_valid_notebook_per_chapter(tmp_path, capsys):
    assert main(["book", "export", str(tmp_path / "notebooks")]) == 0
    written = sorted((tmp_path / "notebooks").iterdir())
    assert [path.name for path in written] == [f"{path.stem}.ipynb" for path in CHAPTERS]
    for path, chapter in zip(written, CHAPTERS):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        assert _stored_outputs(notebook) == []
        assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
        assert len(notebook.cells) == len(book.read_notebook(chapter).cells)
    assert f"wrote {len(CHAPTERS)} notebooks" in capsys.readouterr().out


def test_a_missing_book_folder_says_to_run_from_a_clone(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-book-here"
    monkeypatch.setattr(book, "BOOK", missing)
    for command in (["book", "list"], ["book", "export", str(tmp_path / "out")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert str(missing) in err and "run from a clone of minigen" in err


def test_missing_notebook_tools_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jupytext", None)
    with pytest.raises(book.BookError, match=re.escape("pip install -e '.[book]'")):
        book.export(tmp_path)


# ----------------------------------------------------------------------------
# How the chapters are executed


FAILING_CHAPTER = HEADER + """
# 1. A chapter that fails

```{code-cell} ipython3
import os
import matplotlib
assert os.environ["MINIGEN_FAST"] == "1" and matplotlib.get_backend().lower() == "agg"
open("written-here.txt", "w").close()
```

```{code-cell} ipython3
answer = 6 * 7
assert answer == 41, "the answer is not 41"
```
"""


def test_a_failing_cell_is_reported_with_its_source_and_error(tmp_path):
    chapter = tmp_path / "01-fails.md"
    chapter.write_text(FAILING_CHAPTER, encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(book.ChapterError) as error:
        book.run_chapter(chapter, workdir)
    message = str(error.value)
    assert "01-fails.md: cell 2 failed" in message
    assert "answer = 6 * 7" in message and "AssertionError: the answer is not 41" in message
    assert (workdir / "written-here.txt").exists()  # the first cell ran in fast mode, with Agg, in workdir


def test_fast_without_execute_is_refused(tmp_path, capsys):
    assert main(["book", "export", "--fast", str(tmp_path)]) == 2
    assert "--fast only changes how chapters execute" in capsys.readouterr().err

"""The book: find its chapters, export them as plain notebooks, execute them.

The chapters live in ``book/`` beside the package in a clone of minigen, as
MyST-markdown notebooks (jupytext), so that their diffs are readable and no
outputs are stored. Students open them in JupyterLab with jupytext; for Colab
or a course site, ``minigen book export OUT_DIR`` writes plain ``.ipynb``
files (``--execute`` runs them first, so the figures are in the files)::

    minigen book list
    minigen book export notebooks/
    minigen book export --execute --fast notebooks/

The notebook tooling (jupytext, nbclient, nbformat) comes with the ``book``
and ``dev`` extras, not with minigen itself, so it is imported only here,
inside the functions that need it.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from ..files import write_text_atomically

BOOK = Path(__file__).resolve().parents[2] / "book"
CHAPTER_GLOB = "[0-9][0-9]-*.md"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT = 300  # seconds per cell; a full-mode chapter's longest cell takes a few minutes at most


class BookError(FileNotFoundError):
    """The book's folder, or the tooling needed to read and run it, is missing."""


class ChapterError(RuntimeError):
    """A chapter failed while executing; the message holds the cell's source and the error."""


class Chapter(NamedTuple):
    path: Path
    title: str  # the text of the chapter's first "# " heading, e.g. "1. Images as probability distributions"


def _require(module: str):
    """Import one of the notebook tools, or say how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BookError(f"the book needs {module}, which is not installed: pip install -e '.[book]'") from None


def chapters(book: Path | None = None) -> list[Chapter]:
    """The chapters in ``book`` (default: ``book/`` beside the package), in order."""
    book = Path(book) if book is not None else BOOK
    if not book.is_dir():
        raise BookError(f"the book's chapters are not here: {book} does not exist. The book is not part of an "
                        f"installed package: run from a clone of minigen (git clone, then pip install -e '.[book]')")
    return [Chapter(path, _title(path)) for path in sorted(book.glob(CHAPTER_GLOB))]


def _title(path: Path) -> str:
    heading = re.search(r"^# (.+)$", path.read_text(encoding="utf-8"), re.M)
    if heading is None:
        raise ValueError(f"{path} has no '# N. Title' heading; every chapter starts with one")
    return heading.group(1).strip()


def read_notebook(path: Path):
    """A chapter as an nbformat notebook (no outputs), with the ``python3`` kernelspec."""
    jupytext = _require("jupytext")
    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata.pop("jupytext", None)  # a plain notebook, not one paired with a text file
    return notebook


def kernel_environment(fast: bool, backend: str | None = None) -> dict:
    """The kernel's environment: this one, with ``MINIGEN_FAST=1`` exactly when ``fast``,
    and ``MPLBACKEND`` set when ``backend`` is given (the tests use "Agg")."""
    env = {key: value for key, value in os.environ.items() if key != "MINIGEN_FAST"}
    if fast:
        env["MINIGEN_FAST"] = "1"
    if backend is not None:
        env["MPLBACKEND"] = backend
    return env


def execute_notebook(notebook, name: str, workdir: Path, env: dict, timeout: int = CELL_TIMEOUT):
    """Run ``notebook`` top to bottom in a fresh ``python3`` kernel started in ``workdir``.

    Raises :class:`ChapterError` naming the chapter and the failing cell, with
    the cell's source and the error (a Python exception or a cell timeout).
    """
    nbclient = _require("nbclient")
    current = {}

    def remember(cell, cell_index):
        current.update(cell=cell, index=cell_index)

    client = nbclient.NotebookClient(notebook, kernel_name=KERNELSPEC["name"], timeout=timeout,
                                     resources={"metadata": {"path": str(workdir)}}, on_cell_start=remember)
    try:
        client.execute(env=env)
    except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as exc:
        raise ChapterError(f"{name}: cell {current['index']} failed (counting from 0, markdown cells included)."
                           f"\n--- source ---\n{current['cell'].source}\n--- error ---\n{_error_text(exc)}") from None
    return notebook


def _error_text(exc) -> str:
    """The error without the cell source nbclient repeats in front of it, and without colour codes."""
    text = str(exc).split("------------------\n")[-1]
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


def run_chapter(path: Path, workdir: Path, timeout: int = CELL_TIMEOUT) -> float:
    """Execute one chapter as the tests do (fresh kernel, fast mode, Agg backend, in ``workdir``);
    return its wall time in seconds."""
    start = time.perf_counter()
    environment = kernel_environment(fast=True, backend="Agg")
    execute_notebook(read_notebook(path), Path(path).name, workdir, environment, timeout)
    return time.perf_counter() - start


def export(out_dir, execute: bool = False, fast: bool = False, book: Path | None = None) -> list[Path]:
    """Write every chapter to ``out_dir`` as ``NN-slug.ipynb`` with the ``python3`` kernel.

    With ``execute`` each is run first (in ``out_dir/work``, where the
    chapters write their files; ``fast`` runs them in fast mode) so that it
    carries its outputs. Each notebook is validated with nbformat and written
    atomically: a failure never leaves a half-written file. Returns the paths.
    """
    nbformat = _require("nbformat")
    found = chapters(book)
    out_dir = Path(out_dir)
    workdir = out_dir / "work"
    (workdir if execute else out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in tqdm(found, desc="executing chapters", unit="chapter", disable=not execute):
        notebook = read_notebook(chapter.path)
        if execute:
            execute_notebook(notebook, chapter.path.name, workdir, kernel_environment(fast))
        nbformat.validate(notebook)
        target = out_dir / f"{chapter.path.stem}.ipynb"
        text = nbformat.writes(notebook)
        write_text_atomically(target, text)
        written.append(target)
    return written


# ----------------------------------------------------------------------------
# The `minigen book` command


def _list(args) -> int:
    for chapter in chapters():
        print(f"{chapter.path.name:32s} {chapter.title}")
    return 0


def _export(args) -> int:
    if args.fast and not args.execute:
        raise ValueError("--fast only changes how chapters execute: add --execute, or drop --fast")
    written = export(args.out_dir, execute=args.execute, fast=args.fast)
    how = "without outputs"
    if args.execute:
        how = "executed in fast mode" if args.fast else "executed"
    print(f"wrote {len(written)} notebooks ({how}) to {args.out_dir}")
    return 0


def add_command(commands) -> None:
    """Add ``minigen book list`` and ``minigen book export [--execute] [--fast] OUT_DIR``
    to the CLI's sub-parsers."""
    book = commands.add_parser("book", help="list the book's chapters, or export them as .ipynb notebooks")
    actions = book.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="print the chapters and their titles")
    listing.set_defaults(run=_list)
    exporting = actions.add_parser("export", help="write every chapter as a plain .ipynb (for Colab or a course site)")
    exporting.add_argument("out_dir", metavar="OUT_DIR", help="folder for the notebooks (created if missing)")
    exporting.add_argument("--execute", action="store_true",
                           help="run each notebook first so it carries its outputs (minutes)")
    exporting.add_argument("--fast", action="store_true",
                           help="with --execute: fast mode (smaller models, fewer steps), as the tests run it")
    exporting.set_defaults(run=_export)

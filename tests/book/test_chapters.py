"""Every chapter of the book runs top to bottom, as a student would run it.

One test per chapter file matching ``book/[0-9][0-9]-*.md`` (chapters added
later are picked up by the glob): a fresh ``python3`` kernel, fast mode
(``MINIGEN_FAST=1``), the Agg backend, a temporary working directory and a
per-cell timeout. The chapters' own assertions are the checks; a failure
shows the failing cell's source and its error.
"""

from pathlib import Path

import pytest

from minigen.course import book

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob(book.CHAPTER_GLOB))


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[path.stem for path in CHAPTERS])
def test_chapter_executes_in_fast_mode(path, tmp_path):
    try:
        book.run_chapter(path, tmp_path)
    except book.ChapterError as exc:
        pytest.fail(str(exc), pytrace=False)

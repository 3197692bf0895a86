"""Reporting a benchmark: its Markdown tables, and printing and saving its result.

Every benchmark prints its results as Markdown tables (the README's tables are
copied from them) and can save the raw numbers as JSON. These helpers are the
one place that decides the table syntax and what a missing measurement (no
PyTorch installed, say) looks like.
"""

from __future__ import annotations

import json

from ..files import write_text_atomically

RULES = {"l": "---", "r": "---:"}
"""The alignment row's cell for a left- ("l") or right-aligned ("r") column."""


def markdown_table(header, rows, align: str) -> str:
    """A Markdown table: the ``header`` cells, the alignment row, then one line per row of cells.

    ``align`` has one letter per column, "l" (text) or "r" (numbers), e.g. "lrr".
    Cells are written as ``str(cell)``, so format numbers before passing them.
    """
    if len(align) != len(header) or set(align) - set(RULES):
        raise ValueError(f"markdown_table: align needs one 'l' or 'r' per column ({len(header)}), got {align!r}")
    lines = [header, *rows]
    for row in lines:
        if len(row) != len(header):
            raise ValueError(f"markdown_table: a row has {len(row)} cells but the header has {len(header)}: {row}")
    text = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in lines]
    text.insert(1, "|" + "".join(RULES[a] + "|" for a in align))
    return "\n".join(text)


def cell(value, template: str = "{}", scale: float = 1) -> str:
    """``template`` filled with ``value * scale``, or "-" where there is no value (None):
    a missing measurement. ``cell(0.0123, "{:.1f} ms", 1e3)`` is "12.3 ms"."""
    return "-" if value is None else template.format(value * scale)


def publish(result: dict, text: str, json_path=None) -> None:
    """Print the Markdown ``text``; also write ``result`` as JSON when a path is given."""
    print(text)
    if json_path:
        write_text_atomically(json_path, json.dumps(result, indent=2))

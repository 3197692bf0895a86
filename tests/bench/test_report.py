"""The benchmarks' reporting helpers: exact Markdown tables, missing cells, printed and saved results."""

import json

import pytest

from minigen.bench.report import cell, markdown_table, publish


def test_markdown_table_writes_header_alignment_row_and_cells():
    table = markdown_table(["model", "image", "seconds"], [["PixelCNN", "8x8", "1.25 s"], ["", 16, 3]], "llr")
    assert table == ("| model | image | seconds |\n"
                     "|---|---|---:|\n"
                     "| PixelCNN | 8x8 | 1.25 s |\n"
                     "|  | 16 | 3 |")


def test_markdown_table_rejects_a_bad_alignment_or_a_ragged_row():
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        markdown_table(["a", "b"], [], "l")
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        markdown_table(["a", "b"], [], "lc")
    with pytest.raises(ValueError, match="a row has 1 cells but the header has 2"):
        markdown_table(["a", "b"], [["x"]], "lr")


def test_cell_formats_a_value_or_marks_a_missing_one():
    assert cell(0.0123, "{:.1f} ms", 1e3) == "12.3 ms"
    assert cell(2.5, "{:.2f}x") == "2.50x"
    assert cell(None, "{:.1f} ms", 1e3) == "-"
    assert cell(0.0, "{:.1f}") == "0.0", "zero is a measurement, not a missing one"


def test_publish_prints_the_table_and_saves_the_result(tmp_path, capsys):
    result = {"rows": [{"seconds": 1.5}], "torch": None}
    publish(result, "| a |", str(tmp_path / "result.json"))
    assert capsys.readouterr().out == "| a |\n"
    assert json.loads((tmp_path / "result.json").read_text()) == result
    publish(result, "| a |", None)
    assert capsys.readouterr().out == "| a |\n" and len(list(tmp_path.iterdir())) == 1

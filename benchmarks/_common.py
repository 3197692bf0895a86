"""What the benchmark scripts share beyond :mod:`minigen.bench.timing`: printing and saving a result."""

from __future__ import annotations

import json


def publish(result: dict, table: str, json_path: str | None) -> None:
    """Print the Markdown table; also write ``result`` as JSON when a path is given."""
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)

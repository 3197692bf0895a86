"""What the benchmark scripts share: fresh worker processes and the facts that head a table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np


def in_fresh_process(script: str, *arguments: str) -> dict:
    """Run ``python script *arguments`` in a new interpreter; return the JSON of its last stdout line.

    One process per library keeps one library's thread pool from competing
    with the other's for the cores. The worker's stderr (progress, errors)
    passes through to ours.
    """
    command = [sys.executable, script, *arguments]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_count() -> int:
    """The cores this process may run on (the affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def facts(device: str, torch_version: str | None) -> dict:
    """Machine, device, date and library versions: the first keys of every result."""
    return {
        "machine": f"{platform.machine()}, {cpu_count()} cores",
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "numpy": np.__version__,
        "torch": torch_version,
    }


def facts_line(result: dict) -> str:
    """The sentence above a results table, from the keys :func:`facts` wrote."""
    return (f"Machine: {result['machine']}; device {result['device']}; {result['date']}; "
            f"NumPy {result['numpy']}; PyTorch {result['torch'] or 'not installed'}.")


def publish(result: dict, table: str, json_path: str | None) -> None:
    """Print the Markdown table; also write ``result`` as JSON when a path is given."""
    print(table)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)

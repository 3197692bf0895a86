"""One Markdown report from what scripts/gpu-check wrote into OUT_DIR.

    python scripts/gpu_report.py OUT_DIR > OUT_DIR/gpu-check.md

The table puts each engine benchmark on the GPU beside the same benchmark on
this machine's CPU (and PyTorch CPU where it ran); the test summary line goes
above it and `minigen bench`'s own tables below it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from minigen.bench.report import cell, markdown_table
from minigen.bench.timing import facts_line


def test_summary(text: str) -> str:
    """pytest's closing line ("... passed ... in 12.3s"), or a note that there is none."""
    lines = [line.strip("= ") for line in text.splitlines() if " passed" in line or " failed" in line]
    return lines[-1] if lines else "no pytest summary found (see pytest-gpu.txt)"


def engine_table(cpu: dict, cuda: dict) -> str:
    """Each engine benchmark row: minigen on the CPU, minigen on the GPU, the speed-up, PyTorch CPU."""
    rows = []
    for name, on_cpu in cpu["rows"].items():
        on_gpu = cuda["rows"].get(name, {}).get("minigen_ms")
        speedup = on_cpu["minigen_ms"] / on_gpu if on_gpu else None
        rows.append([name, f"{on_cpu['minigen_ms']:.3f} ms", cell(on_gpu, "{:.3f} ms"), cell(speedup, "{:.1f}x"),
                     cell(on_cpu.get("torch_ms"), "{:.3f} ms")])
    return markdown_table(["benchmark", "minigen, CPU", "minigen, GPU", "CPU / GPU", "PyTorch CPU"], rows, "lrrrr")


def report(out: Path) -> str:
    cpu = json.loads((out / "engine-cpu.json").read_text())
    cuda = json.loads((out / "engine-cuda.json").read_text())
    tests = (out / "pytest-gpu.txt").read_text() if (out / "pytest-gpu.txt").exists() else ""
    bench = out / "bench" / "timing.md"
    parts = ["## GPU check (scripts/gpu-check)", "", f"gpu-marked tests on the GPU: {test_summary(tests)}", "",
             f"CPU: {facts_line(cpu)}", f"GPU: {facts_line(cuda)}", "", engine_table(cpu, cuda)]
    if bench.exists():
        parts += ["", "### minigen bench --quick, both devices", "", bench.read_text().strip()]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(report(Path(sys.argv[1])), end="")

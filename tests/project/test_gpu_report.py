"""scripts/gpu_report.py: the GPU check's one table, built from what scripts/gpu-check wrote."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_report_module():
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "scripts" / "gpu_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _engine(device, conv_ms, torch_ms):
    return {"machine": "x86_64, 16 cores", "devices": [device], "date": "2026-12-05 08:00 UTC", "numpy": "2.4",
            "torch": None, "rows": {"conv2d fwd+bwd": {"minigen_ms": conv_ms, "torch_ms": torch_ms, "ratio": None}}}


def test_the_report_puts_the_gpu_beside_the_cpu(tmp_path):
    gpu_report = _load_report_module()
    (tmp_path / "engine-cpu.json").write_text(json.dumps(_engine("cpu", 50.0, 40.0)))
    (tmp_path / "engine-cuda.json").write_text(json.dumps(_engine("cuda", 2.0, None)))
    (tmp_path / "pytest-gpu.txt").write_text("....\n253 passed, 812 deselected in 41.2s\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "timing.md").write_text("| device | ... |\n")
    text = gpu_report.report(tmp_path)
    assert "gpu-marked tests on the GPU: 253 passed, 812 deselected in 41.2s" in text
    assert "| conv2d fwd+bwd | 50.000 ms | 2.000 ms | 25.0x | 40.000 ms |" in text
    assert text.rstrip().endswith("| device | ... |")


def test_a_missing_test_log_is_said_not_hidden(tmp_path):
    gpu_report = _load_report_module()
    assert gpu_report.test_summary("collected nothing") == "no pytest summary found (see pytest-gpu.txt)"

"""The command line: help, the demo, and its errors."""

import subprocess
import sys

import pytest

from minigen import backend
from minigen.cli import main
from minigen.data import load_digits
from minigen.models.classifier import accuracy, train_classifier


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "minigen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_reports_accuracy(capsys):
    assert main(["demo", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "8x8 digits" in out


def test_demo_on_a_missing_gpu_explains(monkeypatch, capsys):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["demo", "--device", "cuda"]) == 2
    assert "pip install 'minigen[gpu]'" in capsys.readouterr().err


def test_conv_net_learns_the_digits():
    """The engine end to end: Adam on a small conv net reaches >= 95% test accuracy."""
    model, _ = train_classifier(load_digits("train"), epochs=15, progress=False)
    assert accuracy(model, load_digits("test")) >= 0.95

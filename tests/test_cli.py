"""The command line: help, demo, train, sample, classify, and their errors."""

import os
import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from minigen.engine import backend
from minigen.cli import main
from minigen.data import load_digits
from minigen.models.classifier import accuracy, train_classifier
from minigen.train import read_checkpoint
from minigen.viz import CAPTION_BAND


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("demo", "train", "sample", "classify"))


def test_version_names_the_package_version(capsys):
    import minigen
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"minigen {minigen.__version__}" == f"minigen {version('minigen')}"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "minigen", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_classify_reports_accuracy(capsys):
    assert main(["classify", "--epochs", "2"]) == 0
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


# ----------------------------------------------------------------------------
# train, sample, demo: end to end through main()

TINY_TRAIN = ["train", "pixelcnn", "--data", "digits", "--steps", "5", "--batch-size", "256",
              "--hidden", "8", "--blocks", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 5-step checkpoint and its sample grid, made once by `minigen train`."""
    folder = tmp_path_factory.mktemp("run")
    checkpoint, samples = folder / "run.npz", folder / "run.png"
    assert main(TINY_TRAIN + ["--checkpoint", str(checkpoint), "--samples", str(samples)]) == 0
    return checkpoint, samples


def test_train_writes_a_checkpoint_and_a_sample_grid(trained):
    checkpoint, samples = trained
    assert read_checkpoint(checkpoint)["step"] == 5
    # a title line, 64 digits 4x enlarged (8 rows), a caption line and one row of 8 real test digits
    assert matplotlib.image.imread(samples).shape[:2] == (CAPTION_BAND + 8 * 33 + 1 + CAPTION_BAND + 33 + 1, 400)


def test_train_shows_progress_and_reports_the_test_nll(tmp_path, capsys):
    assert main(TINY_TRAIN + ["--checkpoint", str(tmp_path / "a.npz")]) == 0
    out, err = capsys.readouterr()
    assert "5/5" in err and "loss=" in err and "bpd=" in err  # the progress bar
    assert re.search(r"test NLL [\d.]+ nats/image = [\d.]+ bits/dim", out)
    assert (tmp_path / "a.png").is_file()  # the samples go beside the checkpoint by default


def test_sample_writes_the_same_grid_with_the_naive_and_the_cached_sampler(trained, tmp_path, capsys):
    checkpoint, _ = trained
    common = ["sample", "--checkpoint", str(checkpoint), "--n", "6", "--seed", "3"]
    assert main(common + ["--out", str(tmp_path / "cached.png")]) == 0
    assert "cached sampler" in capsys.readouterr().out
    assert main(common + ["--naive", "--out", str(tmp_path / "naive.png")]) == 0
    assert "naive sampler" in capsys.readouterr().out
    cached, naive = (matplotlib.image.imread(tmp_path / name) for name in ("cached.png", "naive.png"))
    assert cached.shape[:2] == (2 * CAPTION_BAND + 2 * (33 + 1), 400)  # one row of 6 samples, one of 6 real digits
    np.testing.assert_array_equal(cached[CAPTION_BAND:], naive[CAPTION_BAND:])  # the titles name the samplers
    assert not np.array_equal(cached[:CAPTION_BAND], naive[:CAPTION_BAND])


def test_a_conditional_model_samples_the_classes_asked_for(tmp_path, capsys):
    checkpoint = tmp_path / "cond.npz"
    assert main(TINY_TRAIN + ["--conditional", "--checkpoint", str(checkpoint)]) == 0
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "4", "--labels", "1,2",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "4", "--class", "12",
                 "--out", str(tmp_path / "b.png")]) == 2
    assert "labels [12] are out of range: this model knows classes 0..9" in capsys.readouterr().err


def test_train_resumes_from_its_checkpoint(trained, tmp_path, capsys):
    checkpoint = tmp_path / "run.npz"
    checkpoint.write_bytes(trained[0].read_bytes())
    # argparse keeps the last --steps given
    assert main(TINY_TRAIN + ["--steps", "6", "--checkpoint", str(checkpoint), "--resume"]) == 0
    assert read_checkpoint(checkpoint)["step"] == 6
    assert main(TINY_TRAIN + ["--hidden", "16", "--checkpoint", str(checkpoint), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["sample", "--checkpoint", "nowhere.npz"], "no checkpoint file at 'nowhere.npz'"),
    (["train", "pixelcnn", "--data", "binarized-mnist", "--levels", "4"], "binarized-mnist has 2 levels"),
    (["train", "pixelcnn", "--data", "digits", "--layers", "3"], "pixelcnn has no setting 'layers'"),
    (["train", "pixelcnn", "--data", "digits", "--resume", "--checkpoint", "nowhere.npz"],
     "cannot resume: no checkpoint at 'nowhere.npz'"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigen: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "pixelcnn", "--data", "cifar"], "invalid choice: 'cifar'"),
    (["train", "pixelcnn", "--data", "digits", "--steps", "0"], "must be positive, got 0"),
    (["sample", "--checkpoint", "a.npz", "--labels", "1,x"], "comma-separated integers"),
    (["sample", "--checkpoint", "a.npz", "--labels", "1", "--class", "2"], "not allowed with argument"),
])
def test_malformed_arguments_exit_2_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_demo_trains_samples_and_reports_the_nll(tmp_path, capsys):
    assert main(["demo", "--steps", "2", "--ddpm-steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"test NLL [\d.]+ nats/image = [\d.]+ bits/dim", out)
    assert re.search(r"test NLL bound [\d.]+ nats/image", out)
    for row in ("| gated-pixelcnn |", "cached sampler", "naive sampler", "| ddpm |", "ddim sampler, 50 steps",
                "ddpm sampler, all T steps", "| independent pixels (baseline) |"):
        assert row in out, row
    assert sorted(os.listdir(tmp_path)) == ["ddpm.npz", "ddpm.png", "pixelcnn.npz", "pixelcnn.png"]

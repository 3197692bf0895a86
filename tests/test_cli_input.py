"""What a user meets at the command line: Ctrl-C, outputs that cannot be written, options
that do not fit the model, a run that would replace another, and bugs that keep their traceback.

Every refusal is checked the same way (see ``refused``): exit status 2, one line
``minigen: ...`` naming the problem, nothing written, no work started.
"""

import os
import shutil
import sys

import pytest

from minigen import cli
from minigen.cli import main
from minigen.models.pixelcnn import PixelCNN
from minigen.progress import widgets_available
from minigen.train import TrainConfig, read_checkpoint, train

TINY_PIXELCNN = ["pixelcnn", "--data", "digits", "--batch-size", "256", "--hidden", "8", "--blocks", "1"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two trained checkpoints: a 3-step PixelCNN and a 2-step unconditional DDPM (T=30)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    runs = {"pixelcnn": TrainConfig(family="pixelcnn", model={"hidden": 8, "blocks": 1}, steps=3, batch_size=256),
            "ddpm": TrainConfig(family="ddpm", model={"base_channels": 8, "T": 30}, steps=2, batch_size=256)}
    for name, config in runs.items():
        config.checkpoint, config.verbose = str(folder / f"{name}.npz"), False
        train(config)
    return {name: str(folder / f"{name}.npz") for name in runs}


def refused(argv, message, capsys, folder) -> str:
    """Run ``argv``; assert it exits 2 with one line containing ``message``, having
    written nothing in ``folder`` and started no work (no progress bar). Returns the line."""
    before = sorted(os.listdir(folder))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("minigen: ") and err.count("\n") == 1, err
    assert message in err, err
    assert out == "" and sorted(os.listdir(folder)) == before
    return err


# ----------------------------------------------------------------------------
# Ctrl-C


def interrupt_at_call(monkeypatch, model_class, call: int) -> None:
    """Make ``model_class.loss`` raise KeyboardInterrupt on its ``call``-th use (from 1), as Ctrl-C would."""
    real_loss, calls = model_class.loss, []

    def loss(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_loss(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "loss", loss)


def test_ctrl_c_saves_the_current_step_says_how_to_resume_and_exits_130(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "run.npz"
    interrupt_at_call(monkeypatch, PixelCNN, 4)  # during step 4: steps 1-3 are done
    assert main(["train", *TINY_PIXELCNN, "--steps", "5", "--checkpoint", str(checkpoint)]) == 130
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert lines[-1] == (f"minigen: interrupted at step 3 of 5; the run is saved in {checkpoint}: "
                         f"continue it with `minigen train --resume --checkpoint {checkpoint}`")
    assert "Traceback" not in "".join(lines)
    assert read_checkpoint(checkpoint)["step"] == 3  # the default --checkpoint-every is 500
    monkeypatch.undo()
    assert main(["train", "--resume", "--checkpoint", str(checkpoint)]) == 0  # the line's command, as given
    assert read_checkpoint(checkpoint)["step"] == 5


def test_ctrl_c_before_any_step_finished_saves_nothing(tmp_path, monkeypatch, capsys):
    interrupt_at_call(monkeypatch, PixelCNN, 1)
    assert main(["train", *TINY_PIXELCNN, "--checkpoint", str(tmp_path / "run.npz")]) == 130
    assert "interrupted at step 0 of 1000, before a step finished; nothing was saved" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------
# Outputs that cannot be written, found before any work


@pytest.mark.parametrize("option", ["--checkpoint", "--samples"])
def test_train_refuses_an_output_under_a_file(option, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    argv = ["train", *TINY_PIXELCNN, "--checkpoint", str(tmp_path / "run.npz")]
    refused(argv + [option, str(tmp_path / "notes.txt" / "run.png")], "notes.txt is a file, not a folder",
            capsys, tmp_path)


def test_train_and_sample_refuse_a_read_only_folder(checkpoints, tmp_path, capsys, monkeypatch):
    """The operating system's answer for the folder decides (root may write anywhere, so the
    answer "no" is given here the way a read-only folder gives it to a user)."""
    import minigen.files
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(minigen.files.os, "access",
                        lambda path, mode: False if os.path.abspath(path) == str(locked) else real_access(path, mode))
    refused(["train", *TINY_PIXELCNN, "--checkpoint", str(locked / "run.npz")], "is not writable",
            capsys, locked)
    refused(["sample", "--checkpoint", checkpoints["pixelcnn"], "--out", str(locked / "a.png")],
            "is not writable", capsys, locked)


def test_sample_refuses_an_output_under_a_file_and_a_folder_as_output(checkpoints, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    common = ["sample", "--checkpoint", checkpoints["pixelcnn"], "--out"]
    refused(common + [str(tmp_path / "notes.txt" / "a.png")], "is a file, not a folder", capsys, tmp_path)
    (tmp_path / "grid.png").mkdir()
    refused(common + [str(tmp_path / "grid.png")], "it is a folder", capsys, tmp_path)


def test_an_n_too_large_for_memory_is_refused_with_the_numbers(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_memory_limit", lambda: 2**30)
    line = refused(["sample", "--checkpoint", checkpoints["pixelcnn"], "--n", "100000000",
                    "--out", str(tmp_path / "a.png")], "--n 100000000 would need about", capsys, tmp_path)
    assert "TiB" in line and "1.0 GiB allowed" in line and "draw at most" in line


def test_the_demo_refuses_an_output_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    refused(["demo", "--out", str(tmp_path / "out")], "is a file, not a folder", capsys, tmp_path)


# ----------------------------------------------------------------------------
# A saved run is continued or replaced, never silently overwritten


def test_an_existing_checkpoint_is_kept_without_resume_or_force(checkpoints, tmp_path, capsys):
    checkpoint = tmp_path / "run.npz"
    shutil.copy(checkpoints["pixelcnn"], checkpoint)
    before = checkpoint.read_bytes()
    refused(["train", *TINY_PIXELCNN, "--steps", "1", "--checkpoint", str(checkpoint)],
            "already holds a pixelcnn run at step 3; continue it with --resume, replace it with --force",
            capsys, tmp_path)
    assert checkpoint.read_bytes() == before
    assert main(["train", *TINY_PIXELCNN, "--steps", "1", "--checkpoint", str(checkpoint), "--force"]) == 0
    assert read_checkpoint(checkpoint)["step"] == 1


def test_resume_takes_the_settings_from_the_checkpoint(checkpoints, tmp_path):
    checkpoint = tmp_path / "run.npz"
    shutil.copy(checkpoints["pixelcnn"], checkpoint)
    assert main(["train", "--resume", "--checkpoint", str(checkpoint), "--steps", "4"]) == 0
    state, original = read_checkpoint(checkpoint), read_checkpoint(checkpoints["pixelcnn"])
    assert state["step"] == 4 and state["model_config"] == original["model_config"]
    assert {key: state["config"][key] for key in ("batch_size", "lr", "model")} == \
        {"batch_size": 256, "lr": 1e-3, "model": {"hidden": 8, "blocks": 1}}


@pytest.mark.parametrize("option, message", [
    (["--hidden", "16"], "cannot resume with --hidden 16: {path} was trained with --hidden 8"),
    (["--lr", "0.01"], "cannot resume with --lr 0.01: {path} was trained with --lr 0.001"),
    (["--layers", "2"], "{path} holds a pixelcnn run, which has no layers setting"),
])
def test_resume_refuses_a_setting_that_differs_from_the_checkpoint(option, message, checkpoints, capsys):
    path = checkpoints["pixelcnn"]
    refused(["train", "--resume", "--checkpoint", path, *option], message.format(path=path),
            capsys, os.path.dirname(path))


def test_resume_refuses_another_family(checkpoints, capsys):
    path = checkpoints["pixelcnn"]
    refused(["train", "gated-pixelcnn", "--resume", "--checkpoint", path],
            "cannot resume with FAMILY gated-pixelcnn: " + f"{path} was trained with FAMILY pixelcnn",
            capsys, os.path.dirname(path))


# ----------------------------------------------------------------------------
# Options that the model does not use, or that contradict each other


@pytest.mark.parametrize("family, option, message", [
    ("pixelcnn", ["--sampler", "ddim"], "--sampler is a sampling option of the diffusion families (ddpm, latent-ddpm)"),
    ("pixelcnn", ["--steps", "5"], "--steps is a sampling option of the diffusion families (ddpm, latent-ddpm)"),
    ("pixelcnn", ["--eta", "0.5"], "--eta is a sampling option of the diffusion families (ddpm, latent-ddpm)"),
    ("pixelcnn", ["--guidance", "2"], "--guidance is a sampling option of the diffusion families (ddpm, latent-ddpm)"),
    ("ddpm", ["--temperature", "0.5"], "--temperature is a sampling option of the autoregressive families"),
    ("ddpm", ["--naive"], "--naive is a sampling option of the autoregressive families"),
    ("ddpm", ["--guidance", "2"], "was trained without --conditional; drop --guidance"),
    ("ddpm", ["--sampler", "ddpm", "--steps", "5"], "the ddpm sampler always takes all T=30 steps"),
    ("ddpm", ["--sampler", "ddpm", "--eta", "0.5"], "drop --eta, or add --sampler ddim"),
    ("ddpm", ["--eta", "5"], "--eta must be in [0, 1]"),
    ("ddpm", ["--steps", "31"], "--steps 31 is more than the model's T=30 diffusion steps"),
    ("pixelcnn", ["--out", "grid.gif"], ".gif is not a format minigen writes; end the name with .png, .jpg"),
    ("pixelcnn", ["--out", "grid"], "no extension is not a format minigen writes"),
])
def test_sample_refuses_options_that_do_not_apply(family, option, message, checkpoints, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["sample", "--checkpoint", checkpoints[family], *option], message, capsys, tmp_path)


def test_a_jpg_name_gets_a_jpeg(checkpoints, tmp_path):
    out = tmp_path / "grid.jpg"
    assert main(["sample", "--checkpoint", checkpoints["ddpm"], "--n", "4", "--out", str(out)]) == 0
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # the JPEG signature, not PNG's


@pytest.mark.parametrize("option, message", [
    (["--levels", "300"], "levels must be at most 256 (images are 8-bit grey), got 300"),
    (["--resume", "--force"], "--resume continues the run in --checkpoint and --force replaces it"),
    (["--p-uncond", "0.2"], "add --conditional, or drop --p-uncond"),
])
def test_train_refuses_settings_that_cannot_work(option, message, tmp_path, capsys):
    refused(["train", *TINY_PIXELCNN, "--checkpoint", str(tmp_path / "run.npz"), *option], message,
            capsys, tmp_path)


def test_train_without_a_family_says_what_it_needs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["train", "--data", "digits"], "train needs a FAMILY and --data", capsys, tmp_path)


# ----------------------------------------------------------------------------
# Bugs keep their traceback


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug")])
def test_a_library_bug_keeps_its_traceback(error, checkpoints, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli, "model_from_checkpoint", broken)
    with pytest.raises(type(error), match="a bug"):
        main(["sample", "--checkpoint", checkpoints["pixelcnn"], "--out", str(tmp_path / "a.png")])


def test_course_commands_still_report_their_input_errors_in_one_line(capsys):
    assert main(["grade", "--task", "no-such-task"]) == 2
    assert capsys.readouterr().err.startswith("minigen: unknown task 'no-such-task'")


# ----------------------------------------------------------------------------
# Progress


def test_the_widget_bar_is_chosen_only_where_ipywidgets_imports(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not widgets_available()  # a terminal: plain text
    monkeypatch.setitem(sys.modules, "IPython", object())
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # a notebook without ipywidgets
    assert not widgets_available()
    monkeypatch.setitem(sys.modules, "ipywidgets", object())
    assert widgets_available()


def test_the_test_set_evaluation_after_training_shows_progress(tmp_path, capsys):
    assert main(["train", *TINY_PIXELCNN, "--steps", "1", "--checkpoint", str(tmp_path / "run.npz")]) == 0
    err = capsys.readouterr().err
    assert "test NLL: 100%" in err and "359/359" in err

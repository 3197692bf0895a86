"""The training loop: exact resume, complete checkpoints, safe writes, clear refusals; and the image grids."""

import os
import signal
from dataclasses import replace

import matplotlib.image
import numpy as np
import pytest

import minigen as mg
from minigen.data import load_digits
from minigen.models.config import config_dict
from minigen.train import (FAMILIES, TrainConfig, TrainingInterrupted, build_model, load_data, load_model,
                           read_checkpoint, train)
from minigen.viz import image_grid, save_grid

# A tiny run: 1,437 training digits in batches of 512 make 2 steps per epoch,
# so 6 steps cross two epoch boundaries and a resume at step 3 lands mid-epoch.
TINY = {"pixelcnn": {"hidden": 8, "blocks": 1}, "gated-pixelcnn": {"hidden": 4, "layers": 2},
        "pixelsnail": {"hidden": 8, "blocks": 1, "residual_layers": 1, "key_channels": 4, "value_channels": 4},
        "ddpm": {"base_channels": 8, "channel_mults": [1], "groups": 4, "T": 30, "schedule": "cosine"},
        "vae": {"hidden": 8, "blocks": 0}, "vqvae": {"hidden": 8, "blocks": 0, "codebook_size": 8}}


def tiny_config(tmp_path, family="pixelcnn", name="run.npz", **changes):
    settings = dict(family=family, data="digits", model=TINY[family], steps=6, batch_size=512, lr=3e-3,
                    checkpoint=str(tmp_path / name), checkpoint_every=3, verbose=False)
    return TrainConfig(**{**settings, **changes})


@pytest.mark.parametrize("family, conditional", [("pixelcnn", False), ("gated-pixelcnn", True), ("ddpm", True)])
def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, family, conditional):
    config = tiny_config(tmp_path, family, conditional=conditional, grad_clip=1.0)
    whole = train(config)
    first = train(replace(config, steps=3, checkpoint=str(tmp_path / "parts.npz")))
    mg.manual_seed(123)  # resuming must not depend on the random state it starts in
    rest = train(replace(config, checkpoint=str(tmp_path / "parts.npz")), resume=True)
    assert len(whole["losses"]) == 6 and rest["step"] == 6
    assert first["losses"] + rest["losses"] == whole["losses"]
    assert rest["test_nll"] == whole["test_nll"]


def test_checkpoint_holds_the_whole_run_and_rebuilds_the_model(tmp_path):
    config = tiny_config(tmp_path)
    result = train(config)
    state = read_checkpoint(config.checkpoint)
    assert state["step"] == 6 and state["config"]["lr"] == config.lr
    assert state["model_config"] == config_dict(result["model"].config) and state["image_shape"] == [1, 8, 8]
    assert state["optimizer"]["type"] == "Adam" and state["optimizer"]["state"][0]["step"] == 6
    assert set(state["ema"]["shadow"]) == {name for name, _ in result["model"].named_parameters()}
    assert state["rng"] == mg.backend.get_rng_state()

    x = load_digits("test", levels=2).images[:16]
    with mg.no_grad():
        expected = result["model"].log_prob(x).numpy()  # the returned model holds the EMA weights
        np.testing.assert_array_equal(load_model(config.checkpoint).log_prob(x).numpy(), expected)
        last_weights = load_model(config.checkpoint, ema=False)
        assert not np.array_equal(last_weights.log_prob(x).numpy(), expected)
    for name, value in last_weights.state_dict().items():
        np.testing.assert_array_equal(value, state["model"][name])


def test_a_checkpoint_write_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, steps=3)
    train(config)
    before = open(config.checkpoint, "rb").read()

    def crash_midway(file, **arrays):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash_midway)  # what mg.save writes with
    with pytest.raises(OSError, match="disk full"):
        train(replace(config, steps=6), resume=True)  # step 6 is the next save
    assert open(config.checkpoint, "rb").read() == before
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left behind
    monkeypatch.undo()
    assert read_checkpoint(config.checkpoint)["step"] == 3


def test_ctrl_c_mid_update_saves_the_finished_step_and_resume_is_exact(tmp_path, monkeypatch):
    """A SIGINT that arrives inside Adam's update is held until the step is whole, so the
    checkpoint at that step resumes to the losses of an uninterrupted run."""
    config = tiny_config(tmp_path, checkpoint_every=100)
    whole = train(replace(config, checkpoint=str(tmp_path / "whole.npz")))
    real_step, calls = mg.optim.Adam.step, []

    def step_with_ctrl_c(self):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while the weights are being updated
        real_step(self)

    monkeypatch.setattr(mg.optim.Adam, "step", step_with_ctrl_c)
    with pytest.raises(TrainingInterrupted) as interrupt:
        train(config)
    assert (interrupt.value.step, interrupt.value.total, interrupt.value.checkpoint) == (2, 6, config.checkpoint)
    assert read_checkpoint(config.checkpoint)["step"] == 2
    monkeypatch.undo()
    rest = train(config, resume=True)
    assert rest["losses"] == whole["losses"][2:] and rest["test_nll"] == whole["test_nll"]


def test_levels_beyond_eight_bits_are_refused():
    with pytest.raises(ValueError, match="levels must be at most 256"):
        TrainConfig(levels=300)
    with pytest.raises(ValueError, match="levels_out must be at most 256"):
        load_data("digits", "test", 300)


@pytest.mark.parametrize("change, named", [
    ({"lr": 1e-2}, "lr: 0.003 in the checkpoint, 0.01 now"),
    ({"batch_size": 256}, "batch_size"),
    ({"model": {"hidden": 16, "blocks": 1}}, "hidden"),
    ({"family": "gated-pixelcnn", "model": TINY["gated-pixelcnn"]}, "family"),
])
def test_resume_with_other_settings_is_refused(tmp_path, change, named):
    config = tiny_config(tmp_path, steps=3)
    train(config)
    with pytest.raises(ValueError, match="cannot resume") as error:
        train(replace(config, steps=6, **change), resume=True)
    assert named in str(error.value) and "new run" in str(error.value)


def test_resume_may_change_the_run_settings(tmp_path):
    config = tiny_config(tmp_path, steps=3)
    train(config)
    result = train(replace(config, steps=4, checkpoint_every=100, verbose=False), resume=True)
    assert result["step"] == 4 and len(result["losses"]) == 1


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.npz.*without resume"):
        train(tiny_config(tmp_path, name="missing.npz"), resume=True)
    with pytest.raises(ValueError, match="resume needs a checkpoint path"):
        train(replace(tiny_config(tmp_path), checkpoint=None), resume=True)


def test_a_checkpoint_that_is_not_from_training_is_refused(tmp_path):
    mg.save({"weights": np.zeros(3)}, tmp_path / "other.npz")
    with pytest.raises(mg.CheckpointError, match="not a checkpoint written by minigen train.*lacks step"):
        load_model(tmp_path / "other.npz")


@pytest.mark.parametrize("settings, message", [
    ({"family": "gan"}, "unknown model family 'gan'; choose one of pixelcnn, gated-pixelcnn"),
    ({"data": "cifar"}, "unknown data set 'cifar'"),
    ({"data": "binarized-mnist", "levels": 4}, "binarized-mnist has 2 levels, but levels=4"),
    ({"data": "binarized-mnist", "conditional": True}, "binarized-mnist has no labels"),
    ({"levels": 1}, "levels must be an integer >= 2, got 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"grad_clip": -1.0}, "grad_clip must be positive"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_unknown_model_settings_list_the_known_ones():
    with pytest.raises(ValueError, match="pixelcnn has no setting 'layers'; its settings are hidden, blocks"):
        build_model(TrainConfig(model={"layers": 3}), load_digits("test", levels=2))


def test_a_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size 5000 is larger than the training set"):
        train(tiny_config(tmp_path, batch_size=5000))


def test_data_sets_come_as_integer_levels():
    digits = load_data("digits", "test", 4)
    assert digits.levels == 4 and digits.images.max() == 3 and digits.images.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown data set 'faces'"):
        load_data("faces", "train", 2)


def test_every_one_stage_family_scores_images_in_nats():
    """(The two-stage families, which need a trained autoencoder, in tests/test_two_stage.py.)"""
    x = load_digits("test", levels=2).images[:4]
    for name, family in FAMILIES.items():
        if family.first_stage is not None:
            continue
        model = build_model(TrainConfig(family=name, model=TINY[name]), load_digits("test", levels=2))
        with mg.no_grad():
            scores = family.test_nll(model, x, None).numpy()
        assert scores.shape == (4,) and np.all(scores > 0)


# ----------------------------------------------------------------------------
# Image grids


def test_image_grid_places_images_inside_one_pixel_borders():
    images = np.arange(6).reshape(6, 1, 1, 1) % 2  # 0, 1, 0, 1, 0, 1
    grid = image_grid(images, levels=2, nrow=3, scale=2)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 1)
    assert grid[0].tolist() == [[0.5]] * 10 and grid[:, 0].tolist() == [[0.5]] * 7
    assert grid[1:3, 4:6, 0].tolist() == [[1, 1], [1, 1]]  # image 1, enlarged
    assert grid[4:6, 1:3, 0].tolist() == [[1, 1], [1, 1]]  # image 3: second row, first column


def test_image_grid_of_colour_floats_and_a_ragged_last_row():
    images = np.random.default_rng(0).random((5, 3, 2, 2)).astype(np.float32)
    grid = image_grid(images)  # 3 per row, 2 rows, the last cell empty
    assert grid.shape == (7, 10, 3)
    np.testing.assert_array_equal(grid[1:3, 4:6], images[1].transpose(1, 2, 0))
    assert np.all(grid[4:6, 7:9] == 0.5)


@pytest.mark.parametrize("images, levels, message", [
    (np.zeros((2, 8, 8), np.int64), 2, r"shape \(N, 1 or 3, H, W\)"),
    (np.zeros((2, 1, 8, 8), np.int64), None, "integer images need levels"),
    (np.full((2, 1, 8, 8), 2), 2, "levels 0..1, got values from 2 to 2"),
    (np.zeros((2, 1, 8, 8), np.float32), 2, "levels must be None"),
])
def test_image_grid_rejects_what_it_cannot_draw(images, levels, message):
    with pytest.raises(ValueError, match=message):
        image_grid(images, levels)


def test_save_grid_writes_an_enlarged_png_atomically(tmp_path):
    images = load_digits("test", levels=17).images[:10]
    path = tmp_path / "new folder" / "grid.png"
    save_grid(images, 17, path, nrow=5)
    picture = matplotlib.image.imread(path)
    assert picture.shape[:2] == (2 * 33 + 1, 5 * 33 + 1)  # 8x8 digits shown at 32x32
    assert os.listdir(path.parent) == ["grid.png"]

"""Two-stage training from the command line: an autoencoder first (vae, vqvae), then a
latent DDPM or a token prior on its code, each a checkpoint of its own; sampling decodes.

The digits (8x8) keep it fast: their 2x2 latent grid is enough to exercise every path.
"""

import os

import matplotlib.image
import numpy as np
import pytest

from minigen.cli import main
from minigen.data import load_digits
from minigen.models.latent import LatentDiffusion, TokenPrior
from minigen.train import TrainConfig, evaluate_nll, load_model, read_checkpoint, train

AUTOENCODER = {"hidden": 8, "blocks": 0}


def run(config: TrainConfig, folder, name: str) -> str:
    config.checkpoint, config.verbose = str(folder / f"{name}.npz"), False
    train(config)
    return config.checkpoint


@pytest.fixture(scope="module")
def first_stages(tmp_path_factory):
    """A 3-step VAE and VQ-VAE on the 17-level digits."""
    folder = tmp_path_factory.mktemp("first_stages")
    vae = run(TrainConfig(family="vae", levels=17, model=AUTOENCODER | {"latent_channels": 2}, steps=3,
                          batch_size=64), folder, "vae")
    vqvae = run(TrainConfig(family="vqvae", levels=17, model=AUTOENCODER | {"codebook_size": 8, "embedding_dim": 4},
                            steps=3, batch_size=64), folder, "vqvae")
    return {"vae": vae, "vqvae": vqvae}


def test_a_latent_ddpm_trains_on_a_vae_and_samples_decoded_images(first_stages, tmp_path, capsys):
    checkpoint = str(tmp_path / "latent.npz")
    assert main(["train", "latent-ddpm", "--data", "digits", "--autoencoder", first_stages["vae"], "--steps", "2",
                 "--base-channels", "8", "--T", "30", "--conditional", "--checkpoint", checkpoint]) == 0
    assert "test latent L_simple" in capsys.readouterr().out
    state = read_checkpoint(checkpoint)
    assert state["config"]["levels"] == 17, "--levels defaults to the autoencoder's"
    model = load_model(checkpoint)
    assert isinstance(model, LatentDiffusion) and model.diffusion.schedule.T == 30
    assert main(["sample", "--checkpoint", checkpoint, "--n", "4", "--class", "3", "--steps", "5",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert matplotlib.image.imread(tmp_path / "grid.png").ndim >= 2
    images = model.sample(3, labels=[0, 1, 2], steps=4)
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 16


def test_a_token_prior_trains_on_a_vqvae_and_its_score_is_the_exact_code_nll(first_stages, tmp_path):
    config = TrainConfig(family="token-prior", levels=17, model={"hidden": 8, "blocks": 1}, steps=2,
                         batch_size=64, autoencoder=first_stages["vqvae"])
    config.checkpoint, config.verbose = str(tmp_path / "prior.npz"), False
    result = train(config)
    model = result["model"]
    assert isinstance(model, TokenPrior)
    test = load_digits("test", 17)
    exact = -float(model.log_prob_tokens(model.encode(test.images)).data.mean())
    assert result["test_nll"] == pytest.approx(exact, rel=1e-5)
    assert result["test_bits_per_dim"] == pytest.approx(exact / (4 * np.log(2)), rel=1e-5), "per token: 2x2 grid"
    assert evaluate_nll(model, test, "token-prior") == pytest.approx(exact, rel=1e-5)


def test_a_two_stage_run_resumes_without_its_autoencoder_file(first_stages, tmp_path, capsys):
    vae = tmp_path / "vae.npz"
    vae.write_bytes(open(first_stages["vae"], "rb").read())
    checkpoint = str(tmp_path / "latent.npz")
    argv = ["train", "latent-ddpm", "--data", "digits", "--autoencoder", str(vae), "--steps", "2",
            "--base-channels", "8", "--T", "30", "--checkpoint", checkpoint]
    assert main(argv) == 0
    os.remove(vae)  # the checkpoint holds the frozen autoencoder's weights and settings
    assert main(["train", "--resume", "--checkpoint", checkpoint, "--steps", "3"]) == 0
    assert read_checkpoint(checkpoint)["step"] == 3
    capsys.readouterr()
    assert main(["train", "--resume", "--checkpoint", checkpoint, "--base-channels", "16"]) == 2
    assert "trained with --base-channels 8" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "latent-ddpm", "--data", "digits", "--autoencoder", "{vqvae}"], "holds a vqvae model"),
    (["train", "token-prior", "--data", "digits", "--autoencoder", "{vae}"], "holds a vae model"),
    (["train", "token-prior", "--data", "digits"], "--autoencoder PATH"),
    (["train", "pixelcnn", "--data", "digits", "--autoencoder", "{vae}"], "drop --autoencoder"),
    (["train", "vae", "--data", "digits", "--conditional"], "a vae is unconditional"),
    (["sample", "--checkpoint", "{vae}"], "does not generate them; train a latent-ddpm"),
    (["sample", "--checkpoint", "{vqvae}"], "train a token-prior"),
])
def test_wrong_pairings_are_one_line_errors_before_training(first_stages, tmp_path, capsys, argv, message):
    argv = [arg.format(**first_stages) for arg in argv] + ["--out" if argv[0] == "sample" else "--checkpoint",
                                                           str(tmp_path / "out.npz")]
    if argv[0] == "sample":
        argv[-1] = str(tmp_path / "out.png")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("minigen: ") and err.count("\n") == 1 and message in err, err
    assert "training" not in out and os.listdir(tmp_path) == []


def test_an_autoencoder_run_writes_test_images_beside_their_reconstructions(tmp_path, capsys):
    grid = tmp_path / "rebuilt.png"
    assert main(["train", "vqvae", "--data", "digits", "--levels", "17", "--steps", "2", "--hidden", "8",
                 "--blocks", "0", "--codebook-size", "8", "--checkpoint", str(tmp_path / "vq.npz"),
                 "--samples", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "test reconstruction cross-entropy" in out and "reconstructions" in out
    pixels = matplotlib.image.imread(grid)
    assert pixels.shape[0] > pixels.shape[1] / 2, "8 rows of 8 images: 4 of test images, 4 of reconstructions"

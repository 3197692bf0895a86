"""The VAE and the VQ-VAE of minigen.models.autoencoder: shapes, the straight-through
estimator, the EMA codebook and its restarts, the latent scale in checkpoints,
the rate and perplexity, the doors, and a few seconds of learning on MNIST."""

from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen import optim
from minigen.data import load_mnist
from minigen.engine import backend
from minigen.engine.autograd import Tensor
from minigen.models.autoencoder import (
    VAE, VQVAE, ema_codebook_update, kl_to_standard_normal, nearest_codes, perplexity, rate_bits,
    sample_gaussian, straight_through,
)
from minigen.models.config import config_dict
from minigen.models.diffusion import gaussian_kl

MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
MNIST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
TINY = dict(hidden=8, blocks=0, groups=4)


def tiny_vae(**settings):
    return VAE(**{**TINY, "latent_channels": 2, **settings})


def tiny_vqvae(**settings):
    return VQVAE(**{**TINY, "embedding_dim": 4, "codebook_size": 8, **settings})


def random_images(shape, levels=256, seed=0):
    return np.random.default_rng(seed).integers(0, levels, size=shape)


def assert_rejected(call, error, *words):
    """``call()`` raises ``error`` with a one-line message holding every one of ``words``."""
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# ----------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("size, grid", [(28, 7), (56, 14), (8, 2)])
def test_vae_maps_images_to_a_grid_a_quarter_the_size_and_back(size, grid):
    model = tiny_vae()
    x = random_images((2, 1, size, size))
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, 2, grid, grid)
    images = model.decode(mean)
    assert images.shape == (2, 1, size, size) and images.dtype == np.int64
    assert 0 <= images.min() and images.max() <= 255
    assert model.reconstruct(x).shape == (2, 1, size, size)


@pytest.mark.parametrize("size, grid", [(28, 7), (56, 14), (8, 2)])
def test_vqvae_maps_images_to_tokens_and_back(size, grid):
    model = tiny_vqvae()
    x = random_images((2, 1, size, size))
    tokens = model.encode_tokens(x)
    assert tokens.shape == (2, grid, grid) and tokens.dtype == np.int64
    assert 0 <= tokens.min() and tokens.max() < 8
    assert model.decode_tokens(tokens).shape == (2, 1, size, size)
    np.testing.assert_array_equal(model.reconstruct(x), model.decode_tokens(tokens))


def test_non_square_images_and_several_channels():
    model = tiny_vae(channels=3, levels=4)
    mean, _ = model.encode(random_images((1, 3, 8, 12), levels=4))
    assert mean.shape == (1, 2, 2, 3)
    assert model.decode(mean).shape == (1, 3, 8, 12)


# ----------------------------------------------------------------------------
# The VAE's loss


def test_kl_is_the_closed_form_gaussian_kl_and_the_sample_is_reparameterised():
    rng = np.random.default_rng(1)
    mean = Tensor(rng.standard_normal((3, 2, 2, 2)).astype(np.float32), requires_grad=True)
    logvar = Tensor(rng.standard_normal((3, 2, 2, 2)).astype(np.float32), requires_grad=True)
    zero = Tensor(np.zeros((3, 2, 2, 2), dtype=np.float32))
    expected = gaussian_kl(mean, logvar, zero, zero).numpy().reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(kl_to_standard_normal(mean, logvar).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(kl_to_standard_normal(zero, zero).numpy(), 0.0)

    mg.manual_seed(3)
    z = sample_gaussian(mean, logvar)
    mg.manual_seed(3)
    eps = mg.randn(*mean.shape).numpy()
    np.testing.assert_allclose(z.numpy(), mean.numpy() + np.exp(logvar.numpy() / 2) * eps, rtol=1e-5)
    z.sum().backward()
    np.testing.assert_allclose(mean.grad, 1.0)  # dz/dmean = 1, dz/dlogvar = sigma * eps / 2
    np.testing.assert_allclose(logvar.grad, np.exp(logvar.numpy() / 2) * eps / 2, rtol=1e-5)


def test_vae_loss_is_reconstruction_plus_beta_times_kl():
    x = random_images((2, 1, 8, 8))
    model = tiny_vae(beta=0.5)
    mg.manual_seed(0)
    reconstruction, kl = model.loss_terms(x)
    mg.manual_seed(0)
    loss = model.loss(x)
    np.testing.assert_allclose(loss.item(), (reconstruction.numpy() + 0.5 * kl.numpy()).mean(), rtol=1e-6)
    assert (kl.numpy() > 0).all() and (reconstruction.numpy() > 0).all()


# ----------------------------------------------------------------------------
# The VQ-VAE: straight-through, EMA, restarts


def test_straight_through_passes_the_decoders_gradient_to_the_encoder_unchanged():
    model = tiny_vqvae(beta=0.0)
    x = random_images((2, 1, 8, 8))
    z_e = Tensor(np.random.default_rng(0).standard_normal((2, 4, 2, 2)).astype(np.float32), requires_grad=True)
    tokens, z_q = model.quantize(z_e)
    passed = straight_through(z_e, z_q)
    np.testing.assert_allclose(passed.numpy(), z_q, rtol=1e-6, atol=1e-6)  # the value of z_q
    model.reconstruction_nll(model.decoder(passed), x).sum().backward()

    at_z_q = Tensor(passed.numpy(), requires_grad=True)
    model.reconstruction_nll(model.decoder(at_z_q), x).sum().backward()
    assert np.abs(at_z_q.grad).max() > 0
    np.testing.assert_array_equal(z_e.grad, at_z_q.grad)


def test_the_encoder_learns_from_the_decoder_through_the_quantiser():
    """With beta = 0 the loss's gradient at the encoder is exactly the decoder's gradient
    at z_q pushed back through the encoder; quantisation itself contributes nothing."""
    model = tiny_vqvae(beta=0.0).eval()  # eval: the codebook stays put
    x = random_images((2, 1, 8, 8))
    model.loss(x).backward()
    through_loss = {name: p.grad.copy() for name, p in model.encoder.named_parameters()}
    model.zero_grad()

    z_e = model.encoder(model._inputs(x))
    _, z_q = model.quantize(z_e)
    at_z_q = Tensor(straight_through(z_e, z_q).numpy(), requires_grad=True)
    model.reconstruction_nll(model.decoder(at_z_q), x).mean().backward()
    z_e.backward(at_z_q.grad)
    for name, p in model.encoder.named_parameters():
        assert np.abs(through_loss[name]).max() > 0, name
        np.testing.assert_allclose(p.grad, through_loss[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_nearest_codes_pick_the_closest_row_and_the_lower_index_on_ties():
    codebook = np.array([[0, 0], [1, 1]], dtype=np.float32)
    vectors = np.array([[0.2, 0], [0.8, 0.6], [1, 2], [3, 1], [1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(nearest_codes(vectors, codebook), [0, 1, 1, 1, 0])


def test_ema_update_matches_a_hand_computation():
    """2 codes, 4 vectors, decay 1/2, epsilon 1/2 (large, so the smoothing shows)."""
    cluster_size = np.array([1, 1], dtype=np.float32)
    embedding_sum = np.array([[0, 0], [1, 1]], dtype=np.float32)
    vectors = np.array([[0.2, 0], [0.8, 0.6], [1, 2], [3, 1]], dtype=np.float32)
    codes = np.array([0, 1, 1, 1])
    n, m, e = ema_codebook_update(cluster_size, embedding_sum, vectors, codes, decay=0.5, epsilon=0.5)
    # N = 1/2 [1, 1] + 1/2 [1, 3];  m_0 = 1/2 [0, 0] + 1/2 [0.2, 0];  m_1 = 1/2 [1, 1] + 1/2 [4.8, 3.6]
    np.testing.assert_allclose(n, [1.0, 2.0])
    np.testing.assert_allclose(m, [[0.1, 0.0], [2.9, 2.3]], rtol=1e-6)
    # smoothed N = (N + 1/2) / (3 + 2 * 1/2) * 3 = [1.125, 1.875]
    np.testing.assert_allclose(e, [[0.1 / 1.125, 0.0], [2.9 / 1.875, 2.3 / 1.875]], rtol=1e-6)


def test_the_model_updates_its_codebook_by_ema_in_training_only():
    model = tiny_vqvae(codebook_size=2, embedding_dim=2, decay=0.5, epsilon=0.5)
    model.codebook = np.array([[0, 0], [1, 1]], dtype=np.float32)
    model.embedding_sum = model.codebook.copy()
    # the four vectors above as one 2x2 image's cells, in raster order
    z_e = np.array([[0.2, 0], [0.8, 0.6], [1, 2], [3, 1]], dtype=np.float32).reshape(1, 2, 2, 2).transpose(0, 3, 1, 2)
    tokens, _ = model.quantize(Tensor(z_e))
    np.testing.assert_array_equal(tokens, [[[0, 1], [1, 1]]])
    model.update_codebook(z_e, tokens)
    np.testing.assert_allclose(model.codebook, [[0.1 / 1.125, 0.0], [2.9 / 1.875, 2.3 / 1.875]], rtol=1e-6)

    x = random_images((2, 1, 8, 8))
    before = model.codebook.copy()
    with model.evaluating():
        model.loss(x)
    model.eval()
    model.loss(x)
    np.testing.assert_array_equal(model.codebook, before)
    model.train()
    model.loss(x)
    assert not np.array_equal(model.codebook, before)


def test_a_code_unused_for_restart_after_steps_moves_to_an_encoder_output():
    mg.manual_seed(0)
    model = tiny_vqvae(codebook_size=4, embedding_dim=2, restart_after=3)
    model.codebook = np.array([[0, 0], [1, 0], [0, 1], [50, 50]], dtype=np.float32)
    model.embedding_sum = model.codebook.copy()
    rng = np.random.default_rng(0)
    for step in range(3):
        vectors = model.codebook[[0, 1, 2, 0, 1, 2]] + 0.01 * rng.standard_normal((6, 2)).astype(np.float32)
        z_e = vectors.reshape(1, 2, 3, 2).transpose(0, 3, 1, 2)
        tokens, _ = model.quantize(Tensor(z_e))
        assert 3 not in tokens
        model.update_codebook(z_e, tokens)
        if step < 2:
            assert model.unused_steps.tolist() == [0, 0, 0, step + 1]
            assert np.abs(model.codebook[3] - 50).max() < 0.01  # dead, but not yet restarted
    assert any(np.array_equal(model.codebook[3], v) for v in vectors), model.codebook[3]
    np.testing.assert_array_equal(model.embedding_sum[3], model.codebook[3])
    assert model.cluster_size[3] == 1 and model.unused_steps.tolist() == [0, 0, 0, 0]


def test_restart_after_zero_never_restarts():
    model = tiny_vqvae(codebook_size=4, embedding_dim=2, restart_after=0)
    vectors = np.zeros((4, 2), dtype=np.float32)
    z_e = vectors.reshape(1, 2, 2, 2).transpose(0, 3, 1, 2)
    for _ in range(5):
        model.update_codebook(z_e, np.zeros((1, 2, 2), dtype=np.int64))
    assert model.unused_steps.tolist() == [0, 5, 5, 5]
    assert not (model.codebook[1:] == 0).all(axis=1).any()


# ----------------------------------------------------------------------------
# Rate, perplexity, and the latent scale in checkpoints


def test_perplexity_of_uniform_usage_is_the_codebook_size_and_the_rate_is_cells_log2_k():
    model = tiny_vqvae(codebook_size=8)
    tokens = np.tile(np.arange(8), 4).reshape(2, 4, 4)
    usage = model.codebook_usage(tokens)
    np.testing.assert_array_equal(usage, [4] * 8)
    assert perplexity(usage) == pytest.approx(8.0)
    assert perplexity([10, 0, 0, 0]) == pytest.approx(1.0)
    assert perplexity([1, 1, 2]) == pytest.approx(np.exp(-2 * 0.25 * np.log(0.25) - 0.5 * np.log(0.5)))
    assert rate_bits(49, 128) == 49 * 7
    assert VQVAE(codebook_size=64).rate(28, 28) == 7 * 7 * 6


def test_latent_scale_makes_unit_latents_and_survives_a_checkpoint(tmp_path):
    model = tiny_vae()
    x = random_images((8, 1, 8, 8))
    scale = model.fit_latent_scale(x, seed=5)
    assert scale != 1.0 and float(model.latent_scale) == pytest.approx(scale)
    assert model.to_latents(x, seed=5).numpy().std() == pytest.approx(1.0, rel=1e-4)
    assert "latent_scale" in model.state_dict()

    mg.save({"config": config_dict(model.config), "model": model.state_dict()}, tmp_path / "vae.npz")
    saved = mg.load(tmp_path / "vae.npz")
    restored = VAE(**saved["config"])
    assert float(restored.latent_scale) == 1.0
    restored.load_state_dict(saved["model"])
    assert float(restored.latent_scale) == np.float32(scale)
    np.testing.assert_array_equal(restored.reconstruct(x), model.reconstruct(x))
    z = model.to_latents(x, seed=1)
    np.testing.assert_array_equal(restored.from_latents(z), model.from_latents(z))


def test_the_codebook_survives_a_checkpoint(tmp_path):
    model = tiny_vqvae(restart_after=1)
    model.loss(random_images((2, 1, 8, 8)))  # an EMA step and some restarts
    mg.save({"config": config_dict(model.config), "model": model.state_dict()}, tmp_path / "vq.npz")
    saved = mg.load(tmp_path / "vq.npz")
    restored = VQVAE(**saved["config"])
    restored.load_state_dict(saved["model"])
    for name in ("codebook", "embedding_sum", "cluster_size", "unused_steps"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(model, name), err_msg=name)


# ----------------------------------------------------------------------------
# Devices


def test_both_models_train_a_step_on_a_device(device):
    mg.manual_seed(0)
    x = mg.tensor(random_images((2, 1, 8, 8)), device=device)
    for model in (tiny_vae().to(device), tiny_vqvae(restart_after=1).to(device)):
        model.loss(x).backward()
        assert all(p.grad is not None and backend.device_of(p.grad) == device for p in model.parameters())
        assert all(backend.device_of(b) == device for b in model.buffers())
        assert backend.device_of(model.reconstruct(x)) == device
    assert backend.device_of(model.encode_tokens(x)) == device
    vae = tiny_vae().to(device)
    vae.fit_latent_scale(x)
    assert backend.device_of(vae.latent_scale) == device


# ----------------------------------------------------------------------------
# Learning on MNIST, for a few seconds


@pytest.fixture(scope="module")
def digits():
    """Sixteen MNIST test images, or skip."""
    missing = [name for name in MNIST_FILES if not (MNIST / name).is_file()]
    if missing:
        pytest.skip(f"MNIST files not found in {MNIST}: {missing}")
    return load_mnist("test", root=MNIST, download=False).images[:16].astype(np.int64)


def mse(levels, x):
    return float(np.mean((levels / 255.0 - x / 255.0) ** 2))


@pytest.mark.parametrize("build", [
    lambda: tiny_vae(latent_channels=4),
    lambda: tiny_vqvae(codebook_size=16, embedding_dim=8, restart_after=5),
], ids=["vae", "vqvae"])
def test_a_tiny_autoencoder_reconstructs_digits_better_than_their_mean(digits, build):
    mg.manual_seed(0)
    model = build()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = model.loss(digits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mean_image = np.broadcast_to(digits.mean(axis=0), digits.shape)
    assert mse(model.reconstruct(digits), digits) < 0.5 * mse(mean_image, digits)
    if isinstance(model, VQVAE):
        assert perplexity(model.codebook_usage(model.encode_tokens(digits))) > 4


# ----------------------------------------------------------------------------
# The doors


@pytest.mark.parametrize("model", [tiny_vae(), tiny_vqvae()], ids=["vae", "vqvae"])
def test_bad_images_are_one_line_errors(model):
    name = type(model).__name__
    assert_rejected(lambda: model.loss(random_images((2, 1, 30, 30))), ValueError,
                    f"{name}.loss", "divisible by 4", "30x30")
    assert_rejected(lambda: model.reconstruct(random_images((2, 3, 8, 8))), ValueError,
                    f"{name}.reconstruct", "(N, 1, H, W)", "(2, 3, 8, 8)")
    assert_rejected(lambda: model.loss(random_images((2, 1, 8, 8)) / 255.0), ValueError, "whole numbers")
    assert_rejected(lambda: model.loss(random_images((2, 1, 8, 8)) + 256), ValueError, "0..255")
    assert_rejected(lambda: model.loss(random_images((2, 1, 8, 8)), labels=[1, 2]), ValueError,
                    "unconditional", "pass no labels")


def test_bad_latents_tokens_and_settings_are_one_line_errors():
    vae, vq = tiny_vae(), tiny_vqvae()
    assert_rejected(lambda: vae.decode(np.zeros((1, 3, 2, 2))), ValueError,
                    "VAE.decode", "(N, 2, h, w)", "(1, 3, 2, 2)")
    assert_rejected(lambda: vae.decode(np.full((1, 2, 2, 2), np.nan)), ValueError, "finite")
    assert_rejected(lambda: vq.decode_tokens(np.zeros((1, 1, 2, 2), dtype=np.int64)), ValueError,
                    "VQVAE.decode_tokens", "(N, h, w)", "(1, 1, 2, 2)")
    assert_rejected(lambda: vq.decode_tokens(np.full((1, 2, 2), 8)), ValueError, "codes in 0..7", "8")
    assert_rejected(lambda: vq.decode_tokens(np.zeros((1, 2, 2))), ValueError, "integer array")
    assert_rejected(lambda: VQVAE(decay=1.0), ValueError, "decay must be below 1")
    assert_rejected(lambda: VQVAE(codebook_size=1), ValueError, "codebook_size must be an integer >= 2")
    assert_rejected(lambda: VAE(beta=-1.0), ValueError, "beta")
    assert_rejected(lambda: VAE(latent=3), ValueError, "VAEConfig has no setting 'latent'")

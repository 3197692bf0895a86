"""Two-stage models of minigen.models.latent: a DDPM on a frozen VAE's scaled latents and an
autoregressive prior on a frozen VQ-VAE's tokens. Sampling shapes and levels, the frozen first
stage (no gradient, no change, still in the checkpoint), the latent scale, causality over the
token grid, cached sampling, the one-line refusals, and an exact checkpoint round trip."""

from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen import optim
from minigen.data import load_mnist
from minigen.engine import backend
from minigen.models.autoencoder import VAE, VQVAE
from minigen.models.config import config_dict
from minigen.models.latent import LatentDiffusion, TokenPrior, denoising_loss

MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
MNIST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
TINY = dict(hidden=8, blocks=0, groups=4)
TINY_DIFFUSION = dict(T=50, base_channels=8, groups=4)
TINY_PRIORS = {"pixelsnail": dict(hidden=6, blocks=1, residual_layers=1, key_channels=4, value_channels=3),
               "gated-pixelcnn": dict(hidden=6, layers=2)}
CODES = 8


def random_images(n, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, size, size))


def tiny_vae(images=None):
    """A random tiny VAE, its latent scale fitted to ``images`` (random ones by default)."""
    mg.manual_seed(0)
    vae = VAE(**TINY, latent_channels=2)
    vae.fit_latent_scale(random_images(16) if images is None else images)
    return vae


def tiny_vqvae():
    mg.manual_seed(1)
    return VQVAE(**TINY, embedding_dim=4, codebook_size=CODES)


def latent_diffusion(num_classes=None, vae=None):
    mg.manual_seed(2)
    return LatentDiffusion(autoencoder=vae or tiny_vae(), num_classes=num_classes, diffusion_settings=TINY_DIFFUSION)


def token_prior(family="pixelsnail", num_classes=None):
    mg.manual_seed(3)
    return TokenPrior(autoencoder=tiny_vqvae(), num_classes=num_classes, prior_family=family,
                      prior_settings=TINY_PRIORS[family])


def assert_rejected(call, *words):
    """``call()`` raises a ValueError with a one-line message holding every one of ``words``."""
    with pytest.raises(ValueError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# ----------------------------------------------------------------------------
# Latent diffusion: samples, the frozen VAE, the latent scale


@pytest.mark.parametrize("labels, guidance", [(None, 1.0), ([0, 1, 2], 3.0)])
def test_latent_diffusion_samples_decoded_images_of_levels(labels, guidance):
    model = latent_diffusion(num_classes=None if labels is None else 3)
    images = model.generate(3, labels=labels, steps=4, guidance=guidance, seed=5)
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.int64
    assert 0 <= images.min() and images.max() <= 255 and images.std() > 0
    latents = model.generate_latents(3, labels=labels, steps=4, guidance=guidance, seed=5)
    assert latents.shape == (3, 2, 7, 7)
    assert np.abs(latents.numpy()).max() > 1, "latents are not clipped to [-1, 1] as pixels are"
    scale = float(model.autoencoder.latent_scale)
    np.testing.assert_array_equal(images, model.autoencoder.decode(latents / scale))


def test_guidance_changes_the_samples_of_a_conditional_model():
    model = latent_diffusion(num_classes=3)
    plain = model.generate_latents(2, labels=[0, 1], steps=3, seed=1).numpy()
    guided = model.generate_latents(2, labels=[0, 1], steps=3, seed=1, guidance=4.0).numpy()
    assert np.abs(plain - guided).max() > 1e-3


@pytest.mark.parametrize("build", [lambda: latent_diffusion(num_classes=3), lambda: token_prior(num_classes=3)],
                         ids=["latent-diffusion", "token-prior"])
def test_the_loss_trains_the_second_stage_only(build):
    model = build()
    frozen = model.autoencoder
    frozen_ids = {id(p) for p in frozen.parameters()}
    assert frozen_ids and not frozen_ids & {id(p) for p in model.parameters()}
    assert set(frozen.state_dict()) <= {name.removeprefix("autoencoder.") for name in model.state_dict()}
    before, second_before = frozen.state_dict(), [p.data.copy() for p in model.parameters()]
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model.loss(random_images(4), labels=[0, 1, 2, 0])
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in frozen.parameters())
        optimizer.step()
    assert not frozen.training, "the frozen autoencoder stays in eval mode (a VQ-VAE would move its codebook)"
    for name, array in frozen.state_dict().items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)
    assert any(np.abs(p.data - old).max() > 0 for p, old in zip(model.parameters(), second_before))


def test_the_autoencoder_is_a_copy_that_later_training_of_the_original_cannot_change():
    vae = tiny_vae()
    model = latent_diffusion(vae=vae)
    vae.latent_scale = np.asarray(123.0, dtype=np.float32)
    next(iter(vae.parameters())).data[...] = 0
    assert float(model.autoencoder.latent_scale) != 123.0
    assert np.abs(next(iter(model.autoencoder.parameters())).data).max() > 0


def mnist_or_random():
    if all((MNIST / name).exists() for name in MNIST_FILES):
        return load_mnist("test", root=MNIST, download=False).images[:64]
    return random_images(64)


def test_the_diffusion_learns_latents_of_unit_std_once_the_scale_is_fitted():
    images = mnist_or_random()
    mg.manual_seed(0)
    vae = VAE(**TINY, latent_channels=2)
    vae.encoder.conv_out.weight.data[:2] *= 20  # wide posterior means, as a trained VAE has (SD: std 5.5)
    scale = vae.fit_latent_scale(images)
    assert scale < 0.5, "a scale near 1 could not show that it is used"
    model = latent_diffusion(vae=vae)
    latents = model.latents(images, seed=7).numpy()
    assert abs(latents.std() - 1) < 0.05
    model.autoencoder.latent_scale = np.asarray(1.0, dtype=np.float32)  # as if never fitted
    np.testing.assert_allclose(model.latents(images, seed=7).numpy() * scale, latents, rtol=1e-5, atol=1e-6)
    model.autoencoder.latent_scale = np.asarray(scale, dtype=np.float32)
    mg.manual_seed(11)
    loss = model.loss(images[:8]).item()
    mg.manual_seed(11)
    assert loss == denoising_loss(model.diffusion, model.latents(images[:8])).item()


# ----------------------------------------------------------------------------
# The token prior: the loss, causality over the grid, sampling


def test_the_token_prior_loss_is_the_nll_of_the_vqvae_tokens():
    model = token_prior()
    x = random_images(3)
    tokens = model.autoencoder.encode_tokens(x)
    np.testing.assert_array_equal(model.encode(x), tokens)
    nll = -model.prior.log_prob(tokens[:, None]).numpy()
    np.testing.assert_allclose(model.log_prob_tokens(tokens).numpy(), -nll, rtol=1e-6)
    np.testing.assert_allclose(model.loss(x).item(), nll.mean(), rtol=1e-6)
    assert abs(nll.mean() - 49 * np.log(CODES)) < 0.5 * 49 * np.log(CODES), "about log K nats a token at the start"


@pytest.mark.parametrize("family", ["pixelsnail", "gated-pixelcnn"])
def test_the_token_prior_is_causal_over_the_token_grid(family, rng):
    """The logits of token (i, j) have zero gradient at (i, j) and every later token; a
    PixelSNAIL prior reads every earlier token (its attention reaches back to the first)."""
    model = token_prior(family)
    order = np.arange(49).reshape(7, 7)
    inputs = rng.uniform(-1, 1, (3, 1, 7, 7)).astype(np.float32)
    for i, j in [(0, 0), (0, 6), (3, 2), (6, 6)]:
        x = mg.tensor(inputs, requires_grad=True)
        logits = model.prior.network(x)[:, :, 0, i, j]
        (logits * mg.tensor(rng.standard_normal(logits.shape).astype(np.float32))).sum().backward()
        seen = np.abs(x.grad).sum(axis=(0, 1)) != 0
        assert not (seen & (order >= order[i, j])).any(), f"token {(i, j)} reads itself or a later token"
        if family == "pixelsnail":
            np.testing.assert_array_equal(seen, order < order[i, j], err_msg=f"token {(i, j)}")


@pytest.mark.parametrize("family", ["pixelsnail", "gated-pixelcnn"])
def test_token_prior_samples_decode_to_images_of_levels(family):
    model = token_prior(family, num_classes=2)
    tokens = model.sample_tokens(3, labels=[0, 1, 1], seed=4)
    assert tokens.shape == (3, 7, 7) and tokens.dtype == np.int64
    assert 0 <= tokens.min() and tokens.max() < CODES and len(np.unique(tokens)) > 1
    images = model.generate(3, labels=[0, 1, 1], seed=4)
    assert images.shape == (3, 1, 28, 28) and images.dtype == np.int64
    assert 0 <= images.min() and images.max() <= 255
    np.testing.assert_array_equal(images, model.autoencoder.decode_tokens(tokens))


@pytest.mark.parametrize("family", ["pixelsnail", "gated-pixelcnn"])
def test_cached_token_sampling_equals_naive_sampling(family):
    model = token_prior(family, num_classes=2)
    cached = model.sample_tokens(2, labels=[1, 0], seed=9, temperature=1.5)
    naive = model.sample_tokens(2, labels=[1, 0], seed=9, temperature=1.5, cached=False)
    np.testing.assert_array_equal(cached, naive)


# ----------------------------------------------------------------------------
# Refusals, devices, checkpoints


@pytest.mark.parametrize("call, words", [
    (lambda: LatentDiffusion(autoencoder=tiny_vqvae()), ["LatentDiffusion", "must be a VAE", "got VQVAE"]),
    (lambda: TokenPrior(autoencoder=tiny_vae()), ["TokenPrior", "must be a VQVAE", "got VAE"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), image_size=30), ["image_size (30)", "divisible by 4"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), channels=3), ["channels=3", "channels=1"]),
    (lambda: TokenPrior(autoencoder=tiny_vqvae(), levels=2), ["levels=2", "levels=256"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), autoencoder_settings={"hidden": 9}), ["'hidden': 9"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), diffusion_settings={"channel_mults": (1, 2)}),
     ["7x7", "channel_mults=(1, 2)", "use channel_mults=(1,)"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), diffusion_settings={"channels": 4}), ["cannot set channels"]),
    (lambda: LatentDiffusion(autoencoder=tiny_vae(), diffusion_settings={"width": 4}), ["no setting 'width'"]),
    (lambda: TokenPrior(autoencoder=tiny_vqvae(), prior_family="gpt"), ["prior_family", "'gpt'"]),
    (lambda: latent_diffusion().loss(random_images(2, size=32)), ["LatentDiffusion.loss", "(N, 1, 28, 28)"]),
    (lambda: latent_diffusion(num_classes=3).loss(random_images(2)), ["class-conditional", "pass labels"]),
    (lambda: latent_diffusion().generate(2, labels=[0, 1]), ["without classes"]),
    (lambda: token_prior().log_prob_tokens(np.zeros((2, 1, 7, 7), dtype=int)), ["(N, 7, 7)", "(2, 1, 7, 7)"]),
    (lambda: token_prior().log_prob_tokens(np.full((2, 7, 7), CODES)), ["tokens", f"0..{CODES - 1}"]),
    (lambda: token_prior().encode(random_images(1, size=8)), ["TokenPrior.encode", "(N, 1, 28, 28)"]),
], ids=lambda value: None if callable(value) else "-".join(value)[:40])
def test_wrong_pairings_and_inputs_are_one_line_errors(call, words):
    assert_rejected(call, *words)


def test_the_frozen_autoencoder_moves_with_the_model(device):
    """``to(device)`` moves the autoencoder too, although ``parameters()`` leaves it out;
    the device gives the CPU's latents and tokens (on a real GPU, up to float rounding)."""
    diffusion, prior = latent_diffusion(num_classes=2), token_prior(num_classes=2)
    latents = diffusion.generate_latents(2, [0, 1], steps=3, seed=2).numpy()
    tokens = prior.sample_tokens(2, [0, 1], seed=2)
    for model in (diffusion.to(device), prior.to(device)):
        assert all(backend.device_of(array) == device for array in model.state_dict().values())
        images = model.generate(2, [0, 1], seed=2, device=device)
        assert images.shape == (2, 1, 28, 28) and backend.device_of(images) == device
    got = diffusion.generate_latents(2, [0, 1], steps=3, seed=2, device=device).numpy()
    np.testing.assert_allclose(got, latents, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(backend.to_device(prior.sample_tokens(2, [0, 1], seed=2, device=device), "cpu"),
                                  tokens)


@pytest.mark.parametrize("build, sample", [
    (lambda: latent_diffusion(num_classes=2), lambda m: m.generate(3, [0, 1, 1], steps=3, guidance=2.0, seed=6)),
    (lambda: token_prior(num_classes=2), lambda m: m.generate(3, [0, 1, 1], seed=6)),
], ids=["latent-diffusion", "token-prior"])
def test_a_checkpoint_round_trip_reproduces_the_samples_exactly(build, sample, tmp_path):
    model = build()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    model.loss(random_images(3), [0, 1, 1]).backward()
    optimizer.step()  # weights that are not the initial ones
    expected = sample(model)
    mg.save({"model_config": config_dict(model.config), "model": model.state_dict()}, tmp_path / "run.npz")
    state = mg.load(tmp_path / "run.npz")
    mg.manual_seed(99)
    rebuilt = type(model)(**state["model_config"])
    assert rebuilt.config == model.config
    assert not np.array_equal(sample(rebuilt), expected), "a fresh model alone would make the test pass"
    rebuilt.load_state_dict(state["model"])
    np.testing.assert_array_equal(sample(rebuilt), expected)


# ----------------------------------------------------------------------------
# A few seconds of learning


def few_mnist_images():
    if not all((MNIST / name).exists() for name in MNIST_FILES):
        pytest.skip(f"MNIST is not in {MNIST}")
    return load_mnist("test", root=MNIST, download=False).images[:64]


def fit(model, images, steps=30):
    """``steps`` Adam steps on alternating halves of ``images``; the losses."""
    optimizer, losses = optim.Adam(model.parameters(), lr=1e-2), []
    model.train()
    for step in range(steps):
        mg.manual_seed(step)
        loss = model.loss(images[step % 2::2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_both_second_stages_learn_the_codes_of_mnist_digits():
    """Even the codes of untrained autoencoders have structure (a digit's background is one
    code): the prior's NLL falls well below the uniform h w ln K nats of the VQ-VAE's rate,
    and the latent DDPM's noise error well below 1, what predicting no noise scores."""
    images = few_mnist_images()
    prior = token_prior()
    fit(prior, images)
    with mg.no_grad():
        assert prior.loss(images).item() < 0.7 * 49 * np.log(CODES)
    diffusion_losses = fit(latent_diffusion(vae=tiny_vae(images)), images)
    assert np.mean(diffusion_losses[-5:]) < 0.7 < diffusion_losses[0]


def test_both_samplers_report_every_sequential_step():
    """on_step reaches the second stage's loop: one call per DDIM step, or per token."""
    latent, prior = latent_diffusion(), token_prior()
    steps, tokens = [], []
    latent.sample(2, steps=3, on_step=lambda *args: steps.append(1))
    prior.sample(2, on_step=lambda *args: tokens.append(1))
    assert len(steps) == 3 and len(tokens) == prior.latent_size ** 2

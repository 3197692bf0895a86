"""DDPM, the module: its config, samplers and their options, the likelihood bound,
and learning on toy data (the process alone is tests/models/test_diffusion.py)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim
from minigen.engine.autograd import Tensor
from minigen.data import batches, load_digits
from minigen.models.config import config_dict
from minigen.models.ddpm import DDPM, DDPMConfig, SamplerOptions
from minigen.models.diffusion import q_sample, v_target


# ----------------------------------------------------------------------------
# Samplers on a fixed (untrained) network


def tiny(**settings):
    base = dict(channels=1, levels=3, image_size=4, T=20, schedule="cosine", base_channels=8,
                channel_mults=(1,), groups=4)
    return DDPM(**{**base, **settings})


def test_ddim_with_eta_zero_is_deterministic_given_x_T():
    model = tiny()
    x_T = Tensor(np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32))
    a = model.generate(3, sampler="ddim", steps=5, eta=0.0, seed=1, x_T=x_T).numpy()
    b = model.generate(3, sampler="ddim", steps=5, eta=0.0, seed=2, x_T=x_T).numpy()
    np.testing.assert_array_equal(a, b)
    c = model.generate(3, sampler="ddim", steps=5, eta=1.0, seed=2, x_T=x_T).numpy()
    assert not np.allclose(a, c)


@pytest.mark.parametrize("clip", [True, False])
def test_full_ddim_with_eta_one_is_ancestral_sampling(clip):
    """With every step and eta = 1, sigma_t^2 = beta_tilde_t and the DDIM update is
    the posterior mean: the same noise gives the same samples as DDPM fixed-small."""
    model = tiny(variance="small")
    ddpm = model.generate(64, sampler="ddpm", seed=7, clip=clip).numpy()
    ddim = model.generate(64, sampler="ddim", steps=20, eta=1.0, seed=7, clip=clip).numpy()
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=2e-4)  # float32 rounding only


def test_samples_are_clipped_levels_and_large_variance_differs():
    model = tiny(variance="large")
    images = model.sample(5, seed=0)
    assert images.shape == (5, 1, 4, 4) and images.dtype == np.int64
    assert images.min() >= 0 and images.max() <= 2
    small = tiny(variance="small")
    small.load_state_dict(model.state_dict())
    assert not np.allclose(model.generate(5, seed=0).numpy(), small.generate(5, seed=0).numpy())


def test_schedule_is_not_a_parameter_or_state():
    model = tiny()
    names = [name for name, _ in model.named_parameters()] + list(model.state_dict())
    assert all("schedule" not in name and "beta" not in name for name in names)
    ema = optim.EMA(model, decay=0.5)
    before = model.schedule.betas.copy()
    ema.update()
    np.testing.assert_array_equal(model.schedule.betas, before)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="prediction must be one of"):
        tiny(prediction="score")
    with pytest.raises(ValueError, match="sampler must be 'ddpm' or 'ddim', got 'euler'"):
        tiny().sample(1, sampler="euler")
    with pytest.raises(ValueError, match="built without classes"):
        tiny().sample(2, labels=[0, 1])
    with pytest.raises(ValueError, match=r"labels must be in 0..1, got \[0, 5\]"):
        tiny(num_classes=2).sample(2, labels=[0, 5])


# ----------------------------------------------------------------------------
# The config and the sampler options


def test_config_round_trips_through_a_checkpoint_dict():
    model = tiny(num_classes=3, prediction="v", variance="large", channel_mults=[1, 2])
    assert isinstance(model.config, DDPMConfig) and DDPM.Config is DDPMConfig
    assert model.config.channel_mults == (1, 2), "a list from a checkpoint becomes the tuple"
    settings = json.loads(json.dumps(config_dict(model.config)))  # what a checkpoint stores
    assert settings["channel_mults"] == [1, 2] and settings["num_classes"] == 3
    rebuilt = DDPM(**settings)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    same = DDPM(DDPMConfig(**settings))
    assert same.config == model.config and DDPM(model.config, T=30).config == replace(model.config, T=30)
    assert DDPM().config == DDPMConfig()


def test_config_errors_name_the_setting_and_the_value():
    for settings, message in [(dict(prediction="score"), "prediction must be one of .* got 'score'"),
                              (dict(variance="learned"), "variance must be one of .* got 'learned'"),
                              (dict(p_uncond=1.0), r"p_uncond must be in \[0, 1\), got 1.0")]:
        with pytest.raises(ValueError, match=message):
            DDPMConfig(**settings)
        with pytest.raises(ValueError, match=message):
            DDPM(**settings)
    with pytest.raises(ValueError, match="DDPMConfig has no setting 'hidden'; its settings are channels, levels"):
        DDPM(hidden=32)
    with pytest.raises(TypeError, match="expected a DDPMConfig, got dict"):
        DDPM({"T": 10})


@pytest.mark.parametrize("method", ["sample", "generate"])
def test_an_unknown_sampler_option_is_a_one_line_error_naming_it(method):
    with pytest.raises(ValueError, match="SamplerOptions has no setting 'temperature'; its settings are sampler, ") \
            as error:
        getattr(tiny(), method)(2, sampler="ddim", temperature=0.5)
    assert "\n" not in str(error.value)


def test_sample_and_generate_take_the_same_options():
    model = tiny(num_classes=2)
    options = SamplerOptions(sampler="ddim", steps=4, eta=0.5, spacing="quadratic", clip=False, guidance=2.0, seed=3)
    labels = [0, 1, 1]
    floats = model.generate(3, labels, options=options)
    images = model.sample(3, labels, options=options)
    np.testing.assert_array_equal(images, model.unscale(floats))
    keywords = dict(sampler="ddim", steps=4, eta=0.5, spacing="quadratic", clip=False, guidance=2.0, seed=3)
    np.testing.assert_array_equal(model.generate(3, labels, **keywords).numpy(), floats.numpy())
    np.testing.assert_array_equal(model.sample(3, labels, **keywords), images)
    # keywords given with options replace the options' values
    np.testing.assert_array_equal(model.generate(3, labels, options=options, seed=4).numpy(),
                                  model.generate(3, labels, options=replace(options, seed=4)).numpy())
    assert not np.array_equal(model.generate(3, labels, options=options, seed=4).numpy(), floats.numpy())


def test_sampling_and_the_bound_restore_the_training_mode():
    model = tiny()
    images = np.zeros((2, 1, 4, 4), dtype=np.int64)
    for mode in (True, False):
        model.train(mode)
        model.sample(2, sampler="ddim", steps=2)
        model.nll_bound(images, timesteps=2)
        assert all(module.training is mode for module in model.modules())

    def fail(t, x_t, x0_hat):
        assert not model.training and not mg.is_grad_enabled(), "sampling runs in eval mode, without a graph"
        raise RuntimeError("stop")

    model.train()
    with pytest.raises(RuntimeError, match="stop"):
        model.generate(2, sampler="ddim", steps=2, on_step=fail)
    assert all(module.training for module in model.modules()) and mg.is_grad_enabled()


# ----------------------------------------------------------------------------
# Learning: two clusters, guidance, the bound


def two_clusters(n, rng, p_bright=0.7, label_noise=None):
    """4x4 images, all black (level 0) or all white (level 2); labels = cluster,
    flipped with probability ``label_noise``."""
    bright = rng.random(n) < p_bright
    images = np.where(bright[:, None, None, None], 2, 0) * np.ones((n, 1, 4, 4), dtype=np.int64)
    labels = bright.astype(np.int64)
    if label_noise:
        labels = np.where(rng.random(n) < label_noise, 1 - labels, labels)
    return images, labels


def fit(model, images, labels=None, steps=300, lr=3e-3):
    """Adam for ``steps`` steps; the model ends with the EMA of its weights (as for sampling)."""
    opt = optim.Adam(model.parameters(), lr=lr)
    ema = optim.EMA(model, decay=0.98)
    arrays = (images,) if labels is None else (images, labels)
    step, epoch, losses = 0, 0, []
    while step < steps:
        for batch in batches(arrays, 64, seed=epoch):
            loss = model.loss(*batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.update()
            losses.append(loss.item())
            step += 1
        epoch += 1
    ema.copy_to(model)
    return losses


def fraction_bright(images):
    return float((images.reshape(len(images), -1).mean(axis=1) > 1).mean())


@pytest.fixture(scope="module")
def cluster_model():
    mg.manual_seed(0)
    rng = np.random.default_rng(0)
    images, _ = two_clusters(2000, rng)
    model = tiny(T=50)
    losses = fit(model, images, steps=300)
    return model, images, losses


def test_training_lowers_the_loss(cluster_model):
    _, _, losses = cluster_model
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])


def test_sampled_cluster_frequencies_match_the_data(cluster_model):
    model, images, _ = cluster_model
    samples = model.sample(400, sampler="ddim", steps=25, seed=1)
    assert abs(fraction_bright(samples) - fraction_bright(images)) < 0.08


def test_bound_of_the_trained_model_is_at_least_the_data_entropy(cluster_model):
    """Expected bound >= cross-entropy >= entropy H(0.7) nats, for any model."""
    model, images, _ = cluster_model
    bound = model.nll_bound(images[:200]).numpy()
    assert np.all(np.isfinite(bound)) and bound.mean() >= ENTROPY


ENTROPY = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))


class IdealDenoiser(nn.Module):
    """E[eps | x_t] when x0 is all -1 (probability 1 - p) or all +1 (probability p):
    the best network there can be, computed in closed form. p = 1 is a point mass."""

    def __init__(self, schedule, p):
        super().__init__()
        self.schedule, self.p = schedule, p

    def forward(self, xt, t, labels=None):
        ab = self.schedule.alpha_bar[t.data].reshape(-1, 1, 1, 1)
        x = xt.data.astype(np.float64)
        # log N(x; sqrt(ab) * 1, 1 - ab) - log N(x; sqrt(ab) * -1, 1 - ab) = 2 sqrt(ab) sum(x) / (1 - ab)
        prior = math.log(self.p / (1 - self.p)) if self.p < 1 else math.inf
        logit = prior + 2 * np.sqrt(ab) * x.sum(axis=(1, 2, 3), keepdims=True) / (1 - ab)
        x0 = np.tanh(logit / 2) * np.ones_like(x)  # P(+1) - P(-1)
        return Tensor(((x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)).astype(np.float32))


def ideal_model(p):
    model = tiny(T=50)
    model.net = IdealDenoiser(model.schedule, p)
    return model


def test_bound_is_zero_for_a_point_mass_and_the_ideal_denoiser():
    """Every KL term vanishes and the decoder is certain: only the prior's ~1e-7 remains."""
    bound = ideal_model(1.0).nll_bound(np.full((3, 1, 4, 4), 2)).numpy()
    assert np.all(bound >= 0) and np.all(bound < 1e-5)


def test_bound_is_above_and_near_the_true_nll_of_two_points():
    """True NLL = entropy of the two-point data; the bound may not go below it."""
    images, _ = two_clusters(1000, np.random.default_rng(0), p_bright=0.7)
    empirical = fraction_bright(images)
    true_nll = -(empirical * math.log(0.7) + (1 - empirical) * math.log(0.3))
    bound = ideal_model(0.7).nll_bound(images).numpy().mean()
    assert true_nll <= bound < true_nll + 0.15, (bound, true_nll)


@pytest.mark.parametrize("sampler", [dict(sampler="ddpm"), dict(sampler="ddim", steps=10)])
def test_samplers_reproduce_the_data_with_the_ideal_denoiser(sampler):
    samples = ideal_model(0.7).sample(2000, seed=0, **sampler)
    assert abs(fraction_bright(samples) - 0.7) < 0.04


def test_guidance_pulls_samples_into_the_requested_cluster():
    mg.manual_seed(1)
    images, labels = two_clusters(2000, np.random.default_rng(1), p_bright=0.5, label_noise=0.3)
    model = tiny(T=50, num_classes=2, p_uncond=0.2)
    fit(model, images, labels, steps=300)
    wanted = np.ones(300, dtype=np.int64)
    hits = {w: fraction_bright(model.sample(300, labels=wanted, guidance=w, sampler="ddim", steps=25, seed=2))
            for w in (1.0, 4.0)}
    assert hits[1.0] > 0.55, hits
    assert hits[4.0] > hits[1.0] + 0.1, hits


class TargetNet(nn.Module):
    """Returns exactly what a network of the given prediction type should output
    for known x0 and noise: the ideal prediction."""

    def __init__(self, model, x0, noise):
        super().__init__()
        self.model, self.x0, self.noise = model, x0, noise

    def forward(self, xt, t, labels=None):
        m = self.model
        return {"eps": self.noise, "x0": self.x0, "v": v_target(m.schedule, self.x0, t, self.noise)}[m.prediction]


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_every_prediction_type_recovers_x0_and_the_noise(prediction):
    model = tiny(prediction=prediction)
    rng = np.random.default_rng(5)
    x0 = Tensor(rng.uniform(-1, 1, (3, 1, 4, 4)).astype(np.float32))
    noise = Tensor(rng.standard_normal((3, 1, 4, 4)).astype(np.float32))
    t = Tensor(np.array([0, 9, 19]))
    xt = q_sample(model.schedule, x0, t, noise)
    model.net = TargetNet(model, x0, noise)
    eps, x0_hat = model.predict_eps_x0(xt, t, clip=False)
    np.testing.assert_allclose(x0_hat.numpy(), x0.numpy(), atol=5e-4)
    np.testing.assert_allclose(eps.numpy(), noise.numpy(), atol=5e-3)


def test_same_results_on_every_device(device):
    """Training step, sampling and the bound run on ``device`` and match the CPU."""
    model = tiny(num_classes=2)
    x = np.random.default_rng(0).integers(0, 3, (4, 1, 4, 4))
    labels = [0, 1, 1, 0]
    expected = model.generate(4, labels=labels, sampler="ddim", steps=5, seed=3).numpy()
    bound = model.nll_bound(x, labels, timesteps=3).numpy()
    model.to(device)
    got = model.generate(4, labels=labels, sampler="ddim", steps=5, seed=3, device=device).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(model.nll_bound(mg.tensor(x, device=device), labels, timesteps=3).numpy(),
                               bound, rtol=1e-3)
    loss = model.loss(mg.tensor(x, device=device), mg.tensor(np.array(labels), device=device))
    loss.backward()
    assert all(p.grad is not None and p.device == device for p in model.parameters())


def test_training_on_digits_lowers_the_loss():
    mg.manual_seed(0)
    digits = load_digits("train")
    model = DDPM(channels=1, levels=17, image_size=8, T=100, schedule="cosine", base_channels=8,
                 channel_mults=(1,), groups=4)
    losses = fit(model, digits.images, steps=60)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), (losses[:5], losses[-10:])

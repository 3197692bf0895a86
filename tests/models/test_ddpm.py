"""DDPM: schedules, closed forms against Monte Carlo, index conventions, samplers,
the likelihood bound, and learning on toy data."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim
from minigen.engine.autograd import Tensor
from minigen.data import batches, load_digits
from minigen.models.ddpm import (
    DDPM, SCHEDULES, Schedule, ddim_timesteps, eps_from_x0, gaussian_kl, posterior_mean, q_sample, x0_from_eps)

T_OFFERED = [25, 50, 100, 250, 1000, 4000]


def ends_in_noise(betas) -> bool:
    """x_T must be nearly pure noise: sqrt(alpha_bar_T) < 0.01."""
    return math.sqrt(np.prod(1 - np.asarray(betas, dtype=np.float64))) < 0.01


# ----------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", T_OFFERED)
def test_every_schedule_ends_in_noise(name, T):
    schedule = Schedule.make(name, T)
    assert np.all(np.diff(schedule.alpha_bar) < 0), "alpha_bar must decrease"
    assert np.all((schedule.betas > 0) & (schedule.betas <= 0.999))
    assert ends_in_noise(schedule.betas)
    assert schedule.betas.dtype == np.float64


def test_the_unscaled_linear_pitfall_is_caught():
    assert not ends_in_noise(np.linspace(1e-4, 0.02, 100))


def test_cosine_matches_its_formula():
    T, s = 1000, 0.008
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = Schedule.make("cosine", T).alpha_bar
    t = np.arange(1, T + 1)  # code index t - 1 is the paper's t
    unclipped = slice(0, 900)
    np.testing.assert_allclose(alpha_bar[unclipped], (f(t) / f(0))[unclipped], rtol=1e-10)
    assert Schedule.make("cosine", T).betas.max() == pytest.approx(0.999)


def test_snr_and_posterior_variance_definitions():
    sch = Schedule.make("linear", 1000)
    np.testing.assert_allclose(sch.snr, sch.alpha_bar / (1 - sch.alpha_bar))
    assert np.all(sch.posterior_variance[1:] <= sch.betas[1:])


def test_index_conventions_at_both_ends():
    """Code step 0 is the paper's t = 1; the last code step is t = T."""
    sch = Schedule.make("linear", 1000)
    assert sch.alpha_bar_prev[0] == 1.0 and sch.alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert sch.posterior_variance[0] == 0.0
    assert sch.alpha_bar[-1] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)))
    x0, noise = Tensor(np.ones((2, 1, 1, 1), np.float32)), Tensor(np.zeros((2, 1, 1, 1), np.float32))
    xt = q_sample(sch, x0, Tensor(np.array([0, 999])), noise).numpy().ravel()
    np.testing.assert_allclose(xt, np.sqrt([sch.alpha_bar[0], sch.alpha_bar[-1]]), rtol=1e-6)
    assert ddim_timesteps(1000, 1000) == list(range(1000))
    assert ddim_timesteps(1000, 10)[0] == 0 and ddim_timesteps(1000, 10)[-1] == 900


def test_schedule_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown schedule 'cubic'"):
        Schedule.make("cubic", 100)
    with pytest.raises(ValueError, match="T >= 21"):
        Schedule.make("linear", 10)


# ----------------------------------------------------------------------------
# Closed forms against Monte Carlo


def test_q_sample_moments_match_the_closed_form():
    sch = Schedule.make("cosine", 100)
    rng = np.random.default_rng(0)
    n, t = 200_000, 37
    x0 = Tensor(np.full((n, 1, 1, 1), 0.6, np.float32))
    xt = q_sample(sch, x0, Tensor(np.full(n, t)), Tensor(rng.standard_normal((n, 1, 1, 1)).astype(np.float32)))
    values = xt.numpy().ravel()
    assert values.mean() == pytest.approx(0.6 * math.sqrt(sch.alpha_bar[t]), abs=4e-3)
    assert values.var() == pytest.approx(1 - sch.alpha_bar[t], rel=1e-2)


def test_step_by_step_noising_matches_the_closed_form():
    sch = Schedule.make("linear", 50)
    rng = np.random.default_rng(1)
    x = np.full(1_000_000, -0.4)
    for beta in sch.betas[:20]:
        x = np.sqrt(1 - beta) * x + np.sqrt(beta) * rng.standard_normal(x.shape)
    assert x.mean() == pytest.approx(-0.4 * math.sqrt(sch.alpha_bar[19]), abs=5e-3)
    assert x.var() == pytest.approx(1 - sch.alpha_bar[19], rel=2e-2)


def test_posterior_mean_equals_the_epsilon_form_of_eq_11():
    sch = Schedule.make("linear", 1000)
    rng = np.random.default_rng(2)
    t = Tensor(np.array([0, 1, 500, 999]))
    xt = Tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    eps = Tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    mean = posterior_mean(sch, x0_from_eps(sch, xt, t, eps), xt, t).numpy()
    a, b, ab = (v[t.data].reshape(-1, 1, 1, 1) for v in (sch.alphas, sch.betas, sch.alpha_bar))
    eq11 = (xt.numpy() - b / np.sqrt(1 - ab) * eps.numpy()) / np.sqrt(a)
    np.testing.assert_allclose(mean, eq11, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(eps_from_x0(sch, xt, t, x0_from_eps(sch, xt, t, eps)).numpy(), eps.numpy(),
                               rtol=1e-3, atol=2e-3)


def test_posterior_matches_monte_carlo():
    """Sample (x_{t-1}, x_t) from the forward process, keep pairs with x_t near a value,
    and compare x_{t-1}'s mean and variance with q(x_{t-1} | x_t, x_0)."""
    sch = Schedule.make("linear", 100)
    rng = np.random.default_rng(3)
    t, x0, n = 30, 0.5, 2_000_000
    prev = math.sqrt(sch.alpha_bar[t - 1]) * x0 + math.sqrt(1 - sch.alpha_bar[t - 1]) * rng.standard_normal(n)
    xt = math.sqrt(sch.alphas[t]) * prev + math.sqrt(sch.betas[t]) * rng.standard_normal(n)
    near = np.abs(xt - 0.3) < 0.01
    mean = sch.mean_coef_x0[t] * x0 + sch.mean_coef_xt[t] * 0.3
    assert prev[near].mean() == pytest.approx(mean, abs=5e-3)
    assert prev[near].var() == pytest.approx(sch.posterior_variance[t], rel=5e-2)


def test_gaussian_kl_matches_monte_carlo():
    rng = np.random.default_rng(4)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = m1 + math.sqrt(0.5) * rng.standard_normal(1_000_000)
    log_p = -0.5 * (np.log(2 * np.pi) + lv1 + (x - m1) ** 2 / 0.5)
    log_q = -0.5 * (np.log(2 * np.pi) + lv2 + (x - m2) ** 2 / 1.7)
    t = lambda v: Tensor(np.array(v, np.float64))
    kl = gaussian_kl(t(m1), t(lv1), t(m2), t(lv2)).item()
    assert kl == pytest.approx((log_p - log_q).mean(), abs=3e-3)


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
        return {"eps": self.noise, "x0": self.x0, "v": m._v(self.x0, t, self.noise)}[m.prediction]


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


def test_quadratic_spacing_packs_steps_near_the_data():
    steps = ddim_timesteps(1000, 20, "quadratic")
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) <= 20
    gaps = np.diff(steps)
    assert gaps[0] < gaps[-1]
    with pytest.raises(ValueError, match="spacing must be 'uniform' or 'quadratic'"):
        ddim_timesteps(1000, 20, "cubic")


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


@pytest.mark.parametrize("timesteps", [1, 2, 4])
def test_bound_estimate_weights_every_step_once_on_average(timesteps):
    """The K-step estimate is unbiased: over many draws each of the T - 1 steps counts once on average,
    and the last step (the largest term under the cosine schedule) is counted in every draw when K > 1."""
    model = tiny()
    T = model.schedule.T
    rng = np.random.default_rng(0)
    counted = np.zeros(T)
    draws = 20_000
    for _ in range(draws):
        steps, weights = model._bound_steps(timesteps, rng)
        np.add.at(counted, steps, weights)
        assert timesteps == 1 or (T - 1) in steps
    np.testing.assert_allclose(counted[1:] / draws, 1.0, atol=0.06)
    assert counted[0] == 0, "step 0 is the decoder's, not the middle sum's"
    assert list(model._bound_steps(None, rng)[0]) == list(range(1, T))
    with pytest.raises(ValueError, match="timesteps must be at least 1"):
        model._bound_steps(0, rng)

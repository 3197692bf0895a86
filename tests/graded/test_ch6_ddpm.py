"""Graded checks of chapter 6: DDPM's reverse process and DDIM."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.bench.timing import adam_step
from minigen.models.diffusion import Schedule, q_sample


def images_and_steps(seed=0):
    rng = np.random.default_rng(seed)
    x0 = mg.tensor(rng.uniform(-1, 1, (4, 1, 3, 3)).astype(np.float32))
    eps = mg.tensor(rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    return x0, eps, mg.tensor(np.array([0, 1, 30, 99]))


@pytest.mark.task6_1
def test_x0_from_eps_inverts_q_sample(graded, unchanged):
    schedule = Schedule.make("linear", 100)
    x0, eps, t = images_and_steps()
    xt = q_sample(schedule, x0, t, eps)
    with unchanged(schedule, xt, t, eps):  # the sampler still needs x_t after predicting x_0
        out = graded.x0_from_eps(schedule, xt, t, eps)
    np.testing.assert_allclose(out.numpy(), x0.numpy(), atol=2e-4)


@pytest.mark.task6_1
def test_x0_from_eps_closed_form(graded, unchanged):
    schedule = Schedule.make("cosine", 100)
    x0, eps, t = images_and_steps(1)
    ab = schedule.alpha_bar[t.numpy()].reshape(4, 1, 1, 1)
    expected = (x0.numpy() - np.sqrt(1 - ab) * eps.numpy()) / np.sqrt(ab)
    with unchanged(schedule, x0, t, eps):
        out = graded.x0_from_eps(schedule, x0, t, eps)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.task6_2
def test_posterior_mean_closed_form(graded, unchanged):
    schedule = Schedule.make("linear", 100)
    x0, xt, t = images_and_steps(2)
    steps = t.numpy()
    beta, ab = schedule.betas[steps], schedule.alpha_bar[steps]
    ab_prev = np.where(steps > 0, schedule.alpha_bar[np.maximum(steps - 1, 0)], 1.0)
    coef_x0 = (beta * np.sqrt(ab_prev) / (1 - ab)).reshape(4, 1, 1, 1)
    coef_xt = ((1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab)).reshape(4, 1, 1, 1)
    with unchanged(schedule, x0, xt, t):
        out = graded.posterior_mean(schedule, x0, xt, t)
    np.testing.assert_allclose(out.numpy(), coef_x0 * x0.numpy() + coef_xt * xt.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.task6_2
def test_posterior_mean_at_the_first_step_is_x0(graded):
    # alpha_bar_prev = 1 at code step 0: q(x_{t-1} | x_t, x_0) is x_0 itself.
    schedule = Schedule.make("cosine", 50)
    x0, xt, _ = images_and_steps(3)
    t = mg.tensor(np.zeros(4, dtype=np.int64))
    np.testing.assert_allclose(graded.posterior_mean(schedule, x0, xt, t).numpy(), x0.numpy(), atol=1e-5)


class Noise:
    """draw_noise for the tests: a fixed z, and a count of the draws."""

    def __init__(self, z):
        self.z, self.draws = z, 0

    def __call__(self):
        self.draws += 1
        return self.z


@pytest.mark.task6_3
def test_ancestral_step_adds_noise_except_at_the_last_step(graded, unchanged):
    mean = mg.tensor(np.array([[0.5, -0.25]], dtype=np.float32))
    variance = mg.tensor(np.array([[0.04]], dtype=np.float32))
    noise = Noise(mg.tensor(np.array([[1.0, -2.0]], dtype=np.float32)))
    with unchanged(mean, variance, noise.z):
        out = graded.ancestral_step(mean, variance, 1, noise)
    np.testing.assert_allclose(out.numpy(), [[0.7, -0.65]], rtol=1e-6)
    assert noise.draws == 1
    np.testing.assert_array_equal(graded.ancestral_step(mean, variance, 0, noise).numpy(), mean.numpy())
    assert noise.draws == 1, "code step 0 (the paper's t = 1) adds no noise and draws none"


@pytest.mark.task6_3
def test_ancestral_step_at_every_step(graded):
    mean = mg.tensor(np.zeros((1, 3), dtype=np.float32))
    variance = mg.tensor(np.full((1, 1), 0.25, dtype=np.float32))
    for t in range(1, 6):
        noise = Noise(mg.tensor(np.ones((1, 3), dtype=np.float32)))
        np.testing.assert_allclose(graded.ancestral_step(mean, variance, t, noise).numpy(), 0.5, rtol=1e-6)


@pytest.mark.task6_4
def test_deterministic_ddim_step(graded):
    x0 = mg.tensor(np.array([0.5, -1.0], dtype=np.float32))
    eps = mg.tensor(np.array([1.0, 2.0], dtype=np.float32))
    noise = Noise(mg.tensor(np.array([10.0, 10.0], dtype=np.float32)))
    out = graded.ddim_step(x0, eps, 0.5, 0.8, 0.0, noise).numpy()
    np.testing.assert_allclose(out, math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2) * eps.numpy(), rtol=1e-6)
    assert noise.draws == 0
    np.testing.assert_allclose(graded.ddim_step(x0, eps, 0.5, 1.0, 0.0, noise).numpy(), x0.numpy(), rtol=1e-6)


@pytest.mark.task6_4
def test_stochastic_ddim_step(graded, unchanged):
    x0 = mg.tensor(np.array([0.5, -1.0], dtype=np.float32))
    eps = mg.tensor(np.array([1.0, 2.0], dtype=np.float32))
    z = mg.tensor(np.array([-1.0, 0.5], dtype=np.float32))
    sigma2 = (1 - 0.8) / (1 - 0.5) * (1 - 0.5 / 0.8)  # eta = 1: 0.15
    with unchanged(x0, eps, z):
        out = graded.ddim_step(x0, eps, 0.5, 0.8, 1.0, Noise(z)).numpy()
    expected = math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2 - sigma2) * eps.numpy() + math.sqrt(sigma2) * z.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    half = graded.ddim_step(x0, eps, 0.5, 0.8, 0.5, Noise(z)).numpy()
    expected = math.sqrt(0.8) * x0.numpy() + math.sqrt(0.2 - sigma2 / 4) * eps.numpy() + math.sqrt(sigma2) / 2 * z.numpy()
    np.testing.assert_allclose(half, expected, rtol=1e-5)


# ----------------------------------------------------------------------------
# Tasks 6.5 to 6.7: the model's loss, its residual block, classifier-free guidance

from minigen.models import ddpm as ddpm_module  # noqa: E402
from minigen.models import unet as unet_module  # noqa: E402


def small_ddpm(seed=0, **settings):
    mg.manual_seed(seed)
    options = dict(image_size=4, T=30, base_channels=4, channel_mults=(1, 2), groups=2)
    return ddpm_module.DDPM(**{**options, **settings})


class Draws:
    """Seeded draws for simple_loss, recording how it asked for them."""

    def __init__(self, seed):
        self.rng, self.calls = np.random.default_rng(seed), []

    def steps(self, low, high, count):
        self.calls.append(("steps", low, high, count))
        return mg.tensor(self.rng.integers(low, high, size=(count,)))

    def noise(self, shape):
        self.calls.append(("noise", tuple(shape)))
        return mg.tensor(self.rng.standard_normal(tuple(shape)).astype(np.float32))


def scaled_images(seed, n=3):
    return mg.tensor(np.random.default_rng(seed).uniform(-1, 1, (n, 1, 4, 4)).astype(np.float32))


@pytest.mark.task6_5
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_the_loss_is_the_mse_to_the_target_at_uniform_steps(graded, unchanged, prediction):
    model = small_ddpm(prediction=prediction)
    x0 = scaled_images(1)
    mine, right = Draws(2), Draws(2)
    with unchanged(x0, model.schedule):
        loss = graded.simple_loss(model, x0, None, mine.steps, mine.noise)
    expected = ddpm_module.simple_loss(model, x0, None, right.steps, right.noise)
    assert mine.calls == right.calls == [("steps", 0, 30, 3), ("noise", (3, 1, 4, 4))], \
        "draw the steps 0..T-1 first (draw_steps(0, T, N)), then the noise"
    assert tuple(loss.shape) == () and loss.dtype == np.float32, "a scalar float32 Tensor"
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.task6_5
def test_the_loss_by_hand_with_a_zero_network(graded):
    """A network whose output is 0: the loss is the mean square of the noise."""
    model = small_ddpm(1)
    model.net.conv_out.weight.data[...] = 0
    model.net.conv_out.bias.data[...] = 0
    draws = Draws(3)
    loss = graded.simple_loss(model, scaled_images(4), None, draws.steps, draws.noise)
    noise = np.random.default_rng(3)
    noise.integers(0, 30, size=(3,))
    assert loss.item() == pytest.approx(float((noise.standard_normal((3, 1, 4, 4)).astype(np.float32) ** 2).mean()),
                                        rel=1e-5)


@pytest.mark.task6_5
def test_a_conditional_model_reads_the_labels_and_the_gradient_reaches_the_network(graded):
    model = small_ddpm(2, num_classes=3, p_uncond=0.0)
    labels = mg.tensor(np.array([2, 0, 1]))
    losses = []
    for function in (graded.simple_loss, ddpm_module.simple_loss):
        model.zero_grad()
        draws = Draws(5)
        loss = function(model, scaled_images(6), labels, draws.steps, draws.noise)
        loss.backward()
        losses.append((loss.item(), [p.grad for p in model.parameters()]))
    (mine, mine_grads), (right, right_grads) = losses
    assert mine == pytest.approx(right, rel=1e-6)
    for index, (a, b) in enumerate(zip(mine_grads, right_grads)):
        assert a is not None, f"no gradient reached parameter {index}: compute with Tensor ops"
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"parameter {index}")


@pytest.mark.task6_5
def test_a_ddpm_trains_with_your_loss(graded, monkeypatch):
    """DDPM.loss calls your function: four Adam steps give the library's losses."""
    x = np.random.default_rng(0).integers(0, 17, (4, 1, 4, 4))

    def losses():
        model = small_ddpm(3)
        step = adam_step(mg.optim.Adam(model.parameters(), lr=0.01), lambda: model.loss(x))
        mg.manual_seed(4)
        return [step() for _ in range(4)]

    expected = losses()
    monkeypatch.setattr(ddpm_module, "simple_loss", graded.simple_loss)
    np.testing.assert_allclose(losses(), expected, rtol=1e-5)


def block_inputs(seed, in_channels, out_channels):
    mg.manual_seed(seed)
    block = unet_module.ResBlock(in_channels, out_channels, 8, 2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, in_channels, 4, 4)).astype(np.float32)
    embedding = rng.standard_normal((2, 8)).astype(np.float32)
    return block, x, embedding


@pytest.mark.task6_6
@pytest.mark.parametrize("widths", [(4, 6), (4, 4)], ids=["1x1 skip", "identity skip"])
def test_the_block_gives_the_librarys_output(graded, unchanged, widths):
    block, x, embedding = block_inputs(0, *widths)
    with unchanged(x, embedding):
        out = graded.res_block(block, mg.tensor(x), mg.tensor(embedding))
    assert tuple(out.shape) == (2, widths[1], 4, 4) and out.dtype == np.float32
    expected = unet_module.res_block(block, mg.tensor(x), mg.tensor(embedding))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.task6_6
def test_the_time_embedding_shifts_each_channel_and_reaches_its_gradient(graded):
    block, x, embedding = block_inputs(1, 4, 6)
    ins = [mg.tensor(x), mg.tensor(embedding, requires_grad=True)]
    other = mg.tensor(embedding[::-1].copy())
    a = graded.res_block(block, ins[0], ins[1])
    b = graded.res_block(block, ins[0], other)
    assert not np.allclose(a.numpy(), b.numpy()), "the output must depend on the time embedding"
    a.sum().backward()
    assert ins[1].grad is not None and np.abs(ins[1].grad).sum() > 0, "the gradient must reach the embedding"
    right = mg.tensor(embedding, requires_grad=True)
    unet_module.res_block(block, mg.tensor(x), right).sum().backward()
    np.testing.assert_allclose(ins[1].grad, right.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.task6_6
def test_a_ddpm_samples_and_trains_with_your_block(graded, monkeypatch):
    """Every ResBlock of the U-Net runs your function: the same DDIM samples and training loss."""
    model = small_ddpm(5)
    x = np.random.default_rng(1).integers(0, 17, (2, 1, 4, 4))

    def run():
        mg.manual_seed(6)
        return model.sample(2, sampler="ddim", steps=3, seed=1), model.loss(x).item()

    expected = run()
    monkeypatch.setattr(unet_module, "res_block", graded.res_block)
    images, loss = run()
    np.testing.assert_array_equal(images, expected[0])
    assert loss == pytest.approx(expected[1], rel=1e-5)


@pytest.mark.task6_7
@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, -0.5])
def test_guidance_mixes_the_two_predictions(graded, unchanged, w):
    rng = np.random.default_rng(int(w * 10) + 5)
    cond, uncond = (rng.standard_normal((2, 1, 3, 3)).astype(np.float32) for _ in range(2))
    with unchanged(cond, uncond):
        out = graded.guided_prediction(mg.tensor(cond), mg.tensor(uncond), w)
    assert tuple(out.shape) == (2, 1, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), uncond + w * (cond - uncond), rtol=1e-6, atol=1e-6)


@pytest.mark.task6_7
def test_a_guided_ddpm_samples_with_your_guidance(graded, monkeypatch):
    model = small_ddpm(7, num_classes=2)
    expected = model.sample(2, [0, 1], sampler="ddim", steps=3, guidance=3.0, seed=2)
    monkeypatch.setattr(ddpm_module, "guided_prediction", graded.guided_prediction)
    np.testing.assert_array_equal(model.sample(2, [0, 1], sampler="ddim", steps=3, guidance=3.0, seed=2), expected)

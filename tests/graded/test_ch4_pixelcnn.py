"""Graded checks of chapter 4: PixelCNN likelihood, bits/dim and sampling."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen.course.chain_rule import all_images
from minigen import train
from minigen.models import pixelcnn as reference


def log_softmax(logits, axis):
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.task4_1
def test_log_prob_picks_the_target_levels(graded, unchanged):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)  # N, K, C, H, W
    x = rng.integers(0, 3, size=(2, 2, 2, 2))
    with unchanged(logits, x):
        log_p = graded.categorical_log_prob(mg.tensor(logits), x)
    picked = np.take_along_axis(log_softmax(logits.astype(np.float64), 1), x[:, None], axis=1)
    np.testing.assert_allclose(log_p.numpy(), picked.reshape(2, -1).sum(axis=1), rtol=1e-5)


@pytest.mark.task4_1
def test_probabilities_of_all_2x2_binary_images_sum_to_one(graded):
    logits = np.random.default_rng(1).standard_normal((1, 2, 1, 2, 2)).astype(np.float32)
    images = all_images(4).reshape(16, 1, 2, 2)
    log_p = graded.categorical_log_prob(mg.tensor(np.repeat(logits, 16, axis=0)), images)
    assert np.exp(log_p.numpy().astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.task4_1
def test_log_prob_gradient_reaches_the_logits(graded, unchanged):
    rng = np.random.default_rng(3)
    array = rng.standard_normal((2, 4, 1, 2, 3)).astype(np.float32)
    x = rng.integers(0, 4, size=(2, 1, 2, 3))
    logits = mg.tensor(array, requires_grad=True)
    with unchanged(logits, x):
        log_p = graded.categorical_log_prob(logits, x)
    assert getattr(log_p, "requires_grad", False), \
        "log p does not require grad: compute it with Tensor ops on the logits, so training can backpropagate"
    log_p.sum().backward()
    assert logits.grad is not None, "no gradient reached the logits: keep log p inside the graph (Tensor ops)"
    one_hot = (np.arange(4).reshape(1, 4, 1, 1, 1) == x[:, None]).astype(np.float64)
    expected = one_hot - np.exp(log_softmax(array.astype(np.float64), 1))  # d log p / d logits
    np.testing.assert_allclose(logits.grad, expected, atol=1e-5)


@pytest.mark.task4_2
def test_bits_per_dim(graded):
    assert graded.bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0, rel=1e-12)
    assert graded.bits_per_dim(100.0, 784) == pytest.approx(100.0 / (784 * math.log(2)), rel=1e-12)


@pytest.mark.task4_2
def test_bits_per_dim_of_large_losses(graded, unchanged):
    # An untrained model on a large image: 1e5 nats, where exp(nats) overflows.
    assert graded.bits_per_dim(1e5, 784) == pytest.approx(1e5 / (784 * math.log(2)), rel=1e-12)
    nats = np.array([1e5, 3e5])
    with unchanged(nats):
        bits = graded.bits_per_dim(nats, 3072)
    np.testing.assert_allclose(bits, nats / (3072 * math.log(2)), rtol=1e-12)


@pytest.mark.task4_3
def test_sample_levels_by_hand(graded):
    logits = mg.tensor(np.log(np.tile([[0.2, 0.3, 0.5]], (6, 1))))
    uniform = np.array([0.0, 0.19, 0.21, 0.49, 0.51, 0.99])
    np.testing.assert_array_equal(graded.sample_levels(logits, uniform), [0, 0, 1, 1, 2, 2])


@pytest.mark.task4_3
def test_sample_levels_stays_in_range_and_matches_the_reference(graded):
    rng = np.random.default_rng(2)
    logits = mg.tensor(rng.standard_normal((5000, 7)) * 3)
    uniform = np.concatenate([rng.random(4999), [np.nextafter(1.0, 0.0)]])
    levels = np.asarray(graded.sample_levels(logits, uniform))
    assert levels.min() >= 0 and levels.max() <= 6
    np.testing.assert_array_equal(levels, reference.sample_levels(logits, uniform))


@pytest.mark.task4_3
def test_sample_levels_with_large_logits(graded, unchanged):
    # Only differences of logits matter: around +-1000 a softmax must subtract the max before exp.
    probs = np.log([0.2, 0.3, 0.5])
    uniform = np.array([0.0, 0.19, 0.21, 0.49, 0.51, 0.99])
    for offset in (1000.0, -1000.0):
        logits = mg.tensor(np.tile(probs + offset, (6, 1)).astype(np.float32))
        with unchanged(logits, uniform):
            levels = graded.sample_levels(logits, uniform)
        np.testing.assert_array_equal(levels, [0, 0, 1, 1, 2, 2], err_msg=f"logits around {offset:g}")


class CountingModel:
    """Logits that depend on everything drawn so far, so a wrong order gives other images."""

    def __init__(self, levels):
        self.levels, self.calls = levels, 0

    def __call__(self, x):
        self.calls += 1
        n, c, h, w = x.shape
        weights = np.arange(1, c * h * w + 1).reshape(1, c, h, w)
        score = (x * weights).sum(axis=(1, 2, 3)).reshape(n, 1, 1, 1, 1)
        k = np.arange(self.levels).reshape(1, -1, 1, 1, 1)
        positions = np.arange(c * h * w).reshape(1, 1, c, h, w)
        return mg.tensor(np.cos(score * 0.7 + k * 1.3 + positions * 0.4).astype(np.float32) * 3)


def run_loop(loop, temperature, seed=0, shape=(4, 2, 3, 3)):
    x = np.zeros(shape, dtype=np.int64)
    uniform = np.random.default_rng(seed).random(x.shape)
    model, drawn = CountingModel(levels=4), []
    before = uniform.copy()
    loop(model, x, uniform, temperature, lambda c, i, j: drawn.append((c, i, j)))
    np.testing.assert_array_equal(uniform, before, err_msg="the uniform numbers were changed in place")
    return x, model.calls, drawn


@pytest.mark.task4_4
def test_sampling_loop_visits_sub_pixels_in_raster_and_colour_order(graded):
    x, calls, drawn = run_loop(graded.naive_sampling_loop, 1.0)
    assert drawn == [(c, i, j) for i in range(3) for j in range(3) for c in range(2)]
    assert calls == 18, "one network evaluation per sub-pixel"
    np.testing.assert_array_equal(x, run_loop(reference.naive_sampling_loop, 1.0)[0])


@pytest.mark.task4_4
def test_sampling_loop_on_wide_colour_images(graded):
    shape = (3, 3, 2, 4)  # C = 3 colours, H = 2 rows, W = 4 columns
    x, calls, drawn = run_loop(graded.naive_sampling_loop, 1.0, seed=2, shape=shape)
    assert drawn == [(c, i, j) for i in range(2) for j in range(4) for c in range(3)]
    assert calls == 24, "one network evaluation per sub-pixel"
    np.testing.assert_array_equal(x, run_loop(reference.naive_sampling_loop, 1.0, seed=2, shape=shape)[0])


@pytest.mark.task4_4
def test_sampling_loop_applies_the_temperature(graded):
    for temperature in (0.3, 2.0):
        np.testing.assert_array_equal(run_loop(graded.naive_sampling_loop, temperature, seed=1)[0],
                                      run_loop(reference.naive_sampling_loop, temperature, seed=1)[0])


# ----------------------------------------------------------------------------
# Task 4.5: one Gated PixelCNN layer


def gated_inputs(seed, first, colors=1, hidden=4, num_classes=None, size=(3, 4)):
    mg.manual_seed(seed)
    layer = reference.GatedLayer(hidden, colors, 3, first, num_classes)
    rng = np.random.default_rng(seed)
    for p in layer.parameters():  # nonzero biases and class biases, so that every term shows
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.5
    width = colors if first else hidden
    v = rng.standard_normal((2, width) + size).astype(np.float32)
    h = v if first else rng.standard_normal((2, width) + size).astype(np.float32)
    labels = None if num_classes is None else np.array([1, 0])
    return layer, v, h, labels


@pytest.mark.task4_5
@pytest.mark.parametrize("first, colors, num_classes", [(True, 1, None), (False, 1, None), (True, 3, 2),
                                                        (False, 3, 2)])
def test_the_gated_layer_gives_the_librarys_stacks(graded, unchanged, first, colors, num_classes):
    layer, v, h, labels = gated_inputs(int(first) + colors, first, colors, hidden=6, num_classes=num_classes)
    with unchanged(v, h):
        v_new, h_new = graded.gated_layer(layer, mg.tensor(v), mg.tensor(h), labels)
    v_ref, h_ref = reference.gated_layer(layer, mg.tensor(v), mg.tensor(h), labels)
    assert tuple(v_new.shape) == tuple(h_new.shape) == (2, 6, 3, 4), "both stacks: (N, hidden, H, W)"
    assert v_new.dtype == h_new.dtype == np.float32
    np.testing.assert_allclose(v_new.numpy(), v_ref.numpy(), rtol=1e-5, atol=1e-6, err_msg="the vertical stack")
    np.testing.assert_allclose(h_new.numpy(), h_ref.numpy(), rtol=1e-5, atol=1e-6, err_msg="the horizontal stack")


@pytest.mark.task4_5
def test_the_gate_is_tanh_of_the_first_half_times_sigmoid_of_the_second(graded):
    """A layer whose vertical convolution gives a known pre-activation: v' = tanh(a) * sigmoid(b)."""
    layer, v, h, _ = gated_inputs(5, first=False, hidden=2)
    layer.vertical.weight.data[...] = 0
    layer.vertical.bias.data[...] = [0.5, -1.0, 2.0, 3.0]
    v_new, _ = graded.gated_layer(layer, mg.tensor(v), mg.tensor(h), None)
    expected = np.tanh([0.5, -1.0]) / (1 + np.exp(-np.array([2.0, 3.0])))
    np.testing.assert_allclose(v_new.numpy()[0, :, 1, 1], expected, rtol=1e-5)


@pytest.mark.task4_5
def test_the_gradient_reaches_both_stacks_and_every_weight(graded):
    layer, v, h, labels = gated_inputs(3, first=False, num_classes=2)
    weights = np.random.default_rng(1).standard_normal((2, 2, 4, 3, 4)).astype(np.float32)

    def grads(function):
        layer.zero_grad()
        inputs = [mg.tensor(v, requires_grad=True), mg.tensor(h, requires_grad=True)]
        v_new, h_new = function(layer, *inputs, labels)
        (v_new * mg.tensor(weights[0]) + h_new * mg.tensor(weights[1])).sum().backward()
        return [a.grad for a in inputs] + [p.grad for p in layer.parameters()]

    mine, right = grads(graded.gated_layer), grads(reference.gated_layer)
    for index, (a, b) in enumerate(zip(mine, right)):
        assert a is not None, f"no gradient reached input or parameter {index}: use Tensor ops"
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"gradient {index}")


@pytest.mark.task4_5
def test_the_naive_sampler_with_your_layer_draws_the_cached_samplers_images(graded, monkeypatch):
    """The cached sampler steps the layers at one place (not your function); the naive sampler
    runs the whole network, your layer in it, before every sub-pixel: the same images."""
    mg.manual_seed(1)
    model = reference.GatedPixelCNN(channels=3, levels=3, hidden=6, layers=2, num_classes=2)
    cached = model.sample(2, (2, 3), labels=[0, 1], seed=2, cached=True)
    monkeypatch.setattr(reference, "gated_layer", graded.gated_layer)
    np.testing.assert_array_equal(model.sample(2, (2, 3), labels=[0, 1], seed=2), cached)


# ----------------------------------------------------------------------------
# Task 4.6: the cached sampling loop


def small_models():
    """Two small models with large weights: logits that every cached activation changes."""
    mg.manual_seed(3)
    models = [reference.PixelCNN(channels=3, levels=4, hidden=6, blocks=1, first_kernel=3, num_classes=2),
              reference.GatedPixelCNN(channels=3, levels=4, hidden=6, layers=2, num_classes=2)]
    for model in models:
        for p in model.parameters():
            p.data *= 4
    return models


@pytest.mark.task4_6
@pytest.mark.parametrize("which", [0, 1], ids=["PixelCNN", "GatedPixelCNN"])
def test_the_cached_loop_draws_the_naive_samplers_images_in_raster_order(graded, unchanged, which):
    model = small_models()[which]
    naive = model.sample(2, (3, 3), labels=[1, 0], temperature=0.8, seed=5)
    uniform = np.random.default_rng(5).random((2, 3, 3, 3))
    labels = mg.tensor(np.array([1, 0]))
    x = np.zeros((2, 3, 3, 3), dtype=np.int64)
    order = []
    with model.evaluating(), unchanged(uniform):
        graded.cached_sampling_loop(model, x, labels, uniform, 0.8, lambda c, i, j: order.append((c, i, j)))
    assert order == [(c, i, j) for i in range(3) for j in range(3) for c in range(3)], \
        "drawn(c, i, j) once per sub-pixel, rows, then columns, then colours"
    np.testing.assert_array_equal(x, naive)


@pytest.mark.task4_6
def test_the_cached_sampler_of_the_library_runs_your_loop(graded, monkeypatch):
    model = small_models()[0]
    naive = model.sample(3, (4, 3), labels=[0, 1, 1], seed=7)
    monkeypatch.setattr(reference, "cached_sampling_loop", graded.cached_sampling_loop)
    steps = []
    cached = model.sample(3, (4, 3), labels=[0, 1, 1], seed=7, cached=True,
                          on_step=lambda c, i, j, x: steps.append(int(x[:, c, i, j].sum())))
    np.testing.assert_array_equal(cached, naive)
    assert len(steps) == 4 * 3 * 3


# ----------------------------------------------------------------------------
# Task 4.7: one training step


def model_and_batch(seed=0, num_classes=None):
    mg.manual_seed(seed)
    model = reference.PixelCNN(channels=1, levels=3, hidden=4, blocks=1, first_kernel=3, num_classes=num_classes)
    x = np.random.default_rng(seed).integers(0, 3, (4, 1, 4, 4))
    return model, x


def stale_gradients(model, seed=9):
    """What the step before left in p.grad."""
    other = np.random.default_rng(seed).integers(0, 3, (4, 1, 4, 4))
    labels = None if model.num_classes is None else [0, 1, 0, 1]
    model.loss(other, labels).backward()


@pytest.mark.task4_7
@pytest.mark.parametrize("grad_clip, num_classes", [(None, None), (0.05, None), (None, 2)])
def test_one_step_updates_the_weights_as_the_library_does(graded, grad_clip, num_classes):
    labels = None if num_classes is None else np.array([0, 1, 1, 0])
    results = []
    for step in (graded.training_step, train.training_step):
        model, x = model_and_batch(num_classes=num_classes)
        stale_gradients(model)
        optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
        loss = step(model, optimizer, x, labels, grad_clip)
        results.append((float(loss.item()), [p.data.copy() for p in model.parameters()]))
    (loss, weights), (expected_loss, expected) = results
    assert loss == pytest.approx(expected_loss, rel=1e-6), "return the loss of the batch, before the update"
    for index, (mine, right) in enumerate(zip(weights, expected)):
        np.testing.assert_allclose(mine, right, rtol=1e-5, atol=1e-6, err_msg=f"parameter {index} after the step")


@pytest.mark.task4_7
def test_the_step_returns_a_scalar_loss_and_changes_every_parameter(graded):
    model, x = model_and_batch(1)
    before = [p.data.copy() for p in model.parameters()]
    expected = model.loss(x).item()
    loss = graded.training_step(model, mg.optim.SGD(model.parameters(), lr=0.1), x)
    assert tuple(loss.shape) == () and loss.dtype == np.float32, "the loss: a scalar float32 Tensor"
    assert loss.item() == pytest.approx(expected, rel=1e-6), "the loss of the batch, before the update"
    changed = [not np.array_equal(p.data, b) for p, b in zip(model.parameters(), before)]
    assert all(changed), "every parameter with a gradient takes a step"


@pytest.mark.task4_7
def test_training_with_your_step_gives_the_librarys_run(graded, monkeypatch):
    """minigen's training loop (train.train) with your step: the same losses and test likelihood.
    SGD here: an optimizer's state made inside your step stays in the process that runs it."""
    config = train.TrainConfig(family="pixelcnn", data="digits", levels=2, steps=4, batch_size=8, lr=0.05,
                               model={"hidden": 4, "blocks": 1, "first_kernel": 3}, verbose=False)
    monkeypatch.setattr(train.optim, "Adam", lambda params, lr: mg.optim.SGD(params, lr=lr))
    expected = train.train(config)
    monkeypatch.setattr(train, "training_step", graded.training_step)
    result = train.train(config)
    np.testing.assert_allclose(result["losses"], expected["losses"], rtol=1e-5)
    assert result["test_nll"] == pytest.approx(expected["test_nll"], rel=1e-5)

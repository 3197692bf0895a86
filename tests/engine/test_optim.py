"""Optimizers against hand-computed updates, their saved state, gradient clipping and EMA."""

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim
from minigen.checkpoint import load, save


def _steps(make_optimizer, start, grads, device="cpu"):
    """Run one optimizer on one parameter with the given gradients; the values after each step."""
    p = nn.Parameter(np.array(start, np.float32)).to(device)
    optimizer = make_optimizer([p])
    values = []
    for g in grads:
        p.grad = mg.tensor(np.array(g, np.float32), device=device).data
        optimizer.step()
        values.append(p.numpy().copy())
    return values


def _adam_reference(start, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Adam as written in the paper (bias-corrected moments), in float64."""
    (b1, b2), p = betas, np.array(start, np.float64)
    m = v = np.zeros_like(p)
    values = []
    for t, g in enumerate(grads, start=1):
        g = np.array(g, np.float64)
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        values.append(p)
    return values


# ----------------------------------------------------------------------------
# Updates


def test_sgd_moves_against_the_gradient(device):
    values = _steps(lambda ps: optim.SGD(ps, lr=0.1), [1.0, -2.0], [[0.5, 1.0], [-1.0, 0.25]], device)
    np.testing.assert_allclose(values, [[0.95, -2.1], [1.05, -2.125]], rtol=1e-6)


@pytest.mark.parametrize("nesterov, expected", [(False, [0.94, 0.9766]), (True, [0.886, 1.010566])])
def test_sgd_momentum_and_weight_decay_by_hand(nesterov, expected, device):
    # step 1: d = 0.5 + 0.1 * 1 = 0.6, buf = 0.6
    # step 2: d = -1 + 0.1 * p1, buf = 0.9 * 0.6 + d; nesterov steps along d + 0.9 * buf
    make = lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=nesterov)
    values = _steps(make, [1.0], [[0.5], [-1.0]], device)
    np.testing.assert_allclose(np.ravel(values), expected, rtol=1e-6)


def test_adam_first_step_is_lr_times_the_sign_and_second_matches_by_hand(device):
    values = _steps(lambda ps: optim.Adam(ps, lr=0.1), [1.0, -1.0], [[0.5, -2.0], [0.5, 1.0]], device)
    np.testing.assert_allclose(values[0], [0.9, -0.9], rtol=1e-6)
    # second coordinate: m = -0.08, m_hat = -0.08 / 0.19, v_hat = 0.004996 / 0.001999
    np.testing.assert_allclose(values[1], [0.8, -0.9 + 0.1 * (0.08 / 0.19) / np.sqrt(0.004996 / 0.001999)], rtol=1e-6)


GRADS = [[0.5, -2.0, 0.0], [0.3, 1.0, -0.1], [-0.2, 0.4, 0.7]]


@pytest.mark.parametrize(
    "make, reference",
    [
        (lambda ps: optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-3), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
        (lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.5), dict(lr=0.05, weight_decay=0.5)),
        (lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.5), dict(lr=0.05, weight_decay=0.5, decoupled=True)),
        (lambda ps: optim.AdamW(ps, lr=0.05), dict(lr=0.05, weight_decay=0.01, decoupled=True)),
    ],
    ids=["adam", "adam_l2", "adamw", "adamw_default_decay"],
)
def test_adam_and_adamw_follow_the_formulas(make, reference, device):
    values = _steps(make, [1.0, -1.0, 2.0], GRADS, device)
    np.testing.assert_allclose(values, _adam_reference([1.0, -1.0, 2.0], GRADS, **reference), rtol=2e-6)


def test_l2_and_decoupled_weight_decay_differ():
    adam = _steps(lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.5), [2.0], [[1.0], [1.0]])
    adamw = _steps(lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.5), [2.0], [[1.0], [1.0]])
    assert abs(adam[-1][0] - adamw[-1][0]) > 1e-3


def test_parameters_without_gradient_are_skipped_and_keep_their_own_step_count():
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    optimizer = optim.Adam([a, b], lr=0.1)
    for step in range(3):
        a.grad = np.ones(1, np.float32)
        b.grad = np.ones(1, np.float32) if step == 2 else None
        optimizer.step()
        if step < 2:
            assert b.numpy()[0] == 0.0
    assert [s.get("step") for s in optimizer.state] == [3, 1]
    np.testing.assert_allclose(b.numpy(), [-0.1], rtol=1e-6)  # a first step: lr times the sign


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True),
        lambda ps: optim.Adam(ps, weight_decay=0.1),
        lambda ps: optim.AdamW(ps),
    ],
    ids=["sgd_momentum", "sgd_nesterov_decay", "adam", "adamw"],
)
def test_updates_are_in_place_on_data_and_never_touch_the_gradient(make):
    p = nn.Parameter(np.array([1.0, 2.0]))
    optimizer = make([p])
    data, grad = p.data, np.array([0.5, -0.5], np.float32)
    for _ in range(2):
        p.grad = grad
        optimizer.step()
    assert p.data is data and not np.array_equal(data, [1.0, 2.0])
    assert p.grad is grad
    np.testing.assert_array_equal(grad, [0.5, -0.5])


def test_zero_grad_and_a_generator_of_parameters():
    layer = nn.Linear(2, 2)
    optimizer = optim.SGD(layer.parameters(), lr=0.1)
    assert optimizer.params == list(layer.parameters())
    layer(mg.randn(3, 2)).sum().backward()
    optimizer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: optim.SGD([], lr=0.1), ValueError, "empty list of parameters"),
        (lambda p: optim.Adam(iter([])), ValueError, "empty list of parameters"),
        (lambda p: optim.SGD([p], lr=0), ValueError, "SGD: lr must be a positive number, got 0"),
        (lambda p: optim.AdamW([p], lr=-1e-3), ValueError, "AdamW: lr must be a positive number, got -0.001"),
        (lambda p: optim.Adam([p], betas=(1.0, 0.9)), ValueError, r"betas must be a pair of numbers in \[0, 1\)"),
        (lambda p: optim.SGD([p], lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
        (lambda p: optim.SGD([p, p], lr=0.1), ValueError, "appears more than once"),
        (lambda p: optim.SGD([p.data], lr=0.1), TypeError, "parameter 0 is a ndarray, not a Tensor"),
        (lambda p: optim.EMA(nn.Linear(1, 1), decay=1.5), ValueError, r"decay must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make(nn.Parameter(np.zeros(2)))


# ----------------------------------------------------------------------------
# Saving, loading and moving the state

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


def _train(model, optimizer, steps, seed):
    data = np.random.default_rng(seed).standard_normal((steps, 4, 3)).astype(np.float32)
    for x in data:
        optimizer.zero_grad()
        (model(mg.tensor(x)) ** 2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_saved_run_resumes_exactly(name, tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    optimizer = OPTIMIZERS[name](model.parameters())
    _train(model, optimizer, 3, seed=1)
    optimizer.lr = 0.02  # a changed hyperparameter is part of the state
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "run.npz")
    _train(model, optimizer, 3, seed=2)

    mg.manual_seed(7)
    resumed = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    resumed_optimizer = OPTIMIZERS[name](resumed.parameters())
    state = load(tmp_path / "run.npz")
    resumed.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    assert resumed_optimizer.lr == 0.02
    _train(resumed, resumed_optimizer, 3, seed=2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(q.numpy(), p.numpy())


def test_state_dict_copies_and_records_hyperparameters():
    p = nn.Parameter(np.zeros(2))
    optimizer = optim.Adam([p], lr=0.1, betas=(0.8, 0.9))
    p.grad = np.ones(2, np.float32)
    optimizer.step()
    state = optimizer.state_dict()
    assert state["type"] == "Adam"
    assert state["hyperparameters"] == {"lr": 0.1, "betas": (0.8, 0.9), "eps": 1e-8, "weight_decay": 0.0}
    assert state["state"][0]["step"] == 1
    state["state"][0]["exp_avg"][...] = 5.0
    assert not np.any(optimizer.state[0]["exp_avg"] == 5.0)


def test_a_mismatched_optimizer_state_is_refused_and_nothing_changes():
    p = nn.Parameter(np.zeros(2))
    optimizer = optim.SGD([p], lr=0.1, momentum=0.5)
    p.grad = np.ones(2, np.float32)
    optimizer.step()
    good = optimizer.state_dict()
    before = optimizer.state_dict()
    with pytest.raises(ValueError, match="belongs to a 'SGD' optimizer"):
        optim.Adam([p]).load_state_dict(good)
    with pytest.raises(ValueError, match="the state has 2 parameters, this optimizer 1"):
        optimizer.load_state_dict({**good, "state": good["state"] * 2})
    bad = {**good, "hyperparameters": {**good["hyperparameters"], "lr": 0.5},
           "state": [{"momentum_buffer": np.ones(3, np.float32)}]}
    with pytest.raises(ValueError, match=r"'parameter 0 momentum_buffer': expected \(2,\), got \(3,\)"):
        optimizer.load_state_dict(bad)
    assert optimizer.lr == 0.1
    np.testing.assert_array_equal(optimizer.state[0]["momentum_buffer"], before["state"][0]["momentum_buffer"])


def _adam_after_one_step():
    params = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
    optimizer = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape, np.float32)
    optimizer.step()
    return optimizer


def test_a_bad_optimizer_state_lists_every_problem_and_changes_nothing():
    optimizer = _adam_after_one_step()
    before = optimizer.state_dict()
    good = optimizer.state_dict()
    for entries in good["state"]:
        for key in ("exp_avg", "exp_avg_sq"):
            entries[key] = entries[key] + 5
    bad = {**good, "hyperparameters": {**good["hyperparameters"], "eps": -1.0},
           "state": [good["state"][0], {**good["state"][1], "step": "3", "exp_avg_sq": np.full(3, "x")}]}
    with pytest.raises(ValueError) as error:
        optimizer.load_state_dict(bad)
    message = str(error.value)
    assert "eps must be a non-negative number, got -1.0" in message
    assert "parameter 1 step is '3', not a count >= 0" in message
    assert "'parameter 1 exp_avg_sq': has dtype <U1, expected floating-point numbers" in message
    assert optimizer.eps == 1e-8
    for ours, saved in zip(optimizer.state, before["state"]):
        assert ours["step"] == saved["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(ours[key], saved[key])
    optimizer.load_state_dict(good)  # the good entries load once nothing is wrong
    np.testing.assert_array_equal(optimizer.state[1]["exp_avg"], before["state"][1]["exp_avg"] + 5)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"momentum_buffer": [1.0, 2.0]}, r"'parameter 0 momentum_buffer': is a list, not an array or Tensor"),
        ({"momentum_buffer": np.array([None, None])}, r"'parameter 0 momentum_buffer': has dtype object"),
        ({"momentum": np.zeros(2, np.float32)},
         r"parameter 0 has state \['momentum'\], expected \['momentum_buffer'\]"),
    ],
    ids=["list", "objects", "unknown_key"],
)
def test_sgd_refuses_unusable_momentum_buffers(entry, message):
    p = nn.Parameter(np.zeros(2))
    optimizer = optim.SGD([p], lr=0.1, momentum=0.5)
    good = optimizer.state_dict()
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict({**good, "state": [entry]})
    assert optimizer.state == [{}]
    optimizer.load_state_dict({**good, "state": [{"momentum_buffer": mg.tensor([1.0, 2.0])}]})  # a Tensor fits
    np.testing.assert_array_equal(optimizer.state[0]["momentum_buffer"], [1.0, 2.0])


def test_ema_refuses_string_shadows_and_a_bad_decay_together():
    model = WithBuffer()
    ema = optim.EMA(model, decay=0.5)
    before = {name: a.copy() for name, a in ema.shadow.items()}
    shadow = {name: a + 1 for name, a in ema.shadow.items()}
    with pytest.raises(ValueError) as error:
        ema.load_state_dict({"decay": 2.0, "shadow": {**shadow, "layer.bias": np.array(["1"])}})
    message = str(error.value)
    assert "decay must be a number in [0, 1], got 2.0" in message and "'layer.bias': has dtype <U1" in message
    assert ema.decay == 0.5
    for name, average in ema.shadow.items():
        np.testing.assert_array_equal(average, before[name])


def test_optimizer_to_moves_its_state(device):
    layer = nn.Linear(2, 2)
    optimizer = optim.Adam(layer.parameters())
    layer(mg.randn(3, 2)).sum().backward()
    optimizer.step()
    layer.to(device)
    assert optimizer.to(device) is optimizer
    assert all(mg.Tensor(s["exp_avg"]).device == device for s in optimizer.state)
    layer(mg.randn(3, 2, device=device)).sum().backward()
    optimizer.step()  # parameters and state on one device again
    assert all(s["step"] == 2 for s in optimizer.state)


@pytest.mark.gpu
def test_state_left_behind_on_another_device_is_a_clear_error():
    layer = nn.Linear(2, 2)
    optimizer = optim.Adam(layer.parameters())
    layer(mg.randn(3, 2)).sum().backward()
    optimizer.step()
    layer.to("cuda")
    message = r"Adam.step \(parameter 0\): inputs are on different devices \(cuda and cpu\)"
    with pytest.raises(mg.DeviceError, match=message):
        optimizer.step()


# ----------------------------------------------------------------------------
# Gradient clipping


def test_clip_grad_norm_rescales_all_gradients_together():
    a, b, untouched = (nn.Parameter(np.zeros(s)) for s in (2, 1, 3))
    a.grad, b.grad = np.array([3.0, 4.0], np.float32), np.array([12.0], np.float32)
    old = a.grad
    total = optim.clip_grad_norm_([a, b, untouched], max_norm=10.0)
    assert isinstance(total, float) and total == pytest.approx(13.0)
    scale = 10.0 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 4 * scale], rtol=1e-6)
    np.testing.assert_allclose(b.grad, [12 * scale], rtol=1e-6)
    assert a.grad is not old and np.array_equal(old, [3.0, 4.0])  # replaced, not changed in place
    assert untouched.grad is None


def test_clip_grad_norm_leaves_small_gradients_alone(device):
    p = nn.Parameter(np.zeros(2)).to(device)
    p.grad = mg.tensor([0.3, 0.4], device=device).data
    grad = p.grad
    assert optim.clip_grad_norm_(iter([p]), max_norm=1.0) == pytest.approx(0.5)
    assert p.grad is grad
    with pytest.raises(ValueError, match="max_norm must be positive, got 0"):
        optim.clip_grad_norm_([p], 0)


# ----------------------------------------------------------------------------
# EMA


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.register_buffer("schedule", np.array([0.1, 0.2], np.float32))

    def forward(self, x):
        return self.layer(x)


def _set(module, value):
    for p in module.parameters():
        p.data = p.data * 0 + value


def test_ema_averages_parameters_and_never_buffers(device):
    model = WithBuffer().to(device)
    _set(model, 1.0)
    ema = optim.EMA(model, decay=0.9)
    assert list(ema.shadow) == ["layer.weight", "layer.bias"]
    _set(model, 3.0)
    ema.update()  # 0.9 * 1 + 0.1 * 3
    _set(model, 5.0)
    ema.update()  # 0.9 * 1.2 + 0.1 * 5
    for average in ema.shadow.values():
        np.testing.assert_allclose(mg.Tensor(average).numpy(), 1.58, rtol=1e-6)
    np.testing.assert_array_equal(mg.Tensor(model.schedule).numpy(), np.array([0.1, 0.2], np.float32))
    assert "schedule" not in ema.state_dict()["shadow"]


def test_average_parameters_swaps_the_averages_in_and_restores(device):
    model = WithBuffer().to(device)
    _set(model, 1.0)
    ema = optim.EMA(model, decay=0.5)
    _set(model, 3.0)
    ema.update()
    originals = [p.data for p in model.parameters()]
    schedule = model.schedule
    x = mg.ones(1, 2, device=device)
    with ema.average_parameters() as averaged:
        assert averaged is model
        np.testing.assert_allclose(model(x).numpy(), [[2.0 * 2 + 2.0]], rtol=1e-6)
        assert model.schedule is schedule
    assert [p.data for p in model.parameters()] == originals
    np.testing.assert_allclose(model(x).numpy(), [[3.0 * 2 + 3.0]], rtol=1e-6)


def test_ema_copy_to_another_module_and_state_round_trip():
    model = WithBuffer()
    ema = optim.EMA(model, decay=0.5)
    _set(model, 4.0)
    ema.update()
    target = WithBuffer()
    ema.copy_to(target)
    for name, p in target.named_parameters():
        np.testing.assert_array_equal(p.numpy(), ema.shadow[name], err_msg=name)
    restored = optim.EMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.5
    for name, average in ema.shadow.items():
        np.testing.assert_array_equal(restored.shadow[name], average)
    with pytest.raises(ValueError, match=r"EMA.copy_to: .*missing keys 'weight'"):
        ema.copy_to(nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"EMA.load_state_dict: .*shape mismatch 'layer.bias'"):
        restored.load_state_dict({"decay": 0.5, "shadow": {**ema.shadow, "layer.bias": np.zeros(3)}})
    assert restored.decay == 0.5 and restored.shadow["layer.bias"].shape == (1,)


def test_ema_to_moves_the_averages(device):
    model = WithBuffer()
    ema = optim.EMA(model)
    model.to(device)
    assert ema.to(device) is ema
    assert all(mg.Tensor(a).device == device for a in ema.shadow.values())
    ema.update()


# ----------------------------------------------------------------------------
# 0-d, 1-d and non-contiguous parameters (NumPy turns 0-d sums into scalars,
# which in-place updates of the state would miss)

STARTS = {
    "0-d": lambda: np.array(0.7, np.float32),
    "1-d": lambda: np.array([1.0, -2.0, 0.5], np.float32),
    "transposed": lambda: np.array([[1.0, -2.0, 0.5], [3.0, -0.25, 2.0]], np.float32).T,  # a view
}
WEIGHTS = [1.0, -0.5, 2.0]  # step t's loss: sum(w_t * p * p) / 2, so one backward gives w_t * p
SETTINGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd_momentum_decay": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
    "sgd_nesterov_decay": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)),
    "adam_l2": ("Adam", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1)),
    "adamw": ("AdamW", dict(lr=0.05, weight_decay=0.1)),
}


def _reference(name, settings, start):
    """The three updates written out in float64 (the gradient is 2 w_t p: two backward calls)."""
    p, lr, wd = np.array(start, np.float64), settings["lr"], settings.get("weight_decay", 0.0)
    momentum, nesterov = settings.get("momentum", 0.0), settings.get("nesterov", False)
    (b1, b2), eps = settings.get("betas", (0.9, 0.999)), settings.get("eps", 1e-8)
    buf, m, v, values = None, 0.0, 0.0, []
    for t, w in enumerate(WEIGHTS, start=1):
        g = 2 * w * p
        if name == "SGD":
            g = g + wd * p
            if momentum:
                buf = g if buf is None else momentum * buf + g
                g = g + momentum * buf if nesterov else buf
            p = p - lr * g
        else:
            if name == "AdamW":
                p = p * (1 - lr * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        values.append(p)
    return values


def _run_accumulating(make, start):
    """Three steps; each step's gradient comes from two backward calls that accumulate."""
    p = nn.Parameter(start)
    data, optimizer, values = p.data, make([p]), []
    for w in WEIGHTS:
        optimizer.zero_grad()
        for _ in range(2):
            ((p * p) * (w / 2)).sum().backward()
        assert isinstance(p.grad, np.ndarray) and p.grad.shape == p.shape
        optimizer.step()
        values.append(p.numpy().copy())
    assert p.data is data  # updated in place, a view included
    assert all(s.shape == p.shape for state in optimizer.state for s in state.values() if nn.is_array(s))
    return values


@pytest.mark.parametrize("shape", STARTS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_optimizers_on_0d_1d_and_non_contiguous_parameters(setting, shape):
    name, settings = SETTINGS[setting]
    start = STARTS[shape]()
    assert shape != "transposed" or not start.flags.c_contiguous
    values = _run_accumulating(lambda ps: getattr(optim, name)(ps, **settings), start)  # updates start
    for step, (got, expected) in enumerate(zip(values, _reference(name, settings, STARTS[shape]()))):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=f"step {step + 1}")


def test_sgd_momentum_with_weight_decay_on_a_0d_parameter_matches_the_numbers_by_hand():
    # loss p^2, p0 = 1, lr 0.1, momentum 0.9, weight decay 0.1: g = 2p + 0.1p = 2.1p
    # buf1 = 2.1, p1 = 0.79; buf2 = 0.9*2.1 + 2.1*0.79 = 3.549, p2 = 0.4351;
    # buf3 = 0.9*3.549 + 2.1*0.4351 = 4.10781, p3 = 0.024319 (the old code gave 0.1547)
    p = nn.Parameter(np.array(1.0, np.float32))
    optimizer = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    for expected in (0.79, 0.4351, 0.024319):
        optimizer.zero_grad()
        (p * p).backward()
        optimizer.step()
        assert p.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", STARTS)
def test_ema_on_0d_1d_and_non_contiguous_parameters(shape):
    holder = nn.Module()
    holder.p = nn.Parameter(STARTS[shape]())
    ema = optim.EMA(holder, decay=0.9)
    expected = holder.p.numpy().astype(np.float64)
    for step in range(3):
        holder.p.data[...] = holder.p.data * 2 - step  # in place, a view stays a view
        ema.update()
        expected = 0.9 * expected + 0.1 * holder.p.numpy()
        assert isinstance(ema.shadow["p"], np.ndarray) and ema.shadow["p"].shape == holder.p.shape
        np.testing.assert_allclose(ema.shadow["p"], expected, rtol=1e-6)
    with ema.average_parameters():
        np.testing.assert_allclose(holder.p.numpy(), expected, rtol=1e-6)
    assert not np.allclose(holder.p.numpy(), expected)


def test_clip_grad_norm_on_0d_1d_and_non_contiguous_gradients():
    params = [nn.Parameter(STARTS[shape]()) for shape in STARTS]
    grads = [np.array(3.0, np.float32), np.array([4.0, 0.0, 0.0], np.float32),
             np.array([[0.0, 12.0, 0.0], [0.0, 0.0, 0.0]], np.float32).T]
    for p, g in zip(params, grads):
        p.grad = g
    assert optim.clip_grad_norm_(params, max_norm=6.5) == pytest.approx(13.0)
    for p, g in zip(params, grads):
        assert isinstance(p.grad, np.ndarray) and p.grad.shape == p.shape
        np.testing.assert_allclose(p.grad, g * (6.5 / (13.0 + 1e-6)), rtol=1e-6)


@pytest.mark.parametrize("shape", STARTS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_optimizers_match_torch(setting, shape):
    torch = pytest.importorskip("torch")
    name, settings = SETTINGS[setting]
    values = _run_accumulating(lambda ps: getattr(optim, name)(ps, **settings), STARTS[shape]())
    p = torch.nn.Parameter(torch.from_numpy(STARTS[shape]()))
    optimizer = getattr(torch.optim, name)([p], **settings)
    for w, ours in zip(WEIGHTS, values):
        optimizer.zero_grad()
        for _ in range(2):
            ((p * p) * (w / 2)).sum().backward()
        optimizer.step()
        np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_ema_and_clipping_match_torch():
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    holder, twin = nn.Module(), torch.nn.Module()
    holder.p = nn.Parameter(STARTS["0-d"]())
    twin.p = torch.nn.Parameter(torch.from_numpy(STARTS["0-d"]()))
    ema, averaged = optim.EMA(holder, decay=0.9), AveragedModel(twin, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    averaged.update_parameters(twin)  # torch's first call copies; ours copied at construction
    for step in range(3):
        holder.p.data[...] = holder.p.data * 2 - step
        with torch.no_grad():
            twin.p.mul_(2).sub_(step)
        ema.update()
        averaged.update_parameters(twin)
        np.testing.assert_allclose(ema.shadow["p"], averaged.module.p.detach().numpy(), rtol=1e-6)
    ours = [nn.Parameter(STARTS[shape]()) for shape in STARTS]
    theirs = [torch.nn.Parameter(torch.from_numpy(STARTS[shape]())) for shape in STARTS]
    for a, b, g in zip(ours, theirs, (2.0, [1.0, -3.0, 0.5], [[4.0, 1.0], [0.0, 2.0], [-1.0, 0.0]])):
        a.grad, b.grad = np.array(g, np.float32), torch.tensor(g, dtype=torch.float32)
    total = optim.clip_grad_norm_(ours, max_norm=1.5)
    assert total == pytest.approx(float(torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.5)), rel=1e-6)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-6)

"""The models' doors: bad images, labels and sampling settings are one-line errors that
name the argument, the expected and the received values, raised before any work
(parameters and the random streams untouched)."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen import optim
from minigen.models.ddpm import DDPM, DDPMConfig
from minigen.models.inputs import check_images, check_labels
from minigen.models.pixelcnn import GatedPixelCNN, PixelCNN

FAMILIES = {
    "pixelcnn": lambda **kw: PixelCNN(hidden=12, blocks=1, levels=2, **kw),
    "gated": lambda **kw: GatedPixelCNN(hidden=12, layers=2, levels=2, **kw),
}


def tiny_ddpm(**settings):
    base = dict(channels=1, levels=3, image_size=4, T=20, schedule="cosine", base_channels=8,
                channel_mults=(1,), groups=4)
    return DDPM(**{**base, **settings})


def weights(model):
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def assert_rejected(call, error, *words):
    """``call()`` raises ``error`` with a one-line message holding every one of ``words``."""
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# ----------------------------------------------------------------------------
# PixelCNN family

ONES = np.ones((2, 1, 2, 2), dtype=np.int64)
PIXELCNN_CASES = {
    "non-integer floats": (ONES - 0.5, ValueError, ["x must hold whole numbers", "0..1", "0.5 at index (0, 0, 0, 0)"]),
    "[0, 1]-scaled floats": (ONES * 0.25, ValueError, ["whole numbers", "rint(x * 1)"]),
    "NaN": (np.where(np.arange(8).reshape(2, 1, 2, 2) == 3, np.nan, 1.0), ValueError,
            ["must hold finite", "1 NaN or infinite", "nan at index (0, 0, 1, 1)"]),
    "infinity": (np.full((1, 1, 2, 2), np.inf), ValueError, ["finite", "4 NaN or infinite"]),
    "out of range": (ONES * 2, ValueError, ["levels in 0..1", "from 2 to 2"]),
    "negative": (ONES - 2, ValueError, ["levels in 0..1", "from -1 to -1"]),
    "wrong channels": (np.zeros((1, 3, 2, 2), dtype=np.int64), ValueError, ["shape (N, 1, H, W)", "(1, 3, 2, 2)"]),
    "wrong ndim": (np.zeros((2, 2), dtype=np.int64), ValueError, ["shape (N, 1, H, W)", "got (2, 2)"]),
    "empty batch": (np.zeros((0, 1, 2, 2), dtype=np.int64), ValueError, ["empty batch", "(0, 1, 2, 2)"]),
    "no pixels": (np.zeros((2, 1, 0, 3), dtype=np.int64), ValueError, ["no pixels"]),
    "strings": (np.array([["a"]]), TypeError, ["x must hold numbers", "dtype <U1"]),
    "None": (None, TypeError, ["x must be an array or Tensor", "NoneType"]),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["log_prob", "loss", "forward"])
@pytest.mark.parametrize("case", PIXELCNN_CASES)
def test_pixelcnn_rejects_bad_images_before_any_work(family, method, case):
    model = FAMILIES[family]()
    x, error, words = PIXELCNN_CASES[case]
    before = weights(model)
    assert_rejected(lambda: getattr(model, method)(x), error, f"{type(model).__name__}.{method}: ", *words)
    after = weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_pixelcnn_accepts_lists_tensors_and_integer_floats_with_the_same_numbers(family):
    model = FAMILIES[family](num_classes=3)
    x = np.random.default_rng(0).integers(0, 2, (3, 1, 3, 3))
    labels = np.array([0, 2, 1])
    with mg.no_grad():
        expected = model.log_prob(x, labels).numpy()
        for same_x in (x.tolist(), x.astype(np.float32), mg.tensor(x), mg.tensor(x.astype(np.float64)),
                       x.astype(np.uint8), x.astype(bool)):
            for same_labels in (labels.tolist(), mg.tensor(labels), labels.astype(np.float32)):
                np.testing.assert_array_equal(model.log_prob(same_x, same_labels).numpy(), expected)
        one_label = model.log_prob(x, 1).numpy()
        np.testing.assert_array_equal(one_label, model.log_prob(x, [1, 1, 1]).numpy())


@pytest.mark.parametrize("labels, error, words", [
    ([0, 1], ValueError, ["labels must hold one class per image, shape (3,)", "got shape (2,)"]),
    ([0, 1, 1, 0], ValueError, ["shape (3,)", "got shape (4,)"]),
    ([0, 1, 3], ValueError, ["labels must be in 0..2, got [0, 1, 3]"]),
    ([0, 1, -1], ValueError, ["labels must be in 0..2", "-1"]),
    ([0, 1.5, 1], ValueError, ["labels must hold whole numbers (class indices 0..2)", "1.5"]),
    ([0, np.nan, 1], ValueError, ["labels must hold finite", "nan at index (1,)"]),
    (["a", "b", "c"], TypeError, ["labels must hold numbers"]),
])
def test_pixelcnn_rejects_bad_labels(labels, error, words):
    model = FAMILIES["gated"](num_classes=3)
    x = np.zeros((3, 1, 2, 2), dtype=np.int64)
    assert_rejected(lambda: model.log_prob(x, labels), error, "GatedPixelCNN.log_prob: ", *words)
    assert_rejected(lambda: model.sample(3, size=(2, 2), labels=labels), error, "GatedPixelCNN.sample: ", *words)


def test_pixelcnn_labels_must_match_the_model():
    x = np.zeros((1, 1, 2, 2), dtype=np.int64)
    assert_rejected(lambda: FAMILIES["pixelcnn"](num_classes=2).log_prob(x), ValueError,
                    "PixelCNN.log_prob: this model needs labels (num_classes=2)")
    assert_rejected(lambda: FAMILIES["pixelcnn"]().log_prob(x, [0]), ValueError,
                    "PixelCNN.log_prob: this model was built without classes")


@pytest.mark.parametrize("settings, words", [
    (dict(n=0), ["PixelCNN.sample: n (the number of images) must be an integer >= 1, got 0"]),
    (dict(n=-2), ["n (the number of images)", "got -2"]),
    (dict(n=2.0), ["n (the number of images)", "got 2.0"]),
    (dict(n=1, temperature=0), ["temperature must be a finite number > 0, got 0"]),
    (dict(n=1, temperature=-1.0), ["temperature", "got -1.0"]),
    (dict(n=1, temperature=math.nan), ["temperature", "got nan"]),
    (dict(n=1, temperature=math.inf), ["temperature", "got inf"]),
    (dict(n=1, size=(0, 2)), ["PixelCNN.sample: size must be an int >= 1"]),
])
def test_pixelcnn_sampling_options_are_checked_first(settings, words):
    model = FAMILIES["pixelcnn"]()
    steps = []
    assert_rejected(lambda: model.sample(on_step=lambda *a: steps.append(a), **{"size": (2, 2), **settings}),
                    ValueError, *words)
    assert steps == []


# ----------------------------------------------------------------------------
# DDPM

DDPM_ONES = np.ones((2, 1, 4, 4), dtype=np.int64)
DDPM_CASES = {
    "out of range": (DDPM_ONES * 3, ValueError, ["levels in 0..2", "from 3 to 3"]),
    "[0, 1]-scaled floats": (DDPM_ONES * 0.5, ValueError, ["whole numbers", "0.5", "rint(x * 2)"]),
    "NaN": (np.where(np.arange(32).reshape(2, 1, 4, 4) == 5, np.nan, 1.0), ValueError,
            ["finite", "1 NaN or infinite", "at index (0, 0, 1, 1)"]),
    "wrong size": (np.zeros((2, 1, 8, 8), dtype=np.int64), ValueError, ["shape (N, 1, 4, 4)", "(2, 1, 8, 8)"]),
    "wrong channels": (np.zeros((2, 3, 4, 4), dtype=np.int64), ValueError, ["shape (N, 1, 4, 4)", "(2, 3, 4, 4)"]),
    "empty batch": (np.zeros((0, 1, 4, 4), dtype=np.int64), ValueError, ["empty batch"]),
    "a dict": ({"x": 1}, TypeError, ["x must be an array or Tensor", "dict"]),
}


@pytest.mark.parametrize("method", ["loss", "nll_bound"])
@pytest.mark.parametrize("case", DDPM_CASES)
def test_ddpm_rejects_bad_images_before_any_work(method, case):
    model = tiny_ddpm()
    x, error, words = DDPM_CASES[case]
    before, streams = weights(model), mg.backend.get_rng_state()
    assert_rejected(lambda: getattr(model, method)(x), error, f"DDPM.{method}: ", *words)
    after = weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # no random number was drawn: the next loss is the one a fresh seed gives
    mg.backend.set_rng_state(streams)
    expected = model.loss(DDPM_ONES).item()
    mg.backend.set_rng_state(streams)
    assert_rejected(lambda: getattr(model, method)(x), error)
    assert model.loss(DDPM_ONES).item() == expected


def test_ddpm_rejected_loss_trains_nothing():
    model = tiny_ddpm()
    opt = optim.Adam(model.parameters(), lr=0.1)
    before = weights(model)
    opt.zero_grad()
    assert_rejected(lambda: model.loss(DDPM_ONES * 0.5).backward(), ValueError, "DDPM.loss")
    opt.step()
    after = weights(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_ddpm_accepts_lists_tensors_and_integer_floats_with_the_same_numbers():
    model = tiny_ddpm(num_classes=2)
    x = np.random.default_rng(0).integers(0, 3, (2, 1, 4, 4))
    expected = model.nll_bound(x, [0, 1], timesteps=2).numpy()
    for same in (x.tolist(), x.astype(np.float32), mg.tensor(x.astype(np.float32))):
        np.testing.assert_array_equal(model.nll_bound(same, np.array([0.0, 1.0]), timesteps=2).numpy(), expected)
    mg.manual_seed(3)
    loss = model.loss(x, [0, 1]).item()
    mg.manual_seed(3)
    assert model.loss(x.astype(np.float64), mg.tensor(np.array([0, 1]))).item() == loss


def test_ddpm_labels_are_checked():
    model = tiny_ddpm(num_classes=2)
    assert_rejected(lambda: model.loss(DDPM_ONES), ValueError, "DDPM.loss: this model is class-conditional")
    assert_rejected(lambda: model.loss(DDPM_ONES, [0, 1, 1]), ValueError,
                    "DDPM.loss: labels must hold one class per image, shape (2,), got shape (3,)")
    assert_rejected(lambda: model.nll_bound(DDPM_ONES, [0, 2]), ValueError,
                    "DDPM.nll_bound: labels must be in 0..1, got [0, 2]")
    assert_rejected(lambda: model.sample(2, [0, np.nan]), ValueError, "DDPM.generate: labels must hold finite")


@pytest.mark.parametrize("settings, error, words", [
    (dict(n=0), ValueError, ["DDPM.generate: n (the number of images) must be an integer >= 1, got 0"]),
    (dict(n=2, guidance=math.nan), ValueError, ["SamplerOptions: guidance must be a finite number, got nan"]),
    (dict(n=2, guidance=math.inf), ValueError, ["guidance must be a finite number, got inf"]),
    (dict(n=2, sampler="ddim", eta=-1.0), ValueError, ["SamplerOptions: eta must be a number in [0.0, 1.0], got -1.0"]),
    (dict(n=2, sampler="ddim", eta=1.5), ValueError, ["eta must be a number in [0.0, 1.0], got 1.5"]),
    (dict(n=2, sampler="ddim", steps=0), ValueError,
     ["SamplerOptions: steps must be None (DDIM_STEPS = 50) or an integer >= 1, got 0"]),
    (dict(n=2, sampler="ddim", steps=21), ValueError, ["steps must be between 1 and T=20, got 21"]),
    (dict(n=2, x_T=mg.zeros(3, 1, 4, 4)), ValueError, ["x_T must have shape (2, 1, 4, 4)", "got (3, 1, 4, 4)"]),
])
@pytest.mark.parametrize("method", ["sample", "generate"])
def test_ddpm_sampling_options_are_checked_first(method, settings, error, words):
    model = tiny_ddpm(num_classes=2)
    steps = []
    settings = {"labels": [0, 1] if settings.get("n") == 2 else None, **settings}
    assert_rejected(lambda: getattr(model, method)(on_step=lambda *a: steps.append(a), **settings), error, *words)
    assert steps == []


def test_ddpm_unscale_refuses_nan():
    model = tiny_ddpm()
    x = mg.tensor(np.array([[[[0.0, np.nan], [1.0, -1.0]]]]))
    assert_rejected(lambda: model.unscale(x), ValueError, "DDPM.unscale: x has 1 NaN or infinite value(s)")
    np.testing.assert_array_equal(model.unscale(mg.tensor(np.array([[[[-1.0, 0.0, 1.0]]]]))), [[[[0, 1, 2]]]])


def test_ddpm_config_checks_the_image_size_against_the_unet():
    for build in (lambda: DDPMConfig(image_size=7), lambda: DDPM(image_size=7)):
        assert_rejected(build, ValueError, "DDPMConfig: image_size (7) must be divisible by "
                        "2**(len(channel_mults) - 1) = 2 for channel_mults=(1, 2)")
    assert_rejected(lambda: DDPMConfig(image_size=12, channel_mults=(1, 2, 2, 2)), ValueError,
                    "image_size (12)", "= 8")
    assert DDPMConfig(image_size=7, channel_mults=(1,)).image_size == 7
    assert DDPMConfig(image_size=16, channel_mults=(1, 2, 2)).image_size == 16


# ----------------------------------------------------------------------------
# The helpers themselves


def test_check_images_returns_int64_and_keeps_int64_input_as_is():
    x = np.zeros((1, 1, 2, 2), dtype=np.int64)
    assert check_images(x, "f", channels=1, levels=2) is x
    got = check_images(x.astype(np.float32), "f", channels=1, levels=2)
    assert got.dtype == np.int64 and np.array_equal(got, x)


def test_check_labels_broadcasts_one_label():
    np.testing.assert_array_equal(check_labels(1, 3, 2, "f"), [1, 1, 1])
    np.testing.assert_array_equal(check_labels(mg.tensor(np.array([0, 1])), 2, 2, "f"), [0, 1])


def test_checks_run_on_the_images_device(device):
    """The checks are array work on the images' own device (no host copy of the batch)."""
    pixelcnn = FAMILIES["gated"](num_classes=2).to(device)
    ddpm = tiny_ddpm(num_classes=2).to(device)
    bad = mg.tensor(np.where(np.arange(32).reshape(2, 1, 4, 4) == 5, np.nan, 1.0), device=device)
    labels = mg.tensor(np.array([0, 1]), device=device)
    for call, where in [(lambda: pixelcnn.log_prob(bad, labels), "GatedPixelCNN.log_prob"),
                        (lambda: ddpm.loss(bad, labels), "DDPM.loss"),
                        (lambda: ddpm.unscale(bad), "DDPM.unscale")]:
        assert_rejected(call, ValueError, where, "1 NaN or infinite")
    assert_rejected(lambda: ddpm.loss(mg.tensor(DDPM_ONES * 0.5, device=device), labels), ValueError,
                    "DDPM.loss: x must hold whole numbers", "0.5 at index (0, 0, 0, 0)")
    assert_rejected(lambda: pixelcnn.log_prob(mg.tensor(np.ones((2, 1, 4, 4)), device=device),
                                              mg.tensor(np.array([0, 2]), device=device)),
                    ValueError, "labels must be in 0..1, got [0, 2]")
    with mg.no_grad():
        good = mg.tensor(np.ones((2, 1, 4, 4)), device=device)
        assert pixelcnn.log_prob(good, labels).shape == (2,)
        assert pixelcnn.log_prob(good, np.array([0, 1])).shape == (2,)  # host labels follow the images

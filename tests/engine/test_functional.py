"""minigen.engine.functional: values against direct references, gradcheck for every
input, numerical stability, dtypes, and the error messages users see."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import functional as F


def _t(array, device, requires_grad=True, dtype="float32"):
    return mg.tensor(np.asarray(array), requires_grad=requires_grad, device=device, dtype=dtype)


def _host(array):
    """A gradient (NumPy or CuPy array) as a NumPy array, for comparisons."""
    return mg.backend.to_device(array, "cpu")


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _conv_reference(x, w, b, stride, padding):
    """Direct definition: each output pixel is a window of the padded input dotted with a filter."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for ni in range(n):
        for oi in range(o):
            for y in range(ho):
                for xi in range(wo):
                    window = x[ni, :, y * sh : y * sh + kh, xi * sw : xi * sw + kw]
                    out[ni, oi, y, xi] = (window * w[oi]).sum() + (0.0 if b is None else b[oi])
    return out


# ----------------------------------------------------------------------------
# conv2d

# (x shape, w shape, stride, padding)
CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
    ((2, 2, 5, 6), (3, 2, 3, 3), 1, 1),
    ((1, 2, 7, 6), (2, 2, 3, 3), 2, 1),
    ((2, 2, 6, 5), (3, 2, 2, 3), (2, 1), (1, 0)),
    ((1, 3, 4, 4), (2, 3, 1, 1), 1, 0),
]


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_matches_direct_loops(xs, ws, stride, padding, device, rng):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    out = F.conv2d(_t(x, device), _t(w, device), _t(b, device), stride=stride, padding=padding)
    expected = _conv_reference(*(a.astype(np.float32) for a in (x, w, b)), stride, padding)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_gradcheck_input_weight_bias(xs, ws, stride, padding, device, rng):
    x, w, b = (_t(rng.standard_normal(s), device) for s in (xs, ws, (ws[0],)))
    assert mg.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)


def test_conv2d_gradcheck_when_only_one_input_needs_grad(device, rng):
    x = _t(rng.standard_normal((2, 2, 5, 5)), device)
    w = _t(rng.standard_normal((3, 2, 3, 3)), device)
    constant_w = _t(w.numpy(), device, requires_grad=False, dtype="float64")
    constant_x = _t(x.numpy(), device, requires_grad=False, dtype="float64")
    assert mg.gradcheck(lambda x: F.conv2d(x, constant_w, padding=1), x)
    assert mg.gradcheck(lambda w: F.conv2d(constant_x, w, stride=2), w)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 2), c=st.integers(1, 3), o=st.integers(1, 3),
    h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
)
def test_conv2d_shapes_and_values_property(device, n, c, o, h, w, kh, kw, sh, sw, ph, pw):
    assume(kh <= h + 2 * ph and kw <= w + 2 * pw)
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, kh, kw))
    out = F.conv2d(_t(x, device), _t(weight, device), stride=(sh, sw), padding=(ph, pw))
    expected = _conv_reference(x.astype(np.float32), weight.astype(np.float32), None, (sh, sw), (ph, pw))
    assert out.shape == ((n, o, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_conv2d_keeps_float32(device, rng):
    x = _t(rng.standard_normal((2, 3, 6, 6)), device)
    w = _t(rng.standard_normal((4, 3, 3, 3)), device)
    b = _t(rng.standard_normal(4), device)
    out = F.conv2d(x, w, b, stride=2, padding=1)
    out.sum().backward()
    assert out.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == b.shape


def test_conv2d_channel_mismatch_names_the_shapes(device):
    x, w = mg.zeros(8, 3, 28, 28, device=device), mg.zeros(16, 1, 3, 3, device=device)
    message = (r"conv2d: input has 3 channels but the weight expects 1 "
               r"\(input \(8, 3, 28, 28\), weight \(16, 1, 3, 3\)\)")
    with pytest.raises(ValueError, match=message):
        F.conv2d(x, w)


def test_conv2d_other_errors(device):
    x, w = mg.zeros(1, 2, 4, 4, device=device), mg.zeros(3, 2, 3, 3, device=device)
    with pytest.raises(ValueError, match=r"input must be 4-D .* got shape \(2, 4, 4\)"):
        F.conv2d(mg.zeros(2, 4, 4, device=device), w)
    with pytest.raises(ValueError, match=r"weight must be 4-D .* got shape \(3, 2, 3\)"):
        F.conv2d(x, mg.zeros(3, 2, 3, device=device))
    with pytest.raises(ValueError, match=r"kernel 7x7 is larger than the padded input 6x6"):
        F.conv2d(x, mg.zeros(3, 2, 7, 7, device=device), padding=1)
    with pytest.raises(ValueError, match=r"bias has shape \(2,\), expected \(3,\)"):
        F.conv2d(x, w, mg.zeros(2, device=device))
    with pytest.raises(ValueError, match=r"stride must be an int >= 1 .* got 0"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match=r"padding must be an int >= 0 .* got \(1, -1\)"):
        F.conv2d(x, w, padding=(1, -1))


# ----------------------------------------------------------------------------
# linear


def test_linear_value_and_gradcheck(device, rng):
    x, w, b = (_t(rng.standard_normal(s), device) for s in ((4, 3), (5, 3), (5,)))
    out = F.linear(x, w, b)
    np.testing.assert_allclose(out.numpy(), x.numpy() @ w.numpy().T + b.numpy(), rtol=1e-5, atol=1e-6)
    assert mg.gradcheck(F.linear, x, w, b)
    assert mg.gradcheck(lambda x, w: F.linear(x, w), _t(rng.standard_normal((2, 4, 3)), device), w)


def test_linear_feature_mismatch(device):
    with pytest.raises(ValueError, match=r"linear: input has 4 features but the weight expects 3 "
                                         r"\(input \(2, 4\), weight \(5, 3\)\)"):
        F.linear(mg.zeros(2, 4, device=device), mg.zeros(5, 3, device=device))


# ----------------------------------------------------------------------------
# activations

ACTIVATIONS = {
    "relu": (F.relu, lambda x: np.maximum(x, 0)),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (F.tanh, np.tanh),
    "gelu": (F.gelu, lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    "elu": (F.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    "elu_alpha": (lambda x: F.elu(x, alpha=0.3), lambda x: np.where(x > 0, x, 0.3 * (np.exp(x) - 1))),
    "softplus": (F.softplus, lambda x: np.log1p(np.exp(x))),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_values_gradcheck_and_dtype(name, device, rng):
    fn, reference = ACTIVATIONS[name]
    array = rng.standard_normal((3, 4)) * 2
    x = _t(array, device)
    out = fn(x)
    np.testing.assert_allclose(out.numpy(), reference(array.astype(np.float32)), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == np.float32
    assert mg.gradcheck(fn, _t(array, device))


def test_softplus_and_elu_are_stable_for_huge_inputs(device):
    x = _t([-1e4, -50.0, 0.0, 50.0, 1e4], device)
    expected = np.logaddexp(0, x.numpy().astype(np.float64))
    np.testing.assert_allclose(F.softplus(x).numpy(), expected, rtol=1e-6)
    elu = F.elu(x)
    elu.sum().backward()
    assert np.isfinite(elu.numpy()).all() and np.isfinite(_host(x.grad)).all()
    np.testing.assert_allclose(elu.numpy(), [-1.0, -1.0, 0.0, 50.0, 1e4])


# ----------------------------------------------------------------------------
# softmax and log_softmax


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_sums_to_one_and_gradchecks(axis, device, rng):
    x = _t(rng.standard_normal((3, 4, 2)), device)
    y = F.softmax(x, axis=axis)
    np.testing.assert_allclose(y.numpy().sum(axis=axis), 1.0, rtol=1e-6)
    assert (y.numpy() > 0).all()
    assert mg.gradcheck(lambda x: F.softmax(x, axis=axis), x)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax_is_log_of_softmax_and_gradchecks(axis, device, rng):
    x = _t(rng.standard_normal((3, 4, 2)), device)
    expected = np.log(F.softmax(x, axis).numpy())
    np.testing.assert_allclose(F.log_softmax(x, axis).numpy(), expected, atol=1e-6)
    assert mg.gradcheck(lambda x: F.log_softmax(x, axis=axis), x)


def test_softmax_and_log_softmax_are_stable_for_huge_logits(device):
    x = _t([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], device)
    y, log_y = F.softmax(x), F.log_softmax(x)
    (y.sum() + log_y.sum()).backward()
    for values in (y.numpy(), log_y.numpy(), _host(x.grad)):
        assert np.isfinite(values).all()
    np.testing.assert_allclose(y.numpy(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    np.testing.assert_allclose(log_y.numpy()[0], [0.0, -1e4, -2e4], rtol=1e-6)
    assert y.dtype == log_y.dtype == x.grad.dtype == np.float32


# ----------------------------------------------------------------------------
# losses


def _manual_cross_entropy(logits, target, axis):
    """Per-element -log softmax(logits)[target], with an explicit loop over positions."""
    moved = np.moveaxis(logits.astype(np.float64), axis, -1)
    out = np.zeros(target.shape)
    for index in np.ndindex(*target.shape):
        row = moved[index]
        out[index] = np.log(np.exp(row - row.max()).sum()) + row.max() - row[target[index]]
    return out


def test_cross_entropy_pixelwise_axis1_matches_manual(device, rng):
    logits = rng.standard_normal((2, 5, 3, 2, 2))  # (N, K, C, H, W)
    target = rng.integers(0, 5, size=(2, 3, 2, 2))
    manual = _manual_cross_entropy(logits, target, axis=1)
    lt, tt = _t(logits, device), mg.tensor(target, device=device)
    np.testing.assert_allclose(F.cross_entropy(lt, tt, axis=1).item(), manual.mean(), rtol=1e-5)
    np.testing.assert_allclose(F.cross_entropy(lt, tt, reduction="sum").item(), manual.sum(), rtol=1e-5)
    none = F.cross_entropy(lt, tt, reduction="none")
    assert none.shape == target.shape
    np.testing.assert_allclose(none.numpy(), manual, rtol=1e-5)
    assert mg.gradcheck(lambda l: F.cross_entropy(l, tt), lt)


def test_cross_entropy_last_axis_and_plain_array_target(device, rng):
    logits = rng.standard_normal((3, 4, 6))  # (N, T, K)
    target = rng.integers(0, 6, size=(3, 4))
    lt = _t(logits, device)
    loss = F.cross_entropy(lt, mg.tensor(target, device=device), axis=-1)
    np.testing.assert_allclose(loss.item(), _manual_cross_entropy(logits, target, -1).mean(), rtol=1e-5)
    loss.backward()
    assert lt.grad.dtype == np.float32
    if device == "cpu":
        assert F.cross_entropy(lt, target, axis=-1).item() == pytest.approx(loss.item())
    else:  # a host array is not copied to the GPU behind the user's back
        with pytest.raises(mg.DeviceError, match="different devices"):
            F.cross_entropy(lt, target, axis=-1)


def test_cross_entropy_errors_name_the_values(device):
    logits = mg.zeros(2, 5, 4, device=device)
    with pytest.raises(ValueError, match=r"target has shape \(2, 5\) but logits \(2, 5, 4\) without "
                                         r"the class axis 1 need \(2, 4\)"):
        F.cross_entropy(logits, mg.tensor(np.zeros((2, 5), dtype=np.int64), device=device))
    bad = np.zeros((2, 4), dtype=np.int64)
    bad[1, 2] = 5  # one past the last class
    with pytest.raises(ValueError, match=r"target holds class 5 but the logits have 5 classes along axis 1; "
                                         r"classes must be in \[0, 4\]"):
        F.cross_entropy(logits, mg.tensor(bad, device=device))
    bad[1, 2] = -1
    with pytest.raises(ValueError, match=r"target holds class -1"):
        F.cross_entropy(logits, mg.tensor(bad, device=device))
    with pytest.raises(TypeError, match=r"integer class indices, got dtype float32"):
        F.cross_entropy(logits, mg.zeros(2, 4, device=device))
    with pytest.raises(ValueError, match=r"axis 3 is out of range for logits of shape \(2, 5, 4\)"):
        F.cross_entropy(logits, mg.tensor(np.zeros((2, 5), dtype=np.int64), device=device), axis=3)
    with pytest.raises(ValueError, match=r"reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.cross_entropy(logits, mg.tensor(np.zeros((2, 4), dtype=np.int64), device=device), reduction="avg")


def test_bce_with_logits_matches_formula_and_is_stable(device, rng):
    x, target = rng.standard_normal((3, 4)) * 3, rng.random((3, 4))
    p = 1 / (1 + np.exp(-x))
    naive = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    loss = F.binary_cross_entropy_with_logits(_t(x, device), _t(target, device), reduction="none")
    np.testing.assert_allclose(loss.numpy(), naive, rtol=1e-5, atol=1e-6)
    confident_and_wrong = _t([100.0, -100.0], device), _t([0.0, 1.0], device)
    huge = F.binary_cross_entropy_with_logits(*confident_and_wrong, reduction="sum")
    assert huge.item() == pytest.approx(200.0)
    assert mg.gradcheck(F.binary_cross_entropy_with_logits, _t(x, device), _t(target, device))


def test_mse_loss_values_and_gradcheck(device, rng):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p, t = _t(pred, device), _t(target, device)
    assert F.mse_loss(p, t).item() == pytest.approx(((pred - target) ** 2).mean(), rel=1e-5)
    assert F.mse_loss(p, t, reduction="sum").item() == pytest.approx(((pred - target) ** 2).sum(), rel=1e-5)
    assert mg.gradcheck(F.mse_loss, p, t)
    with pytest.raises(ValueError, match=r"mse_loss: input has shape \(3, 4\) but target has shape \(4, 3\)"):
        F.mse_loss(p, _t(target.T, device))


# ----------------------------------------------------------------------------
# group_norm


def test_group_norm_normalises_each_group(device, rng):
    x = _t(rng.standard_normal((2, 6, 4, 3)) * 5 + 3, device)
    y = F.group_norm(x, 3, weight=mg.ones(6, device=device), bias=mg.zeros(6, device=device))
    groups = y.numpy().reshape(2, 3, -1)
    np.testing.assert_allclose(groups.mean(axis=2), 0.0, atol=1e-5)
    np.testing.assert_allclose(groups.var(axis=2), 1.0, rtol=1e-3)
    assert y.dtype == np.float32


@pytest.mark.parametrize("shape, groups", [((2, 4, 3, 3), 2), ((2, 6, 5), 3), ((1, 3, 2, 2), 1)])
def test_group_norm_gradcheck_input_weight_bias(shape, groups, device, rng):
    x = _t(rng.standard_normal(shape), device)
    weight, bias = _t(rng.standard_normal(shape[1]), device), _t(rng.standard_normal(shape[1]), device)
    assert mg.gradcheck(lambda x, w, b: F.group_norm(x, groups, w, b), x, weight, bias)
    assert mg.gradcheck(lambda x: F.group_norm(x, groups), x)


def test_group_norm_errors(device):
    message = r"group_norm: 6 channels cannot be split into 4 groups \(input \(2, 6, 3, 3\)\)"
    with pytest.raises(ValueError, match=message):
        F.group_norm(mg.zeros(2, 6, 3, 3, device=device), 4)
    with pytest.raises(ValueError, match=r"group_norm: weight has shape \(3,\), expected \(6,\)"):
        F.group_norm(mg.zeros(2, 6, 3, 3, device=device), 2, weight=mg.ones(3, device=device))


# ----------------------------------------------------------------------------
# pad, upsample_nearest, avg_pool2d, dropout


def test_pad_values_and_gradcheck(device, rng):
    array = rng.standard_normal((2, 3, 3, 4))
    x = _t(array, device)
    out = F.pad(x, (1, 2, 0, 3), value=-1.5)
    expected = np.pad(array.astype(np.float32), ((0, 0), (0, 0), (1, 2), (0, 3)), constant_values=-1.5)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert F.pad(x, 2).shape == (2, 3, 7, 8)
    assert mg.gradcheck(lambda x: F.pad(x, (1, 0, 2, 1)), x)
    with pytest.raises(ValueError, match=r"pad: padding must be .* got \(1, -1, 0, 0\)"):
        F.pad(x, (1, -1, 0, 0))


def test_upsample_nearest_values_and_gradcheck(device, rng):
    array = rng.standard_normal((2, 3, 2, 3))
    x = _t(array, device)
    out = F.upsample_nearest(x, scale=3)
    np.testing.assert_array_equal(out.numpy(), array.astype(np.float32).repeat(3, axis=2).repeat(3, axis=3))
    assert mg.gradcheck(lambda x: F.upsample_nearest(x), x)
    with pytest.raises(ValueError, match=r"scale must be an int >= 1, got 1.5"):
        F.upsample_nearest(x, 1.5)


@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_avg_pool2d_matches_loops_and_gradchecks(kernel, stride, device, rng):
    array = rng.standard_normal((2, 2, 6, 7))
    x = _t(array, device)
    out = F.avg_pool2d(x, kernel, stride)
    kh, kw = _pair(kernel)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    expected = np.zeros(out.shape)
    for y in range(out.shape[2]):
        for xi in range(out.shape[3]):
            window = array[:, :, y * sh : y * sh + kh, xi * sw : xi * sw + kw]
            expected[:, :, y, xi] = window.mean(axis=(2, 3))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert mg.gradcheck(lambda x: F.avg_pool2d(x, kernel, stride), x)


def test_avg_pool2d_kernel_larger_than_input(device):
    with pytest.raises(ValueError, match=r"kernel 5x5 is larger than the input \(1, 1, 4, 4\)"):
        F.avg_pool2d(mg.zeros(1, 1, 4, 4, device=device), 5)


def test_dropout_scales_kept_values_and_masks_the_gradient(device):
    x = mg.ones(200, 100, device=device, requires_grad=True)
    y = F.dropout(x, p=0.25)
    y.sum().backward()
    values = y.numpy()
    assert set(np.unique(values)) == {0.0, np.float32(1 / 0.75)}
    assert abs((values == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(_host(x.grad), values)  # d(x * mask)/dx = mask, and x is all ones
    assert y.dtype == x.grad.dtype == np.float32


def test_dropout_is_seeded_and_off_outside_training(device):
    x = mg.ones(10, 10, device=device)
    mg.manual_seed(3)
    first = F.dropout(x, 0.5).numpy()
    assert 0 < (first == 0).mean() < 1
    mg.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    for p in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"dropout: p must be in \[0, 1\), got {p}"):
            F.dropout(x, p)


FLOAT32_CASES = {
    "linear": lambda x, p: F.linear(x, p, p[0]),
    "group_norm": lambda x, p: F.group_norm(x, 2, p[0], p[1]),
    "pad": lambda x, p: F.pad(x, 1) * p[0, 0],
    "upsample_nearest": lambda x, p: F.upsample_nearest(x) * p[0, 0],
    "avg_pool2d": lambda x, p: F.avg_pool2d(x) * p[0, 0],
    "bce_with_logits": lambda x, p: F.binary_cross_entropy_with_logits(x, x * 0 + p[0, 0]),
    "mse_loss": lambda x, p: F.mse_loss(x, x * 0 + p[0, 0]),
}


@pytest.mark.parametrize("name", FLOAT32_CASES)
def test_float32_stays_float32_forward_and_backward(name, device, rng):
    x = _t(rng.standard_normal((2, 4, 4, 4)), device)
    p = _t(rng.standard_normal((4, 4)), device)  # a parameter: weights, biases, scales
    out = FLOAT32_CASES[name](x, p)
    out.sum().backward()
    assert out.dtype == x.grad.dtype == p.grad.dtype == np.float32

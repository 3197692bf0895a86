"""Numerics at the edges: exact GELU (erf), sigmoid's float32 tail, softplus and the
losses built on it, and the gradients of a ** b at a = 0. Exact values first; PyTorch
(when installed) as a second opinion."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F, nn


def _exact_gelu(x):
    """x Phi(x) from math.erfc in float64, accurate to the last bit in both tails."""
    return np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in np.ravel(x)]).reshape(np.shape(x))


def _exact_sigmoid(x):
    return np.array([1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v)) for v in np.ravel(x)])


# ----------------------------------------------------------------------------
# GELU


def test_exact_gelu_matches_math_erf_to_1_2e_7_relative_in_float64():
    x = np.concatenate([np.linspace(-12, 12, 24001), [-30.0, -8.5, 1e-8, -1e-8, 37.0]])
    out = F.gelu(mg.tensor(x, dtype="float64")).numpy()
    np.testing.assert_allclose(out, _exact_gelu(x), rtol=1.2e-7, atol=0)
    assert F.gelu(mg.tensor([0.0, -40.0], dtype="float64")).numpy().tolist() == [0.0, -0.0]
    erf = np.vectorize(math.erf)(x / math.sqrt(2))  # erf itself is within 1.2e-7
    assert np.all(np.abs(out - x * 0.5 * (1 + erf)) <= 1.2e-7 * 0.5 * np.abs(x))


def test_exact_gelu_in_float32():
    x = np.linspace(-12, 12, 4801).astype(np.float32)
    out = F.gelu(mg.tensor(x)).numpy()
    assert out.dtype == np.float32
    exact = _exact_gelu(x.astype(np.float64))
    core = np.abs(x) <= 3
    np.testing.assert_allclose(out[core], exact[core], rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(out[~core], exact[~core], rtol=3e-5, atol=0)  # x^2 rounds in float32


def test_gelu_modes_differ_by_the_tanh_approximation_only():
    x = mg.tensor(np.linspace(-6, 6, 1201), dtype="float64")
    gap = np.abs(F.gelu(x).numpy() - F.gelu(x, approximate="tanh").numpy())
    assert 4e-4 < gap.max() < 5e-4
    assert repr(nn.GELU()) == "GELU(approximate='none')" and nn.GELU("tanh").approximate == "tanh"
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got True"):
        nn.GELU(approximate=True)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradcheck_both_modes(approximate, device):
    x = mg.tensor([-8.0, -3.0, -1.0, -0.1, 0.0, 0.1, 1.0, 3.0, 8.0], requires_grad=True, device=device)
    assert mg.gradcheck(lambda x: F.gelu(x, approximate=approximate), x)


def test_exact_gelu_gradient_by_hand():
    x = mg.tensor([-2.0, 0.0, 0.5, 3.0], dtype="float64", requires_grad=True)
    F.gelu(x).sum().backward()
    v = x.numpy()
    phi = np.exp(-v * v / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([0.5 * math.erfc(-a / math.sqrt(2)) for a in v])
    np.testing.assert_allclose(x.grad, cdf + v * phi, rtol=2e-7)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    torch = pytest.importorskip("torch")
    x = np.linspace(-10, 10, 2001)
    ours = mg.tensor(x, dtype="float64", requires_grad=True)
    F.gelu(ours, approximate=approximate).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.gelu(theirs, approximate=approximate)
    out.sum().backward()
    # atol: PyTorch's 1 + erf(x / sqrt 2) rounds the far left tail (below 1e-15) to 0; ours keeps it
    np.testing.assert_allclose(F.gelu(mg.tensor(x, dtype="float64"), approximate).numpy(), out.detach().numpy(),
                               rtol=1.2e-7, atol=1e-15)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6, atol=3e-8)  # Phi is within 1.2e-7


# ----------------------------------------------------------------------------
# Sigmoid and softplus tails in float32


def test_float32_sigmoid_keeps_its_tail():
    x = np.linspace(-80, 80, 16001).astype(np.float32)
    t = mg.tensor(x, requires_grad=True)
    y = F.sigmoid(t)
    y.sum().backward()
    exact = _exact_sigmoid(x.astype(np.float64))
    np.testing.assert_allclose(y.numpy(), exact, rtol=1e-6, atol=0)
    np.testing.assert_allclose(t.grad, exact * _exact_sigmoid(-x.astype(np.float64)), rtol=2e-6, atol=0)
    assert y.dtype == t.grad.dtype == np.float32
    # the two values the tanh form got wrong: 5.96e-8 (41% off) and 0
    np.testing.assert_allclose(F.sigmoid(mg.tensor([-17.0, -25.0])).numpy(), [4.1399375e-08, 1.3887944e-11], rtol=1e-6)


def test_sigmoid_never_overflows_and_gradchecks():
    y = F.sigmoid(mg.tensor([-1e4, -100.0, 0.0, 100.0, 1e4])).numpy()
    np.testing.assert_array_equal(y[[0, 2, 3, 4]], [0.0, 0.5, 1.0, 1.0])
    assert y[1] == np.float32(math.exp(-100))  # a float32 subnormal, 3.78e-44
    assert mg.gradcheck(F.sigmoid, mg.tensor([-30.0, -5.0, -0.5, 0.0, 0.5, 5.0, 30.0], requires_grad=True))


def test_float32_softplus_gradient_keeps_its_tail():
    x = np.linspace(-80, 80, 16001).astype(np.float32)
    t = mg.tensor(x, requires_grad=True)
    y = F.softplus(t)
    y.sum().backward()
    exact = np.logaddexp(0, x.astype(np.float64))
    np.testing.assert_allclose(y.numpy(), exact, rtol=1e-6, atol=0)
    np.testing.assert_allclose(t.grad, _exact_sigmoid(x.astype(np.float64)), rtol=2e-6, atol=0)
    assert mg.gradcheck(F.softplus, mg.tensor([-30.0, -5.0, 0.0, 5.0, 30.0], requires_grad=True))


def test_float32_log_softmax_and_bce_keep_their_tails():
    logits = np.array([[0.0, -17.0, -25.0, -80.0]], np.float32)
    t = mg.tensor(logits, requires_grad=True)
    out = F.log_softmax(t, axis=1)
    shifted = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    np.testing.assert_allclose(out.numpy(), shifted, rtol=1e-6, atol=1e-7)  # -4e-8 rounds to 0 in float32
    out[0, 0].backward()  # d/dx_j of log softmax_0 = [j == 0] - softmax_j
    np.testing.assert_allclose(t.grad[0, 1:], -np.exp(shifted[0, 1:]), rtol=1e-6)

    x = mg.tensor([-80.0, -25.0, -17.0, 17.0, 25.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, mg.tensor([0.0, 0.0, 0.0, 0.0, 0.0]), reduction="sum")
    loss.backward()
    exact = _exact_sigmoid(x.numpy().astype(np.float64))
    np.testing.assert_allclose(x.grad, exact, rtol=2e-6)  # d/dx = sigmoid(x) - 0
    np.testing.assert_allclose(loss.item(), np.logaddexp(0, x.numpy().astype(np.float64)).sum(), rtol=1e-6)


# ----------------------------------------------------------------------------
# a ** b at a = 0


def test_pow_gradients_at_zero_by_hand():
    a = mg.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0], dtype="float64", requires_grad=True)
    b = mg.tensor([2.0, 0.0, 0.5, 1.0, -1.0, 3.0, 2.0], dtype="float64", requires_grad=True)
    with np.errstate(divide="ignore"):  # 0 ** -1 = inf, the true value
        y = a**b
    np.testing.assert_array_equal(y.numpy(), [0.0, 1.0, 0.0, 0.0, np.inf, 8.0, 4.0])
    y.backward(np.ones(7))
    # d/da = b a^(b-1), 0 where b = 0; the infinities are the true one-sided limits
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, np.inf, 1.0, -np.inf, 12.0, -4.0])
    # d/db = a^b log a, 0 where a = 0 and b >= 0 (was NaN); log of a negative base is NaN
    np.testing.assert_array_equal(b.grad[:5], [0.0, 0.0, 0.0, 0.0, -np.inf])
    assert b.grad[5] == pytest.approx(8 * math.log(2), rel=1e-15) and np.isnan(b.grad[6])


def test_pow_with_constant_exponents_at_zero():
    x = mg.tensor([0.0, 1.5], requires_grad=True)
    for exponent, expected in ((2, [0.0, 3.0]), (0, [0.0, 0.0]), (1, [1.0, 1.0]), (3.0, [0.0, 6.75])):
        x.grad = None
        (x**exponent).sum().backward()
        np.testing.assert_array_equal(x.grad, np.array(expected, np.float32), err_msg=f"exponent {exponent}")
    b = mg.tensor([0.0, 2.0, 3.0], requires_grad=True)
    (0.0**b).sum().backward()  # a constant 0 base: 0^b does not move with b >= 0
    np.testing.assert_array_equal(b.grad, [0.0, 0.0, 0.0])


def test_pow_gradcheck_away_from_zero(device):
    a = mg.tensor([[0.5, 1.5, 3.0]], requires_grad=True, device=device)
    b = mg.tensor([[-1.5], [0.0], [2.5]], requires_grad=True, device=device)
    assert mg.gradcheck(lambda a, b: a**b, a, b)


def test_pow_at_zero_matches_torch():
    torch = pytest.importorskip("torch")
    values = ([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0], [2.0, 0.0, 0.5, 1.0, -1.0, 3.0, 2.0, -0.5])
    a, b = (mg.tensor(v, dtype="float64", requires_grad=True) for v in values)
    ta, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values)
    with np.errstate(divide="ignore"):
        (a**b).sum().backward()
    (ta**tb).sum().backward()
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())

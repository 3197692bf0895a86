"""Type promotion, decided in one place (autograd.float_dtype) as in PyTorch: scalars,
constants and integer or boolean tensors never widen a float tensor; two float dtypes
are an error at the forward op, never a dtype mismatch later in backward."""

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen.engine.autograd import DtypeError

BINARY = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Pow": lambda a, b: a**b,
    "MatMul": lambda a, b: a @ b,
    "Where": lambda a, b: mg.where(mg.tensor([True, False, True], device=a.device), a, b),
    "Concatenate": lambda a, b: mg.cat([a, b]),
}


@pytest.mark.parametrize("op", BINARY)
def test_float32_with_float64_is_an_error_at_the_forward_op_naming_both(op, device):
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    b = mg.tensor([1.0, 2.0, 3.0], dtype="float64", device=device)
    with pytest.raises(TypeError, match=rf"{op}: cannot mix float32 \(input 0\) and float64 \(input 1\); "
                                        r"convert one first, e.g. x.astype\('float32'\)"):
        BINARY[op](a, b)
    with pytest.raises(DtypeError, match=rf"{op}: cannot mix float64 \(input 0\) and float32 \(input 1\).*"
                                         r"x.astype\('float64'\)"):
        BINARY[op](b, a)
    np.testing.assert_array_equal(BINARY[op](a, b.astype("float32")).numpy(), BINARY[op](a, a).numpy())


def test_other_float_mixes_are_errors_too():
    with pytest.raises(DtypeError, match="Add: cannot mix float16 .* and float32"):
        mg.tensor([1.0], dtype="float16") + mg.tensor([1.0])
    with pytest.raises(DtypeError, match="MatMul: cannot mix float32 .* and float64"):
        F.linear(mg.ones(2, 3), mg.ones(4, 3, dtype="float64"))
    with pytest.raises(DtypeError, match="Sub: cannot mix float32 .* and float64"):
        F.mse_loss(mg.ones(2), mg.ones(2, dtype="float64"))


# Each op with a float32 a = [1, 2, 3] and an int64 i = [2, 3, 4]: the value, and d(sum)/da by hand.
WITH_INTEGERS = {
    "Add": (lambda a, i: a + i, [3, 5, 7], [1, 1, 1]),
    "Sub": (lambda a, i: i - a, [1, 1, 1], [-1, -1, -1]),
    "Mul": (lambda a, i: a * i, [2, 6, 12], [2, 3, 4]),
    "Div": (lambda a, i: a / i, [0.5, 2 / 3, 0.75], [0.5, 1 / 3, 0.25]),
    "Pow": (lambda a, i: a**i, [1, 8, 81], [2, 12, 108]),  # i a^(i-1)
    "MatMul": (lambda a, i: a @ i, 20, [2, 3, 4]),
    "Where": (lambda a, i: mg.where(mg.tensor([True, False, True], device=a.device), a, i), [1, 3, 3], [1, 0, 1]),
    "Concatenate": (lambda a, i: mg.cat([a, i]), [1, 2, 3, 2, 3, 4], [1, 1, 1]),
    "GetItem": (lambda a, i: a[i - 2], [1, 2, 3], [1, 1, 1]),
    "GetItem_repeated": (lambda a, i: a[mg.tensor([2, 0, 2], device=a.device)], [3, 1, 3], [1, 0, 2]),
}


@pytest.mark.parametrize("op", WITH_INTEGERS)
def test_integer_tensors_are_cast_to_the_float_tensor_and_its_gradient_flows(op, device):
    fn, value, grad = WITH_INTEGERS[op]
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    i = mg.tensor([2, 3, 4], device=device)
    out = fn(a, i)
    assert out.dtype == np.float32 and out.requires_grad
    np.testing.assert_allclose(out.numpy(), value, rtol=1e-7)
    out.sum().backward()
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(mg.Tensor(a.grad).numpy(), grad, rtol=1e-7)
    assert i.dtype == np.int64 and i.grad is None


def test_bool_and_narrow_integer_tensors_never_widen_float32():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    for other in (mg.tensor([True, False]), mg.tensor(np.array([3, 4], np.int32)),
                  mg.tensor(np.array([3, 4], np.uint8))):
        out = a * other
        assert out.dtype == np.float32
    (a * mg.tensor([True, False])).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0])


@pytest.mark.parametrize("scalar", [2, 2.5, True, np.float64(2.5), np.int64(2), np.float16(2.5), np.array(2.5)],
                         ids=["int", "float", "bool", "np.float64", "np.int64", "np.float16", "0-d float64 array"])
def test_scalars_never_widen_float32(scalar, device):
    a = mg.tensor([1.0, 2.0], requires_grad=True, device=device)
    if isinstance(scalar, np.ndarray) and device != "cpu":  # a 0-d NumPy array is a host array, not a scalar
        with pytest.raises(mg.DeviceError, match="cpu"):
            a + scalar
        return
    outs = [a + scalar, scalar + a, a - scalar, scalar - a, a * scalar, scalar * a, a / scalar, a**scalar,
            mg.where(mg.tensor([True, False], device=device), a, scalar)]
    assert all(out.dtype == np.float32 for out in outs)
    (a * scalar).sum().backward()
    assert a.grad.dtype == np.float32
    np.testing.assert_array_equal(mg.Tensor(a.grad).numpy(), np.full(2, float(scalar), np.float32))


def test_float64_with_float64_and_its_scalars_stays_float64():
    a = mg.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    b = mg.tensor([3.0, 5.0], dtype="float64")
    out = (a * b + 0.1) / np.float32(2) + mg.tensor([1, 2])
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad, [1.5, 2.5])
    np.testing.assert_array_equal(out.numpy(), (np.array([3.0, 10.0]) + 0.1) / 2 + [1, 2])


def test_integer_tensors_stay_integer_without_a_graph():
    i, j = mg.tensor([1, 2, 3]), mg.tensor([4, 5, 6])
    for out, expected in ((i + j, [5, 7, 9]), (i * j, [4, 10, 18]), (j - i, [3, 3, 3]), (i * 2, [2, 4, 6]),
                          (i @ j, 32), (mg.cat([i, j]), [1, 2, 3, 4, 5, 6]), (j[i - 1], [4, 5, 6])):
        assert out.dtype == np.int64 and not out.requires_grad and out.creator is None
        np.testing.assert_array_equal(out.numpy(), expected)
    assert (i * 0.5).dtype == np.float32  # a float scalar makes an integer tensor float32, as in PyTorch
    np.testing.assert_array_equal((i * 0.5).numpy(), [0.5, 1.0, 1.5])


def test_comparisons_give_booleans_for_any_mix():
    a = mg.tensor([1.0, 2.0, 3.0])
    for other in (mg.tensor([2, 2, 2]), mg.tensor([2.0, 2.0, 2.0], dtype="float64"), 2, np.float64(2.0)):
        for result, expected in ((a < other, [True, False, False]), (a >= other, [False, True, True])):
            assert result.dtype == np.bool_
            np.testing.assert_array_equal(result.numpy(), expected)


def test_gradcheck_names_the_tensor_it_was_not_given():
    outside = mg.tensor([1.0, 2.0])  # float32, closed over: gradcheck cannot switch it to float64
    w = mg.tensor([0.5, -1.0], requires_grad=True)
    with pytest.raises(DtypeError, match="Mul: cannot mix float64 .* pass every float tensor that fn uses"):
        mg.gradcheck(lambda w: w * outside, w)
    assert w.dtype == np.float32  # restored
    assert mg.gradcheck(lambda w, outside: w * outside, w, outside)

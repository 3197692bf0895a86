"""Every elementary op: forward values, gradcheck (with broadcasting), properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minigen as mg


def _t(array, device, positive=False):
    array = np.abs(array) + 0.5 if positive else array
    return mg.tensor(array, requires_grad=True, device=device)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "where": lambda a, b: mg.where(a > b, a, b),
}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("shapes", [((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((1,), (2, 1, 3))])
def test_binary_gradcheck_with_broadcasting(name, shapes, device, rng):
    positive = name in ("div", "pow")
    a = _t(rng.standard_normal(shapes[0]), device, positive)
    b = _t(rng.standard_normal(shapes[1]), device, positive)
    assert mg.gradcheck(BINARY[name], a, b)


UNARY = {
    "neg": (lambda x: -x, False),
    "exp": (lambda x: x.exp(), False),
    "log": (lambda x: x.log(), True),
    "sqrt": (lambda x: x.sqrt(), True),
    "tanh": (lambda x: x.tanh(), False),
    "sigmoid": (lambda x: x.sigmoid(), False),
    "relu": (lambda x: x.relu(), False),
    "abs": (lambda x: x.abs(), False),
    "clip": (lambda x: x.clip(-0.5, 0.7), False),
    "pow_const": (lambda x: x**3, False),
    "rpow": (lambda x: 2.0**x, False),
    "reshape": (lambda x: x.reshape(4, 3), False),
    "transpose": (lambda x: x.transpose(1, 0), False),
    "T": (lambda x: x.T, False),
    "broadcast_to": (lambda x: x.broadcast_to((2, 3, 4)), False),
    "sum_all": (lambda x: x.sum(), False),
    "sum_axis_keepdims": (lambda x: x.sum(axis=1, keepdims=True), False),
    "mean_axes": (lambda x: x.mean(axis=(0, 1)), False),
    "mean_neg_axis": (lambda x: x.mean(axis=-1), False),
    "max_axis": (lambda x: x.max(axis=0), False),
    "max_keepdims": (lambda x: x.max(axis=1, keepdims=True), False),
    "min_all": (lambda x: x.min(), False),
    "slice": (lambda x: x[1:, ::2], False),
    "int_index_repeated": (lambda x: x[[0, 2, 0, 0]], False),
    "pair_index": (lambda x: x[[0, 1, 1], [3, 3, 0]], False),
    "bool_mask": (lambda x: x[x > 0], False),
    "stack": (lambda x: mg.stack([x, x * 2], axis=1), False),
    "cat": (lambda x: mg.cat([x, x[:1]], axis=0), False),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary_gradcheck(name, device, rng):
    fn, positive = UNARY[name]
    x = rng.standard_normal((3, 4))
    if name in ("relu", "abs", "clip"):  # keep away from the kinks
        x = np.where(np.abs(x) < 0.05, 0.3, x)
        x = np.where(np.abs(np.abs(x) - 0.6) < 0.15, 0.3, x)
    assert mg.gradcheck(fn, _t(x, device, positive))


@pytest.mark.parametrize("shapes", [((2, 3), (3, 4)), ((3,), (3, 4)), ((2, 3), (3,)),
                                    ((5, 2, 3), (3, 4)), ((1, 2, 3), (4, 3, 2)), ((4,), (4,))])
def test_matmul_gradcheck(shapes, device, rng):
    a = _t(rng.standard_normal(shapes[0]), device)
    b = _t(rng.standard_normal(shapes[1]), device)
    np.testing.assert_allclose((a @ b).numpy(), a.numpy() @ b.numpy(), rtol=1e-5)
    assert mg.gradcheck(lambda a, b: a @ b, a, b)


# Batched matmul: batch axes broadcast in both operands, 1-D operands as NumPy treats them.
BATCHED_MATMUL = [((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)), ((4,), (2, 4, 3)),
                  ((2, 3, 4), (4,)), ((2, 1, 3), (3,)), ((3, 1, 2, 4), (1, 2, 4, 3))]


@pytest.mark.parametrize("shapes", BATCHED_MATMUL)
def test_batched_matmul_broadcasts_like_numpy_and_gradchecks(shapes, device, rng):
    a = _t(rng.standard_normal(shapes[0]), device)
    b = _t(rng.standard_normal(shapes[1]), device)
    out = a @ b
    assert out.shape == np.matmul(a.numpy(), b.numpy()).shape
    np.testing.assert_allclose(out.numpy(), a.numpy() @ b.numpy(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    assert mg.gradcheck(lambda a, b: a @ b, a, b)


def test_a_matrix_shared_by_a_batch_gets_the_sum_of_its_per_sample_gradients(device, rng):
    a = _t(rng.standard_normal((3, 4)), device)  # broadcast over the batch of 2
    b = _t(rng.standard_normal((2, 4, 5)), device)
    (a @ b).sum().backward()
    expected = sum(np.ones((3, 5)) @ b.numpy()[i].T for i in range(2))
    np.testing.assert_allclose(mg.backend.to_device(a.grad, "cpu"), expected, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shapes=mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=3))
def test_matmul_gradchecks_for_any_shapes_numpy_accepts(shapes):
    rng = np.random.default_rng(0)
    a, b = (mg.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes.input_shapes)
    assert (a @ b).shape == shapes.result_shape
    assert mg.gradcheck(lambda a, b: a @ b, a, b)


def test_gradcheck_fast_mode(device, rng):
    a = _t(rng.standard_normal((4, 5)), device)
    b = _t(rng.standard_normal((5,)), device)
    assert mg.gradcheck(lambda a, b: (a * b).tanh() @ b, a, b, fast=True)


def test_max_ties_go_to_the_first_maximum():
    x = mg.tensor([[1.0, 3.0, 3.0], [5.0, 5.0, 2.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0, 0], [1, 0, 0]])


def test_repeated_indices_add_up():
    x = mg.tensor([10.0, 20.0, 30.0], requires_grad=True)
    index = mg.tensor([2, 0, 2, 2])
    x[index].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 3.0])


def test_comparisons_give_plain_masks():
    x = mg.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    mask = x > 0
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), [False, False, True])


def test_sigmoid_does_not_overflow():
    y = mg.tensor([-1000.0, 0.0, 1000.0]).sigmoid().numpy()
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0])


def test_axis_out_of_range_is_named():
    with pytest.raises(ValueError, match="axis 2 is out of range for a tensor with 2 dimensions"):
        mg.zeros(2, 3).sum(axis=2)


# ----------------------------------------------------------------------------
# Property tests: broadcasting gradients are the sums the shapes imply


@settings(max_examples=40, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=3),
       op=st.sampled_from(["add", "mul", "sub"]))
def test_broadcast_gradients_match_numpy(shapes, op):
    rng = np.random.default_rng(0)
    sa, sb = shapes.input_shapes
    a_np, b_np = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = mg.tensor(a_np, requires_grad=True), mg.tensor(b_np, requires_grad=True)
    out = BINARY[op](a, b)
    assert out.shape == shapes.result_shape
    out.sum().backward()
    ones = np.ones(shapes.result_shape)
    expected_a = {"add": ones, "sub": ones, "mul": ones * b_np}[op]
    expected_b = {"add": ones, "sub": -ones, "mul": ones * a_np}[op]

    def summed(g, shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
        return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)

    assert a.grad.shape == sa and b.grad.shape == sb
    np.testing.assert_allclose(a.grad, summed(expected_a, sa), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.grad, summed(expected_b, sb), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       data=st.data())
def test_reductions_keep_documented_shapes(shape, data):
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    keepdims = data.draw(st.booleans())
    x_np = np.random.default_rng(1).standard_normal(shape)
    x = mg.tensor(x_np, requires_grad=True)
    for reduce, ref in ((x.sum, x_np.sum), (x.mean, x_np.mean), (x.max, x_np.max)):
        out = reduce(axis=axis, keepdims=keepdims)
        expected = ref(axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(expected)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5)
        out.sum().backward()
        assert x.grad.shape == x.shape
        x.grad = None


# ----------------------------------------------------------------------------
# Casts and the creation helpers that keep model code at the Tensor level


def test_astype_between_floats_passes_the_gradient_back_in_the_input_dtype(device, rng):
    x = mg.tensor(rng.standard_normal((2, 3)), requires_grad=True, device=device)
    y = x.astype("float64")
    assert y.dtype == np.float64 and y.device == device
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(mg.tensor(x.grad).numpy(), 2 * x.numpy(), rtol=1e-6)


def test_astype_to_integers_rounds_towards_zero_and_records_no_graph(device):
    x = mg.tensor([1.7, -2.5, 3.0], requires_grad=True, device=device)
    y = x.astype("int64")
    assert y.dtype == np.int64 and not y.requires_grad
    assert y.numpy().tolist() == [1, -2, 3]
    assert x.astype("float32") is x  # no copy, no node for a cast to the same dtype


def test_full_and_arange_follow_numpy_with_the_house_dtypes(device):
    assert mg.full((2, 3), 7, device=device).dtype == np.int64
    filled = mg.full(4, 0.5, device=device)
    assert filled.dtype == np.float32 and filled.device == device and filled.numpy().tolist() == [0.5] * 4
    assert mg.full((2,), 1, dtype="float32").dtype == np.float32
    assert mg.arange(5, device=device).numpy().tolist() == [0, 1, 2, 3, 4]
    assert mg.arange(2, 8, 3).numpy().tolist() == [2, 5]
    halves = mg.arange(0, 1, 0.25)
    assert halves.dtype == np.float32 and halves.numpy().tolist() == [0, 0.25, 0.5, 0.75]

"""Graded checks of chapter 2: autograd from scratch."""

import numpy as np
import pytest

import minigen as mg
from minigen.engine import autograd as reference


@pytest.mark.task2_1
def test_unbroadcast_by_hand(graded):
    g = np.ones((2, 3, 4))
    np.testing.assert_array_equal(graded.unbroadcast(g, (3, 1)), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(graded.unbroadcast(g, (1, 4)), np.full((1, 4), 6.0))
    assert graded.unbroadcast(g, ()) == 24.0


@pytest.mark.task2_1
def test_unbroadcast_on_random_broadcasts(graded):
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(int(n) for n in rng.integers(1, 4, size=rng.integers(1, 4)))
        small = tuple(1 if rng.random() < 0.5 else n for n in shape[int(rng.integers(0, len(shape))):])
        if small == shape:
            small = (1,) + shape[1:]
        grad = rng.standard_normal(shape)
        out = graded.unbroadcast(grad, small)
        assert tuple(out.shape) == small, f"unbroadcast to {small} from {shape} gave shape {out.shape}"
        np.testing.assert_allclose(out, reference.unbroadcast(grad, small), rtol=1e-12)


@pytest.mark.task2_1
def test_unbroadcast_keeps_float32_and_sums_middle_axes(graded, unchanged):
    grad = np.random.default_rng(4).standard_normal((5, 2, 3, 4)).astype(np.float32)
    for shape in [(2, 1, 4), (1, 3, 1), (5, 1, 3, 1), (3, 1), (2, 3, 4), (1, 1, 1, 1), ()]:
        with unchanged(grad):
            out = graded.unbroadcast(grad, shape)
        assert tuple(out.shape) == shape, f"unbroadcast to {shape} from {grad.shape} gave shape {out.shape}"
        assert out.dtype == np.float32, f"a float32 gradient came back {out.dtype} (unbroadcast to {shape})"
        np.testing.assert_allclose(out, reference.unbroadcast(grad, shape), rtol=1e-5, atol=1e-5)


def numeric_gradients(f, arrays, eps=1e-6):
    """Central differences of the scalar f(*arrays) for every element of every array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for k in np.ndindex(a.shape):
            saved = a[k]
            a[k] = saved + eps
            plus = f(*arrays)
            a[k] = saved - eps
            minus = f(*arrays)
            a[k] = saved
            g[k] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.task2_2
def test_mul_backward_matches_finite_differences(graded, unchanged):
    rng = np.random.default_rng(1)
    a, b, w = rng.standard_normal((3, 1)), rng.standard_normal((1, 4)), rng.standard_normal((3, 4))
    with unchanged(w, a, b):
        result = graded.mul_backward(w, a, b)
    assert type(result) is tuple and len(result) == 2, \
        f"mul_backward must return a tuple (ga, gb), one entry per input; got {type(result).__name__}"
    ga, gb = result
    expected = numeric_gradients(lambda a, b: float((w * a * b).sum()), [a, b])
    np.testing.assert_allclose(reference.unbroadcast(ga, a.shape), expected[0], atol=1e-6)
    np.testing.assert_allclose(reference.unbroadcast(gb, b.shape), expected[1], atol=1e-6)


@pytest.mark.task2_2
def test_mul_backward_skips_unneeded_gradients(graded):
    a, b, grad = np.array([2.0, 3.0]), np.array([5.0, 7.0]), np.array([1.0, 10.0])
    ga, gb = graded.mul_backward(grad, a, b, (True, False))
    np.testing.assert_array_equal(ga, [5.0, 70.0])
    assert gb is None
    ga, gb = graded.mul_backward(grad, a, b, (False, True))
    assert ga is None
    np.testing.assert_array_equal(gb, [2.0, 30.0])


@pytest.mark.task2_3
@pytest.mark.parametrize("shape_a, shape_b", [((3, 3), (3, 3)), ((2, 3), (3, 4)), ((2, 3, 4), (4, 5)),
                                              ((2, 3, 4), (2, 4, 5)), ((3, 4), (2, 4, 2)),
                                              ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_backward_matches_finite_differences(graded, unchanged, shape_a, shape_b):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    w = rng.standard_normal((a @ b).shape)
    with unchanged(w, a, b):
        result = graded.matmul_backward(w, a, b)
    assert type(result) is tuple and len(result) == 2, "matmul_backward must return a tuple (ga, gb)"
    ga, gb = result
    expected = numeric_gradients(lambda a, b: float((w * (a @ b)).sum()), [a, b])
    np.testing.assert_allclose(reference.unbroadcast(ga, a.shape), expected[0], atol=1e-6)
    np.testing.assert_allclose(reference.unbroadcast(gb, b.shape), expected[1], atol=1e-6)
    assert graded.matmul_backward(w, a, b, (True, False))[1] is None


def diamond():
    """x -> a -> (b, c) -> d -> loss: a is used twice."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    a = x * 2
    b, c = a + 1, a * 3
    d = b * c
    return d.sum(), {"a": a, "b": b, "c": c, "d": d}


def check_order(order, root_fn):
    reachable, todo = {id(root_fn): root_fn}, [root_fn]
    while todo:
        for x in todo.pop().inputs:
            if x.creator is not None and id(x.creator) not in reachable:
                reachable[id(x.creator)] = x.creator
                todo.append(x.creator)
    assert len(order) == len({id(fn) for fn in order}), "a function appears twice"
    assert {id(fn) for fn in order} == set(reachable), "not every function of the graph, or more"
    position = {id(fn): k for k, fn in enumerate(order)}
    for fn in order:
        for x in fn.inputs:
            if x.creator is not None:
                assert position[id(x.creator)] > position[id(fn)], \
                    f"{x.creator.name} comes before {fn.name}, which uses its output"


@pytest.mark.task2_4
def test_backward_order_of_a_diamond(graded):
    loss, nodes = diamond()
    order = graded.backward_order(loss.creator)
    check_order(order, loss.creator)
    assert order[0] is loss.creator and order[-1] is nodes["a"].creator


@pytest.mark.task2_4
def test_backward_order_of_random_graphs_and_a_deep_chain(graded):
    rng = np.random.default_rng(3)
    for _ in range(5):
        nodes = [mg.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(2)]
        for _ in range(15):
            i, j = rng.integers(0, len(nodes), size=2)
            nodes.append(nodes[i] * nodes[j] if rng.random() < 0.5 else nodes[i] + nodes[j])
        loss = (nodes[-1] + nodes[-2] + nodes[-3]).sum()
        check_order(graded.backward_order(loss.creator), loss.creator)
    x = mg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(3000):  # deeper than Python's recursion limit
        y = y + 1
    check_order(graded.backward_order(y.creator), y.creator)


@pytest.mark.task2_5
def test_central_difference_of_a_cubic(graded):
    values = np.array([0.5, -1.0, 2.0])
    calls = []

    def evaluate():
        calls.append(values.copy())
        return float((values**3).sum())

    for k in range(3):
        calls.clear()
        derivative = graded.central_difference(evaluate, values, k, 1e-5)
        assert derivative == pytest.approx(3 * values[k] ** 2, abs=1e-7)
        assert len(calls) == 2, "two evaluations per element"
    np.testing.assert_array_equal(values, [0.5, -1.0, 2.0])  # restored exactly


@pytest.mark.task2_5
def test_central_difference_is_second_order(graded):
    values = np.array([0.3])
    evaluate = lambda: float(np.exp(values[0]))
    # A one-sided difference has error ~ eps/2 * f'' = 7e-5 here; the central one ~ eps^2/6 * f''' = 2e-9.
    assert graded.central_difference(evaluate, values, 0, 1e-4) == pytest.approx(np.exp(0.3), abs=1e-8)


@pytest.mark.task2_5
def test_central_difference_at_zero(graded):
    # gradcheck meets x = 0 often (ReLU inputs, zero-initialised biases): the step must not vanish there.
    values = np.array([0.0, 1.5])
    evaluate = lambda: float(np.sin(values[0]) + values[1] ** 2)
    assert graded.central_difference(evaluate, values, 0, 1e-5) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_array_equal(values, [0.0, 1.5])


# ----------------------------------------------------------------------------
# Each engine task where the engine runs it: patched in, one training step's gradients


def gradients_of_a_step(seed: int = 0) -> list:
    """The float32 gradients of one loss of a small network: a batched matmul (4, 3, 5) @ (5, 6),
    a scale broadcast along the middle axis (1, 3, 1), a bias broadcast over the batch, products."""
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal((4, 3, 5)).astype(np.float32))
    w = mg.tensor(rng.standard_normal((5, 6)).astype(np.float32), requires_grad=True)
    scale = mg.tensor(rng.standard_normal((1, 3, 1)).astype(np.float32), requires_grad=True)
    bias = mg.tensor(rng.standard_normal(6).astype(np.float32), requires_grad=True)
    h = (x @ w) * scale + bias
    (h * h * scale).mean().backward()
    return [w.grad, scale.grad, bias.grad]


def assert_the_engine_trains_the_same(monkeypatch, module, name, function):
    expected = gradients_of_a_step()
    monkeypatch.setattr(module, name, function)
    for got, right, what in zip(gradients_of_a_step(), expected, ("weight", "scale", "bias")):
        assert got is not None, f"no gradient reached the {what} with your {name} in the engine"
        assert got.dtype == np.float32 and got.shape == right.shape, \
            f"the {what}'s gradient came back {got.dtype} {got.shape}, expected float32 {right.shape}"
        np.testing.assert_allclose(got, right, rtol=1e-5, atol=1e-6, err_msg=f"the {what}'s gradient")


@pytest.mark.task2_1
def test_the_engine_trains_with_your_unbroadcast(graded, monkeypatch):
    assert_the_engine_trains_the_same(monkeypatch, reference, "unbroadcast", graded.unbroadcast)


@pytest.mark.task2_2
def test_the_engine_trains_with_your_mul_backward(graded, monkeypatch):
    from minigen.engine import ops
    assert_the_engine_trains_the_same(monkeypatch, ops, "mul_backward", graded.mul_backward)


@pytest.mark.task2_3
def test_the_engine_trains_with_your_matmul_backward(graded, monkeypatch):
    from minigen.engine import ops
    assert_the_engine_trains_the_same(monkeypatch, ops, "matmul_backward", graded.matmul_backward)


@pytest.mark.task2_4
def test_the_engine_trains_with_your_backward_order(graded, monkeypatch):
    assert_the_engine_trains_the_same(monkeypatch, reference, "backward_order", graded.backward_order)


@pytest.mark.task2_5
def test_gradcheck_with_your_central_difference_accepts_right_and_rejects_wrong_gradients(graded, monkeypatch):
    from minigen.engine import gradcheck as checks
    monkeypatch.setattr(checks, "central_difference", graded.central_difference)
    rng = np.random.default_rng(5)
    a = mg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = mg.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    assert checks.gradcheck(lambda a, b: ((a @ b) * (a @ b)).sum(), a, b)

    class Doubled(mg.Function):  # a wrong backward: twice the true gradient
        def forward(self, x):
            return x * x

        def backward(self, grad):
            return 4 * self.inputs[0].data * grad

    with pytest.raises(checks.GradcheckError):
        checks.gradcheck(lambda a: Doubled()(a).sum(), a)

"""The engine: backward order, accumulation, graph lifetime, checks and errors."""

import gc
import sys
import types
import weakref

import numpy as np
import pytest

import minigen as mg
from minigen.engine import backend
from minigen.engine.autograd import Function, unbroadcast


def test_backward_values(device):
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    y = (x * x * 3 + x / 2).sum()
    y.backward()
    np.testing.assert_allclose(mg.tensor(x.grad).numpy(), 6 * np.array([1, 2, 3]) + 0.5)


def test_backward_on_a_leaf_gives_ones():
    x = mg.tensor(2.5, requires_grad=True)
    x.backward()
    assert x.grad == 1.0


def test_gradients_accumulate_until_cleared():
    x = mg.tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_diamond_graph_waits_for_both_branches():
    x = mg.tensor(1.5, requires_grad=True)
    y = x * 2
    z = (y * 3) + (y * y)  # dz/dx = 2 * (3 + 2y) = 6 + 8x
    z.backward()
    assert x.grad == pytest.approx(6 + 8 * 1.5)


def test_reused_input_accumulates():
    x = mg.tensor([3.0], requires_grad=True)
    (x * x * x).sum().backward()
    assert x.grad[0] == pytest.approx(27.0)


def test_long_chain_has_no_recursion_limit():
    x = mg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0 + 0.0
    assert 10_000 * 2 > sys.getrecursionlimit()
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_no_grad_records_nothing():
    x = mg.tensor([1.0], requires_grad=True)
    with mg.no_grad():
        y = x * 2
    assert y.creator is None and not y.requires_grad
    assert mg.is_grad_enabled()


def test_graph_is_freed_after_backward():
    x = mg.tensor(np.ones(4), requires_grad=True)
    y = x * 2
    loss = (y * y).sum()
    fn = weakref.ref(y.creator)
    del y
    loss.backward()
    gc.collect()
    assert fn() is None, "the intermediate's function outlived backward"
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = mg.tensor([2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad[0] == pytest.approx(8.0)


def test_training_loop_does_not_grow_the_graph():
    """200 steps of a tiny regression: no step's graph survives it."""
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((16, 3)))
    target = mg.tensor(rng.standard_normal((16, 1)))
    w = mg.tensor(rng.standard_normal((3, 1)), requires_grad=True)
    alive = []
    for _ in range(200):
        loss = ((x @ w - target) ** 2).mean()
        alive.append(weakref.ref(loss.creator))
        w.grad = None
        loss.backward()
        w.data -= 0.1 * w.grad
    del loss
    gc.collect()
    assert sum(ref() is not None for ref in alive) == 0


def test_backward_needs_grad_for_non_scalar():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2,\)"):
        (x * 2).backward()
    (x * 2).backward(grad=np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_backward_without_requires_grad_says_why():
    with pytest.raises(RuntimeError, match="requires_grad=True"):
        (mg.tensor([1.0]) * 2).sum().backward()


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        mg.tensor([1, 2], requires_grad=True)


class _WrongDtype(Function):
    def forward(self, a):
        return a * 2

    def backward(self, grad):
        return grad.astype(np.float64)


class _WrongShape(Function):
    def forward(self, a):
        return a * 2

    def backward(self, grad):
        return grad[:1]


@pytest.mark.parametrize(
    "op, message",
    [(_WrongDtype, r"_WrongDtype.backward returned dtype float64 for an input of dtype float32"),
     (_WrongShape, r"_WrongShape.backward returned shape \(1,\) for an input of shape \(3,\)")],
)
def test_gradient_type_check_names_the_op(op, message):
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(TypeError, match=message):
        op()(x).sum().backward()


def test_float32_is_kept_through_scalars_and_constants():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (2 * x + 1.5) / 3 - x**2 + np.float64(2.0) * x + 2.0**x
    assert x.dtype == np.float32 and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_unbroadcast_sums_to_shape():
    g = np.ones((2, 3, 4))
    assert unbroadcast(g, (3, 1)).shape == (3, 1)
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(unbroadcast(g, ()), 24.0)


def test_manual_seed_repeats_random_numbers():
    mg.manual_seed(7)
    a = mg.randn(3, 2).numpy()
    mg.manual_seed(7)
    np.testing.assert_array_equal(a, mg.randn(3, 2).numpy())
    assert not np.array_equal(a, mg.randn(3, 2).numpy())


def test_tensor_conversions(device):
    x = mg.tensor([[1.0, 2.0]], device=device)
    assert x.device == device and x.shape == (1, 2) and x.ndim == 2
    assert x.to(device) is x
    assert isinstance(x.numpy(), np.ndarray)
    assert x[0, 1].item() == 2.0
    with pytest.raises(ValueError, match=r"one element, got shape \(1, 2\)"):
        x.item()
    assert x.detach().creator is None


# ----------------------------------------------------------------------------
# Devices and their errors (the GPU itself is tested by the same bodies above)


def test_missing_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(mg.DeviceError, match=r"pip install 'minigen\[gpu\]'"):
        mg.zeros(2, device="cuda")
    assert not mg.cuda_available()


def test_cupy_without_gpu_says_so(monkeypatch):
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 0)))
    monkeypatch.setattr(backend, "_cupy", fake)
    with pytest.raises(mg.DeviceError, match="found no CUDA GPU"):
        mg.tensor([1.0], device="cuda")


def test_unknown_device_is_rejected():
    with pytest.raises(mg.DeviceError, match="unknown device 'tpu'"):
        mg.zeros(1, device="tpu")


def test_mixing_devices_names_both(monkeypatch):
    cpu_array, gpu_array = np.zeros(2), np.ones(2)
    monkeypatch.setattr(backend, "device_of", lambda a: "cuda" if a is gpu_array else "cpu")
    with pytest.raises(mg.DeviceError, match=r"Add: inputs are on different devices \(cpu and cuda\)"):
        mg.Tensor(cpu_array) + mg.Tensor(gpu_array)


@pytest.mark.gpu
def test_real_device_mix_raises():
    with pytest.raises(mg.DeviceError, match="cpu and cuda"):
        mg.tensor([1.0]) + mg.tensor([1.0], device="cuda")
    with pytest.raises(mg.DeviceError, match="cpu array was mixed with a cuda tensor"):
        mg.tensor([1.0], device="cuda") + np.ones(1)

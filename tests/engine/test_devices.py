"""Device rules that the CuPy stand-in brought to light: plain data (a list, a number)
goes to the device of the tensors it meets, as on the CPU; an array or a tensor on the
other device is refused with a DeviceError naming both, never a TypeError deep inside CuPy."""

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F


def test_where_with_a_list_condition_or_two_constants_works_on_every_device(device):
    x = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    mg.where([True, False], x, 0.0).sum().backward()
    np.testing.assert_array_equal(mg.backend.to_device(x.grad, "cpu"), [1.0, 0.0])
    out = mg.where(x > 1.5, 1.0, 0.0)  # no tensor among the values: the condition's device
    assert out.device == device
    np.testing.assert_array_equal(out.numpy(), [0.0, 1.0])


def test_cross_entropy_takes_a_list_of_classes_on_every_device(device):
    logits = [[2.0, 0.0, -1.0], [0.0, 2.0, 1.0]]
    loss = F.cross_entropy(mg.tensor(logits, device=device), [0, 2])
    assert loss.device == device
    assert loss.item() == pytest.approx(F.cross_entropy(mg.tensor(logits), np.array([0, 2])).item())


@pytest.mark.gpu
def test_a_condition_index_target_or_gradient_on_the_other_device_is_refused():
    x = mg.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    with pytest.raises(mg.DeviceError, match=r"where: inputs are on different devices \(cpu and cuda\)"):
        mg.where(mg.tensor([True, False]), x, 0.0)
    with pytest.raises(mg.DeviceError, match=r"indexing: inputs are on different devices \(cuda and cpu\)"):
        x[mg.tensor([0, 1])]
    with pytest.raises(mg.DeviceError, match=r"cross_entropy: inputs are on different devices \(cuda and cpu\)"):
        F.cross_entropy(mg.zeros(2, 3, device="cuda"), np.array([0, 1]))
    for grad in (np.ones(2, dtype=np.float32), mg.ones(2)):
        with pytest.raises(mg.DeviceError, match=r"backward\(grad=...\): .* \(cuda and cpu\)"):
            (x * 2).backward(grad)
    with pytest.raises(mg.DeviceError, match=r"backward\(grad=...\)"):
        x.backward(mg.ones(2))  # a leaf: its gradient would have been a NumPy array
    assert x.grad is None

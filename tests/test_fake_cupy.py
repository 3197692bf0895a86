"""The CuPy stand-in (tests/fake_cupy.py) is as strict as CuPy where minigen could go wrong:
no implicit conversion to NumPy, no mixing with NumPy arrays, device arrays out of every call."""

import numpy as np
import pytest

import minigen as mg

from . import fake_cupy as cp


def test_a_device_array_is_not_a_numpy_array_and_never_becomes_one_implicitly():
    x = cp.asarray(np.arange(3.0))
    assert not isinstance(x, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array([x, x])


def test_the_explicit_doors_copy_both_ways():
    host = np.arange(6.0).reshape(2, 3)
    x = cp.asarray(host)
    host[0, 0] = 99.0  # the device holds a copy
    np.testing.assert_array_equal(x.get(), np.arange(6.0).reshape(2, 3))
    assert isinstance(cp.asnumpy(x), np.ndarray) and cp.asarray(x) is x


@pytest.mark.parametrize("mix", [lambda x, h: x + h, lambda x, h: h + x, lambda x, h: x * h, lambda x, h: h < x,
                                 lambda x, h: cp.where(x > 0, x, h), lambda x, h: cp.maximum(x, h),
                                 lambda x, h: cp.concatenate([x, h]), lambda x, h: x.__setitem__(0, h[:1])])
def test_mixing_with_a_numpy_array_raises(mix):
    x, host = cp.asarray(np.ones(2)), np.ones(2)
    with pytest.raises(TypeError, match="mixes a numpy.ndarray with a cupy array"):
        mix(x, host)


def test_numpy_functions_on_device_arrays_raise_but_scalars_mix_in_as_in_cupy():
    x = cp.asarray(np.array([1.0, 2.0], dtype=np.float32))
    for call in (np.exp, np.sum, lambda a: np.concatenate([a, a]), lambda a: np.where(a > 1, a, 0)):
        with pytest.raises(TypeError, match="was called on a cupy array"):
            call(x)
    with pytest.raises(TypeError, match="not a list"):
        cp.where([True, False], x, x)
    for y in (2 * x, np.float32(2) * x, x * np.float64(2), np.float32(1.5) < x, x + True):
        assert isinstance(y, cp.ndarray)
    assert np.shape(x) == (2,)  # metadata: CuPy answers it too


def test_results_are_device_arrays_even_when_numpy_gives_scalars():
    x = cp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    for value in (x.sum(), x[0, 1], x.max(), cp.linalg.norm(x)):
        assert isinstance(value, cp.ndarray) and value.ndim == 0
    assert float(x.sum()) == 10.0 and x[1, 0].item() == 3.0 and f"{x.mean():.2f}" == "2.50"
    with pytest.raises(TypeError):
        [10, 20, 30][x[0, 0].astype(np.int64)]  # no __index__, as in CuPy


def test_in_place_operators_and_views_write_through():
    x = cp.zeros((2, 3), dtype=np.float32)
    row = x[0]
    row += 1.0
    x[1, ::2] = cp.asarray(np.array([5.0, 6.0], dtype=np.float32))
    cp.scatter_add(x, (np.array([0, 0]), np.array([1, 1])), 2.0)
    np.testing.assert_array_equal(x.get(), [[1, 5, 1], [5, 0, 6]])


def test_random_streams_differ_from_numpys_and_give_device_arrays():
    draws = cp.random.default_rng(0).random(4)
    assert isinstance(draws, cp.ndarray)
    assert not np.allclose(draws.get(), np.random.default_rng(0).random(4)), "another device, another stream"
    with pytest.raises(AttributeError, match="Generator.permutation is not implemented"):
        cp.random.default_rng(0).permutation(3)


def test_what_is_missing_says_where_to_add_it():
    with pytest.raises(AttributeError, match=r"cupy.fft is not implemented; add it to tests/fake_cupy.py"):
        cp.fft
    with pytest.raises(AttributeError, match="ndarray.data is a device memory pointer"):
        cp.zeros(2).data


def test_minigen_refuses_to_mix_a_cpu_and_a_cuda_tensor(cuda_stand_in):
    cpu, cuda = mg.tensor([1.0, 2.0]), mg.tensor([1.0, 2.0], device="cuda")
    assert isinstance(cuda.data, cuda_stand_in.ndarray)
    with pytest.raises(mg.DeviceError, match=r"Add: inputs are on different devices \(cpu and cuda\)"):
        cpu + cuda
    with pytest.raises(mg.DeviceError, match=r"MatMul: inputs are on different devices \(cuda and cpu\)"):
        cuda @ cpu
    with pytest.raises(mg.DeviceError, match="a cpu array was mixed with a cuda tensor"):
        cuda * np.ones(2)


def test_synchronisations_are_counted(cuda_stand_in):
    mg.synchronize("cpu")
    assert cuda_stand_in.cuda.synchronizations == 0
    mg.synchronize("cuda")
    assert cuda_stand_in.cuda.synchronizations == 1

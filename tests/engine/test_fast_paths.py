"""The engine's fast paths against the plain reference paths they stand beside:
forward values and every gradient, to float32 tolerance, over odd sizes and
memory layouts; and the CPU thread and memory settings of the backend."""

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen.engine import backend, ops
from minigen.engine.functional import Conv2d, GroupNorm, im2col, im2col_taps, live_taps
from minigen.models.pixelcnn import causal_mask, channel_groups


def _channels_last(array):
    """The same NCHW values, stored NHWC in memory (as a convolution's output is)."""
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("shape, stride, padding", [((2, 3, 5, 7), 1, 0), ((3, 4, 6, 5), 1, 0),
                                                    ((2, 3, 5, 7), 2, 0), ((2, 3, 5, 4), 1, 1)])
def test_pointwise_input_grad_matches_the_tap_loop(shape, stride, padding, rng):
    """The 1x1 shortcut gives the tap loop's input gradient; other 1x1 variants take the tap loop."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((5, shape[1], 1, 1)).astype(np.float32)
    fn = Conv2d((stride, stride), (padding, padding))
    fn.needs_input_grad = (True, True)
    out = fn.forward(x, w)
    g = rng.standard_normal(out.shape).astype(np.float32)
    g_rows = np.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(-1, 5)
    reference = fn._input_grad_taps(g_rows, out.shape[2:])
    np.testing.assert_allclose(fn._input_grad(g_rows, out.shape[2:]), reference, rtol=1e-5, atol=1e-5)
    assert mg.gradcheck(lambda x, w: F.conv2d(x, w, stride=stride, padding=padding),
                        mg.tensor(x, requires_grad=True, dtype="float64"),
                        mg.tensor(w, requires_grad=True, dtype="float64"))


@pytest.mark.parametrize("shape, kernel, stride, padding", [((2, 3, 5, 7), (3, 3), (1, 1), (1, 1)),
                                                           ((1, 2, 6, 5), (3, 2), (2, 1), (0, 1)),
                                                           ((2, 1, 7, 7), (7, 7), (1, 1), (3, 3))])
def test_im2col_taps_picks_the_reference_columns(shape, kernel, stride, padding, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    taps = [(0, 1), (1, 0), (0, 0)]
    full = im2col(x, kernel, stride, padding).reshape(-1, kernel[0], kernel[1], shape[1])
    want = np.stack([full[:, i, j] for i, j in taps], axis=1).reshape(full.shape[0], -1)
    np.testing.assert_array_equal(im2col_taps(x, kernel, stride, padding, taps), want)


def test_live_taps_of_causal_masks():
    mask_b = causal_mask(channel_groups(6, 3), channel_groups(6, 3), 3, "B")
    assert live_taps(mask_b) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert len(live_taps(causal_mask(channel_groups(4, 1), channel_groups(1, 1), 7, "A"))) == 24
    assert live_taps(np.ones((2, 3, 3, 3))) is None, "every tap live: the plain im2col path"
    assert live_taps(np.zeros((2, 3, 1, 1))) == [(0, 0)], "nothing live: one tap of zeros"


def _masks(rng, shape):
    causal = causal_mask(channel_groups(shape[0], 1), channel_groups(shape[1], 1), shape[2], "B")
    random = (rng.random(shape) < 0.6).astype(np.float32)
    random[:, :, -1] = 0  # whole taps masked out
    return [causal, random, np.ones(shape, np.float32), np.zeros(shape, np.float32)]


@pytest.mark.parametrize("xs, ws, stride, padding", [((2, 3, 5, 7), (4, 3, 3, 3), 1, 1), ((1, 2, 6, 6), (3, 2, 3, 3), 2, 0),
                                                     ((2, 3, 6, 5), (2, 3, 5, 5), 1, 2), ((2, 4, 5, 5), (3, 4, 1, 1), 1, 0)])
def test_masked_conv2d_matches_conv2d_of_the_masked_weight(xs, ws, stride, padding, device, rng):
    """Skipping dead taps changes nothing: values and all gradients equal the composition's."""
    x_np, w_np, b_np = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    for mask_np in _masks(rng, ws):
        mask = mg.tensor(mask_np, device=device)
        results = []
        for fast in (True, False):
            x, w, b = (mg.tensor(v, requires_grad=True, device=device) for v in (x_np, w_np, b_np))
            if fast:
                y = F.masked_conv2d(x, w, mask.data, b, stride=stride, padding=padding)
            else:
                y = F.conv2d(x, w * mask, b, stride=stride, padding=padding)
            g = mg.tensor(np.linspace(-1, 1, int(np.prod(y.shape))).reshape(y.shape), device=device)
            (y * g).sum().backward()
            results.append([backend.to_device(a, "cpu") for a in (y.data, x.grad, w.grad, b.grad)])
        for got, want in zip(*results):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_masked_conv2d_gradcheck_and_errors(rng):
    x, w, b = (mg.tensor(rng.standard_normal(s), requires_grad=True, dtype="float64")
               for s in ((1, 2, 4, 5), (3, 2, 3, 3), (3,)))
    mask = causal_mask(channel_groups(3, 1), channel_groups(2, 1), 3, "B")
    assert mg.gradcheck(lambda x, w, b: F.masked_conv2d(x, w, mask, b, padding=1), x, w, b)
    with pytest.raises(ValueError, match=r"masked_conv2d: mask has shape \(3, 2, 1, 1\) but the weight \(3, 2, 3, 3\)"):
        F.masked_conv2d(x, w, mask[:, :, :1, :1], b)
    with pytest.raises(ValueError, match="conv2d: input has 2 channels but the weight expects 4"):
        F.masked_conv2d(x, mg.zeros(3, 4, 3, 3), np.ones((3, 4, 3, 3)))


@pytest.mark.parametrize("xs, ws, padding", [((2, 5, 6, 7), (3, 5, 3, 3), (1, 1)), ((1, 4, 5, 5), (2, 4, 3, 3), (0, 0)),
                                             ((2, 3, 7, 6), (1, 3, 3, 5), (2, 1)), ((1, 6, 4, 5), (2, 6, 2, 2), (1, 0))])
def test_input_grad_as_conv_matches_the_tap_loop(xs, ws, padding, device, rng):
    """More input than output channels, stride 1: the transposed-convolution path."""
    x = mg.tensor(rng.standard_normal(xs), device=device)
    w = mg.tensor(rng.standard_normal(ws), device=device)
    fn = Conv2d((1, 1), padding)
    fn.needs_input_grad = (True, True)
    out = fn.forward(x.data, w.data)
    xp = backend.get_array_module(out)
    g = xp.ascontiguousarray(xp.asarray(rng.standard_normal(out.shape).astype(np.float32)).transpose(0, 2, 3, 1))
    g = g.reshape(-1, ws[0])
    got, want = fn._input_grad_as_conv(g, out.shape[2:]), fn._input_grad_taps(g, out.shape[2:])
    np.testing.assert_allclose(backend.to_device(got, "cpu"), backend.to_device(want, "cpu"), rtol=1e-4, atol=1e-4)
    x64 = mg.tensor(rng.standard_normal(xs), requires_grad=True, dtype="float64")
    w64 = mg.tensor(rng.standard_normal(ws), requires_grad=True, dtype="float64")
    assert mg.gradcheck(lambda x, w: F.conv2d(x, w, padding=padding), x64, w64)


def _group_norm_reference(x, groups, w, b, silu):
    """The composition the fused op replaces: GroupNorm, then * w + b, then SiLU."""
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = GroupNorm(groups, 1e-5)(x) * ops.reshape(w, shape) + ops.reshape(b, shape)
    return F.silu(y) if silu else y


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("shape, groups, channels_last", [((3, 6, 5, 7), 3, True), ((2, 4, 3, 3), 2, False),
                                                          ((2, 6, 5), 3, False), ((4, 8), 4, False),
                                                          ((1, 5, 1, 3), 1, True)])
def test_fused_group_norm_matches_the_composition(shape, groups, channels_last, silu, device, rng):
    x_np = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    if channels_last:
        x_np = _channels_last(x_np)
    w_np, b_np = rng.standard_normal(shape[1]), np.linspace(-2, 2, shape[1])
    g = mg.tensor(rng.standard_normal(shape), device=device)
    results = []
    for fused in (True, False):
        x = mg.tensor(x_np, requires_grad=True, device=device)
        w, b = (mg.tensor(v, requires_grad=True, device=device) for v in (w_np, b_np))
        y = F.group_norm(x, groups, w, b, silu=silu) if fused else _group_norm_reference(x, groups, w, b, silu)
        assert y.shape == shape and y.dtype == np.float32
        (y * g).sum().backward()
        results.append([backend.to_device(a, "cpu") for a in (y.data, x.grad, w.grad, b.grad)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("silu", [False, True])
def test_fused_group_norm_gradcheck(silu, rng):
    x, w, b = (mg.tensor(rng.standard_normal(s), requires_grad=True, dtype="float64")
               for s in ((2, 4, 3, 5), (4,), (4,)))
    assert mg.gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b, silu=silu), x, w, b)


def test_fused_group_norm_silu_does_not_overflow(rng):
    x = mg.tensor(np.array([[-1e4, 1e4, 0.0, 3.0]]), requires_grad=True)
    with np.errstate(all="raise"):
        y = F.group_norm(x, 1, mg.ones(4), mg.zeros(4), silu=True)
        y.sum().backward()
    assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad).all()


def test_relu_values_and_gradient(rng):
    a = mg.tensor(_channels_last(rng.standard_normal((2, 3, 4, 5))), requires_grad=True)
    y = F.relu(a)
    np.testing.assert_array_equal(y.numpy(), np.where(a.data > 0, a.data, 0))
    y.sum().backward()
    np.testing.assert_array_equal(a.grad, (a.data > 0).astype(np.float32))


def test_set_num_threads_changes_what_blas_reports():
    import threadpoolctl  # a dependency of minigen

    def blas_threads():
        return {info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}

    before = blas_threads()
    assert before, "threadpoolctl finds no BLAS library behind NumPy (NumPy's wheels ship OpenBLAS)"
    try:
        assert mg.set_num_threads(1) == 1
        assert blas_threads() == {1}
        assert mg.set_num_threads(2) == 2
        assert blas_threads() == {2}
        assert mg.set_num_threads() == backend.default_num_threads()
        assert blas_threads() == {backend.default_num_threads()}
    finally:
        mg.set_num_threads(max(before))


def test_set_num_threads_without_threadpoolctl_sets_the_environment(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert mg.set_num_threads(3) == 3
    import os
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads: n must be an int >= 1"):
        mg.set_num_threads(bad)


def test_default_threads_leave_one_core_free():
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert backend.default_num_threads() == max(1, cores - 1)


def test_keep_freed_memory_reports_whether_it_applies():
    import platform
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert backend.keep_freed_memory(False) == glibc
    assert backend.keeps_freed_memory() is False
    assert backend.keep_freed_memory() == glibc
    assert backend.keeps_freed_memory() == glibc


def test_a_thread_count_the_user_set_in_the_environment_stands(monkeypatch):
    calls = []
    monkeypatch.setattr(backend, "set_num_threads", lambda n=None: calls.append(n) or 1)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert backend.apply_default_num_threads() is None and calls == []
    for name in backend.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert backend.apply_default_num_threads() == 1 and calls == [None]

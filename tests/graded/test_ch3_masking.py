"""Graded checks of chapter 3: im2col and the masks of a PixelCNN."""

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen.bench.timing import adam_step
from minigen.models import pixelcnn as reference


@pytest.mark.task3_1
def test_im2col_by_hand(graded):
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    cols = graded.im2col(x, (2, 2), (1, 1), (0, 0))
    np.testing.assert_array_equal(cols, [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])


@pytest.mark.task3_1
@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), (1, 1), (1, 1)), ((3, 2), (1, 2), (1, 0)),
                                                     ((1, 1), (2, 2), (0, 0))])
def test_im2col_matches_the_reference_and_makes_a_convolution(graded, unchanged, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    with unchanged(x):
        cols = graded.im2col(x, kernel, stride, padding)
    assert cols.dtype == np.float32, f"float32 input gave {cols.dtype} columns (conv2d would then be float64)"
    np.testing.assert_array_equal(cols, F.im2col(x, kernel, stride, padding))
    w = rng.standard_normal((4, 3) + kernel).astype(np.float32)
    ho, wo = F.conv_output_size((5, 6), kernel, stride, padding)
    out = (cols @ w.transpose(2, 3, 1, 0).reshape(-1, 4)).reshape(2, ho, wo, 4).transpose(0, 3, 1, 2)
    expected = F.conv2d(mg.tensor(x), mg.tensor(w), stride=stride, padding=padding).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.task3_2
def test_channel_groups(graded):
    np.testing.assert_array_equal(graded.channel_groups(6, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(graded.channel_groups(4, 3), [0, 0, 1, 2])
    np.testing.assert_array_equal(graded.channel_groups(5, 1), [0, 0, 0, 0, 0])
    for channels in range(3, 40):
        np.testing.assert_array_equal(graded.channel_groups(channels, 3), reference.channel_groups(channels, 3))


@pytest.mark.task3_3
def test_masks_of_one_colour_by_hand(graded):
    mask_a = graded.causal_mask([0], [0], 3, "A")
    mask_b = graded.causal_mask([0], [0], 3, "B")
    np.testing.assert_array_equal(mask_a[0, 0], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(mask_b[0, 0], [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


@pytest.mark.task3_3
def test_colour_groups_at_the_centre(graded):
    groups = [0, 1, 2]
    np.testing.assert_array_equal(graded.causal_mask(groups, groups, 1, "A")[:, :, 0, 0],
                                  [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(graded.causal_mask(groups, groups, 1, "B")[:, :, 0, 0],
                                  [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


@pytest.mark.task3_3
def test_masks_match_the_reference_on_random_groups(graded):
    rng = np.random.default_rng(1)
    for kernel in [(1, 3), 3, 5, (7, 7)]:
        out_groups = np.sort(rng.integers(0, 3, size=8))
        in_groups = np.sort(rng.integers(0, 3, size=6))
        for mask_type in "AB":
            np.testing.assert_array_equal(graded.causal_mask(out_groups, in_groups, kernel, mask_type),
                                          reference.causal_mask(out_groups, in_groups, kernel, mask_type))


def conv_inputs(seed, n=2, colors=3, out_per_color=2, size=(4, 5), kernel=3, mask_type="B"):
    rng = np.random.default_rng(seed)
    in_channels = colors * (1 if mask_type == "A" else out_per_color)
    out_channels = colors * out_per_color
    mask = reference.causal_mask(reference.channel_groups(out_channels, colors),
                                 reference.channel_groups(in_channels, colors), kernel, mask_type)
    x = rng.standard_normal((n, in_channels) + size).astype(np.float32)
    weight = rng.standard_normal(mask.shape).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    return x, weight, mask, bias


@pytest.mark.task3_4
@pytest.mark.parametrize("mask_type, kernel", [("A", 3), ("B", 3), ("B", (1, 3)), ("A", 5)])
def test_the_masked_convolution_convolves_with_the_masked_weight(graded, unchanged, mask_type, kernel):
    x, weight, mask, bias = conv_inputs(len(str(kernel)), mask_type=mask_type, kernel=kernel)
    kh, kw = F.as_pair(kernel)
    with unchanged(x, weight, mask, bias):
        out = graded.masked_conv(mg.tensor(x), mg.tensor(weight), mask, mg.tensor(bias), (kh // 2, kw // 2))
    assert tuple(out.shape) == (2, 6, 4, 5), "a 'same' convolution: (N, out, H, W)"
    assert out.dtype == np.float32, "float32 in, float32 out"
    expected = F.conv2d(mg.tensor(x), mg.tensor(weight * mask), mg.tensor(bias), padding=(kh // 2, kw // 2))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.task3_4
def test_without_bias_or_taps(graded):
    x, weight, mask, _ = conv_inputs(7)
    out = graded.masked_conv(mg.tensor(x), mg.tensor(weight), mask, None, (1, 1))
    expected = F.conv2d(mg.tensor(x), mg.tensor(weight * mask), None, padding=(1, 1))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.task3_4
def test_the_weight_learns_only_through_the_open_taps(graded):
    x, weight, mask, bias = conv_inputs(3)
    mine = [mg.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    right = [mg.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    upstream = mg.tensor(np.random.default_rng(4).standard_normal((2, 6, 4, 5)).astype(np.float32))
    (graded.masked_conv(mine[0], mine[1], mask, mine[2], (1, 1)) * upstream).sum().backward()
    (reference.masked_conv(right[0], right[1], mask, right[2], (1, 1)) * upstream).sum().backward()
    assert mine[1].grad is not None, "compute with Tensor ops, so the gradient reaches the weight"
    assert not mine[1].grad[mask == 0].any(), "a masked tap must get no gradient"
    for name, a, b in zip(("x", "weight", "bias"), mine, right):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.task3_4
def test_a_pixelcnn_trains_with_your_masked_convolution(graded, monkeypatch):
    """Every layer of a PixelCNN runs your forward: three Adam steps give the library's losses."""
    x = np.random.default_rng(0).integers(0, 2, (4, 1, 5, 5))

    def losses():
        mg.manual_seed(0)
        model = reference.PixelCNN(channels=1, levels=2, hidden=4, blocks=1, first_kernel=3)
        step = adam_step(mg.optim.Adam(model.parameters(), lr=0.01), lambda: model.loss(x))
        return [step() for _ in range(3)]

    expected = losses()
    monkeypatch.setattr(reference, "masked_conv", graded.masked_conv)
    np.testing.assert_allclose(losses(), expected, rtol=1e-5)


@pytest.mark.task3_1
def test_a_convolution_trains_with_your_im2col(graded, monkeypatch):
    """conv2d's forward and its input gradient (as a convolution) both build columns with im2col."""
    def gradients():
        rng = np.random.default_rng(7)
        x = mg.tensor(rng.standard_normal((2, 6, 5, 7)).astype(np.float32), requires_grad=True)
        w = mg.tensor(rng.standard_normal((3, 6, 3, 3)).astype(np.float32), requires_grad=True)
        y = F.conv2d(x, w, padding=1)
        (y * y).mean().backward()
        return y.data, x.grad, w.grad

    expected = gradients()
    monkeypatch.setattr(F, "im2col", graded.im2col)
    for got, right, what in zip(gradients(), expected, ("output", "input gradient", "weight gradient")):
        assert got.dtype == np.float32, f"the {what} came back {got.dtype} with your im2col"
        np.testing.assert_allclose(got, right, rtol=1e-4, atol=1e-5, err_msg=what)

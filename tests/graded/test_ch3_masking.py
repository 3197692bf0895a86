"""Graded checks of chapter 3: im2col and the masks of a PixelCNN."""

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
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

"""The long-range experiment's parts: the data's dependence, the per-pixel bits, the timed training."""

import math

import numpy as np
import pytest

from minigen.bench.long_range import (bits_split, epochs_of, nll_nats, copied_pixels, copy_row_images, long_range_experiment,
                                      nats_per_subpixel, parameter_count, receptive_field, train_for)
from minigen.models.pixelcnn import PixelCNN


def tiny_pixelcnn():
    return PixelCNN(channels=1, levels=2, hidden=8, blocks=1)


def test_the_last_row_copies_the_first_and_the_rest_are_fair_coins():
    images = copy_row_images(4000, size=6, seed=3)
    assert images.shape == (4000, 1, 6, 6) and images.dtype == np.int64
    assert np.array_equal(images[:, :, -1], images[:, :, 0])
    free = images[:, :, :-1]
    assert abs(free.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(free[:, 0, 0, 0], free[:, 0, 1, 0])[0, 1]) < 0.05  # neighbours independent
    assert not np.array_equal(copy_row_images(8, 6, seed=1), copy_row_images(8, 6, seed=2))
    with pytest.raises(ValueError, match="size must be at least 2"):
        copy_row_images(4, size=1)


def test_copied_pixels_mark_the_last_row_only():
    mask = copied_pixels(5)
    assert mask[-1].all() and not mask[:-1].any()


def test_the_per_subpixel_nats_add_up_to_the_exact_log_likelihood():
    model = tiny_pixelcnn()
    images = copy_row_images(5, size=5, seed=0)
    nats = nats_per_subpixel(model, images, batch=2)  # batches of 2: the pieces join in order
    assert nats.shape == (5, 1, 5, 5) and (nats > 0).all()
    np.testing.assert_allclose(nats.sum(axis=(1, 2, 3)), -model.log_prob(images).data, rtol=1e-5)


def test_bits_split_averages_each_part_in_bits():
    model = tiny_pixelcnn()
    images = copy_row_images(6, size=4, seed=0)
    nats = nats_per_subpixel(model, images)
    copied, free = bits_split(model, images, copied_pixels(4))
    assert copied == pytest.approx(nats[:, :, -1].mean() / math.log(2), rel=1e-5)
    assert free == pytest.approx(nats[:, :, :-1].mean() / math.log(2), rel=1e-5)


def test_training_stops_at_max_steps_and_lowers_the_loss():
    model = tiny_pixelcnn()
    batch = copy_row_images(16, size=4, seed=0)
    before = float(model.loss(batch).data)
    steps = train_for(model, lambda step: batch, seconds=60, lr=1e-2, max_steps=30)
    assert steps == 30
    assert float(model.loss(batch).data) < before


def test_the_experiment_reports_one_row_per_model():
    rows = long_range_experiment({"a": tiny_pixelcnn}, size=4, seconds=0.2, n_test=8, batch=4)
    (row,) = rows
    assert row["model"] == "a" and row["steps"] >= 1 and row["parameters"] == parameter_count(tiny_pixelcnn())
    assert row["bits_per_image"] == pytest.approx(4 * row["copied_bits"] + 12 * row["free_bits"])


def test_a_receptive_field_by_autograd_is_exactly_the_earlier_pixels_the_model_reaches():
    model = PixelCNN(channels=1, levels=2, hidden=8, blocks=1, first_kernel=3)  # 3x3 mask A, one 3x3 mask B
    field = receptive_field(model.network, (3, 1, 7, 7), lambda logits: logits[:, :, 0, 4, 3])[0]
    assert field.shape == (7, 7)
    rows, cols = np.indices((7, 7))
    later_or_same = (rows > 4) | ((rows == 4) & (cols >= 3))
    assert (field[later_or_same] == 0).all()
    assert field[4, 2] > 0 and field[3, 3] > 0 and field[2, 3] > 0  # two layers reach two rows up
    assert (field[:2] == 0).all()  # and no further


def test_epochs_visit_every_image_once_per_epoch_in_a_new_order():
    images = np.arange(10)[:, None]
    draw = epochs_of(images, batch=3, seed=0)
    first = np.concatenate([draw(k) for k in range(3)])[:, 0]
    second = np.concatenate([draw(k) for k in range(3, 6)])[:, 0]
    assert len(set(first)) == 9 and len(set(second)) == 9 and not np.array_equal(first, second)
    with pytest.raises(ValueError, match="fewer than one batch"):
        epochs_of(images, batch=11)


def test_nll_is_the_mean_negative_log_likelihood_per_image():
    model = tiny_pixelcnn()
    images = copy_row_images(4, size=4, seed=0)
    assert nll_nats(model, images) == pytest.approx(-float(model.log_prob(images).data.mean()), rel=1e-5)

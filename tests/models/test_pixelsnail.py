"""PixelSNAIL: causality (exactly the strictly earlier sub-pixels, through autograd),
exact normalisation, cached sampling identical to naive sampling, a key/value cache
that grows one position per pixel, settings, learning, and the command line."""

import itertools

import matplotlib.image
import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen.cli import main
from minigen.models.config import config_dict
from minigen.models.pixelcnn import PixelCNN, SamplingCache
from minigen.models.pixelsnail import PixelSNAIL, PixelSNAILConfig, attend_to_cache, earlier_pixels
from minigen.train import load_model, read_checkpoint
from minigen.viz import CAPTION_BAND

from .learning import digits_nll_after


def small(**settings):
    """A PixelSNAIL small enough for exhaustive checks: 2 blocks of 1 residual layer."""
    return PixelSNAIL(**{"hidden": 6, "blocks": 2, "residual_layers": 1, "key_channels": 4,
                         "value_channels": 3, **settings})


def raster_order(channels, height, width):
    """The sampling position of every sub-pixel, shape (C, H, W): rows, columns, then colours."""
    return np.arange(height * width * channels).reshape(height, width, channels).transpose(2, 0, 1)


def input_gradients(model, x, labels, c, i, j, rng):
    """|d(randomly weighted logits of sub-pixel (c, i, j)) / d(inputs)| summed over the
    batch (several inputs, so no dependence hides behind one input's values), (C, H, W)."""
    x = mg.tensor(x, requires_grad=True)
    logits = model.network(x, labels)[:, :, c, i, j]
    (logits * mg.tensor(rng.standard_normal(logits.shape).astype(np.float32))).sum().backward()
    return np.abs(x.grad).sum(axis=0)


# ----------------------------------------------------------------------------
# Causality


def test_attention_mask_is_strictly_earlier_pixels_of_the_actual_image():
    mask = earlier_pixels(2, 3, np)
    assert mask.shape == (6, 6)
    expected = np.arange(6)[None, :] < np.arange(6)[:, None]  # key index < query index
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("channels, classes", [(1, None), (1, 3), (3, None), (3, 3)])
def test_each_logit_depends_on_exactly_the_strictly_earlier_subpixels(channels, classes, rng):
    """Zero gradient at the sub-pixel itself and everything after it; non-zero at every
    sub-pixel before it, however far (the attention reaches every earlier pixel, the
    masked convolutions the earlier colours of the same pixel)."""
    model = small(channels=channels, levels=3, num_classes=classes)
    size = (5, 7)
    order = raster_order(channels, *size)
    x = rng.uniform(-1, 1, (4, channels) + size).astype(np.float32)
    labels = np.array([0, 1, 2, 1]) if classes else None
    for i, j, c in itertools.product(range(size[0]), range(size[1]), range(channels)):
        seen = input_gradients(model, x, labels, c, i, j, rng) != 0
        np.testing.assert_array_equal(seen, order < order[c, i, j], err_msg=f"sub-pixel {(c, i, j)}")


def test_a_pixelcnn_of_the_same_depth_does_not_reach_the_first_pixel(rng):
    """The contrast: 5 stacked masked 3x3 convolutions (as many as ``small()`` has) see
    only a few rows back, so the last pixel of a 5x7 image never reads the first."""
    x = rng.uniform(-1, 1, (4, 1, 5, 7)).astype(np.float32)
    cnn = PixelCNN(hidden=6, blocks=4, first_kernel=3, levels=3)
    assert input_gradients(cnn, x, None, 0, 4, 6, rng)[0, 0, 0] == 0
    assert input_gradients(small(levels=3), x, None, 0, 4, 6, rng)[0, 0, 0] > 0


# ----------------------------------------------------------------------------
# Exact likelihood


@pytest.mark.parametrize("channels, levels, size", [(1, 2, (2, 2)), (3, 4, (1, 1)), (3, 2, (2, 2))])
def test_probabilities_of_all_images_sum_to_one(channels, levels, size):
    model = small(channels=channels, levels=levels)
    dims = channels * size[0] * size[1]
    every_image = np.array(list(itertools.product(range(levels), repeat=dims))).reshape((-1, channels) + size)
    with mg.no_grad():
        p = np.exp(model.log_prob(every_image).numpy().astype(np.float64))
    assert p.std() > 0, "a uniform model would pass trivially"
    assert abs(p.sum() - 1) < 1e-6


def test_conditional_probabilities_sum_to_one_for_each_class():
    model = small(levels=2, num_classes=3)
    every_image = np.array(list(itertools.product(range(2), repeat=4))).reshape(-1, 1, 2, 2)
    with mg.no_grad():
        for label in range(3):
            p = np.exp(model.log_prob(every_image, np.full(len(every_image), label)).numpy().astype(np.float64))
            assert abs(p.sum() - 1) < 1e-6


# ----------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("channels, levels", [(1, 2), (3, 3)])
def test_cached_sampler_equals_naive_sampler(channels, levels):
    model = small(channels=channels, levels=levels, num_classes=3)
    labels = [0, 2, 1, 1]
    naive = model.sample(4, size=(3, 5), labels=labels, seed=5)
    cached = model.sample(4, size=(3, 5), labels=labels, seed=5, cached=True)
    assert naive.shape == (4, channels, 3, 5) and naive.max() < levels
    np.testing.assert_array_equal(naive, cached)
    assert not np.array_equal(cached, model.sample(4, size=(3, 5), labels=labels, seed=6, cached=True))


@pytest.mark.parametrize("channels, classes", [(1, None), (3, 2)])
def test_step_at_each_place_equals_the_whole_image_network(channels, classes, rng):
    """Walk the sub-pixels in the cached sampler's order. At (c, i, j) the image is finished
    before it and arbitrary from it on; ``logits_at`` must give colour c the logits the
    whole-image network gives it on the finished image (no luck of the draw involved)."""
    model = small(channels=channels, levels=3, num_classes=classes)
    n, (height, width) = 2, (3, 5)
    x = rng.integers(0, 3, (n, channels, height, width))
    labels = mg.tensor(np.array([1, 0])) if classes else None
    order = raster_order(channels, height, width)
    scaled = lambda images: mg.tensor(images.astype(np.float32) - 1)  # levels 0..2 -> [-1, 1]

    def finished_before(c, i, j):
        return scaled(np.where(order < order[c, i, j], x, rng.integers(0, 3, x.shape)))

    with mg.no_grad():
        full = model.logits(scaled(x), labels).numpy().reshape(n, channels, 3, height, width)
        cache = SamplingCache(height, width)
        for i, j, c in itertools.product(range(height), range(width), range(channels)):
            at = model.logits_at(cache, finished_before(c, i, j), labels, i, j).numpy()
            np.testing.assert_allclose(at.reshape(n, channels, 3)[:, c], full[:, c, :, i, j],
                                       rtol=1e-5, atol=1e-5, err_msg=f"sub-pixel {(c, i, j)}")


def test_key_value_cache_grows_by_one_position_per_pixel_drawn():
    """At pixel p every attention block holds the keys and values of pixels 0..p-1:
    p positions, p times one position's bytes, in buffers at most twice that."""
    n, heads, channels = 2, 2, 3
    model = small(channels=channels, heads=heads, key_channels=4, value_channels=3)
    one_position = n * heads * channels * (4 + 3) * 4  # float32 keys and values of every head
    height, width = 3, 5
    x = np.zeros((n, channels, height, width), dtype=np.float32)
    cache = SamplingCache(height, width)
    with mg.no_grad():
        for place, (i, j) in enumerate(itertools.product(range(height), range(width))):
            for c in range(channels):
                model.logits_at(cache, mg.tensor(x), None, i, j)
            kv = model.key_value_caches(cache)
            assert len(kv) == 2
            for block in kv:
                assert block.positions == place and block.nbytes == place * one_position
                if place:
                    assert block.keys.shape == (n, heads * channels, place, 4)
                assert block.allocated_nbytes <= max(2 * place, 1) * one_position


def test_low_temperature_is_greedy():
    model = small(levels=3)
    a = model.sample(3, size=(3, 3), temperature=1e-4, seed=1, cached=True)
    b = model.sample(3, size=(3, 3), temperature=1e-4, seed=2, cached=True)
    np.testing.assert_array_equal(a, b)


def test_same_results_on_every_device(device):
    """The same model on ``device`` gives the CPU's log-likelihoods and samples."""
    model = small(channels=3, levels=3, num_classes=2)
    x = np.random.default_rng(0).integers(0, 3, (4, 3, 3, 3))
    labels = np.array([0, 1, 1, 0])
    with mg.no_grad():
        expected = model.log_prob(x, labels).numpy()
    cpu_samples = model.sample(4, size=(3, 3), labels=labels, seed=3, cached=True)
    model.to(device)
    with mg.no_grad():
        got = model.log_prob(mg.tensor(x, device=device), mg.tensor(labels, device=device)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    samples = model.sample(4, size=(3, 3), labels=labels, seed=3, cached=True, device=device)
    np.testing.assert_array_equal(mg.backend.to_device(samples, "cpu"), cpu_samples)


# ----------------------------------------------------------------------------
# Settings


def test_defaults_are_the_constructors():
    assert PixelSNAIL().config == PixelSNAILConfig(channels=1, levels=2, hidden=32, blocks=2, residual_layers=2,
                                                   heads=1, key_channels=16, value_channels=32,
                                                   num_classes=None, kernel_size=3)


def test_config_round_trips_through_a_dict(tmp_path):
    settings = dict(channels=3, levels=4, hidden=9, blocks=1, residual_layers=0, heads=2, num_classes=5,
                    kernel_size=5)
    model = PixelSNAIL(**settings)
    assert model.config == PixelSNAILConfig(**settings)
    assert PixelSNAIL(PixelSNAILConfig(**settings)).config == model.config
    mg.save({"model_config": config_dict(model.config)}, tmp_path / "config.npz")  # as checkpoints do
    rebuilt = PixelSNAIL(**mg.load(tmp_path / "config.npz")["model_config"])
    assert rebuilt.config == model.config
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]


@pytest.mark.parametrize("build, message", [
    (lambda: PixelSNAIL(layers=3), "PixelSNAILConfig has no setting 'layers'; its settings are channels, levels"),
    (lambda: PixelSNAIL(levels=1), r"PixelSNAILConfig: levels must be an integer >= 2, got 1"),
    (lambda: PixelSNAIL(heads=0), r"PixelSNAILConfig: heads must be an integer >= 1, got 0"),
    (lambda: PixelSNAIL(key_channels=2.5), r"PixelSNAILConfig: key_channels must be an integer >= 1, got 2.5"),
    (lambda: PixelSNAIL(residual_layers=-1), r"PixelSNAILConfig: residual_layers must be an integer >= 0, got -1"),
    (lambda: PixelSNAIL(blocks=0), r"PixelSNAILConfig: blocks must be an integer >= 1, got 0"),
    (lambda: PixelSNAIL(kernel_size=4), "PixelSNAILConfig: kernel_size must be odd, got 4"),
    (lambda: PixelSNAIL(num_classes=0), "PixelSNAILConfig: num_classes must be an integer >= 1, got 0"),
    (lambda: PixelSNAIL(channels=3, hidden=10),
     r"PixelSNAILConfig: hidden \(10\) must be a multiple of channels \(3\)"),
])
def test_bad_settings_are_one_line_errors_that_name_them(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\), got \(1, 3, 2, 2\)"):
        small().log_prob(np.zeros((1, 3, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="needs labels"):
        small(num_classes=2).sample(1, size=(2, 2))


# ----------------------------------------------------------------------------
# Learning and the command line


def test_pixelsnail_beats_independent_pixels_on_binarized_digits():
    """The default model, 4 epochs of batches of 64 (a few seconds on 2 cores)."""
    nll, baseline = digits_nll_after(PixelSNAIL(), epochs=4)
    assert nll < baseline - 4.0, f"PixelSNAIL {nll:.2f} vs independent pixels {baseline:.2f} nats/image"


TINY_TRAIN = ["train", "pixelsnail", "--data", "digits", "--steps", "3", "--batch-size", "256", "--hidden", "8",
              "--blocks", "1", "--residual-layers", "1", "--heads", "2", "--key-channels", "4",
              "--value-channels", "4", "--conditional"]


def test_train_sample_and_resume_through_the_cli(tmp_path, capsys):
    checkpoint = tmp_path / "snail.npz"
    assert main(TINY_TRAIN + ["--checkpoint", str(checkpoint)]) == 0
    assert "test NLL" in capsys.readouterr().out and (tmp_path / "snail.png").is_file()
    state = read_checkpoint(checkpoint)
    assert state["step"] == 3 and state["model_config"]["heads"] == 2 and state["model_config"]["num_classes"] == 10
    assert isinstance(load_model(checkpoint), PixelSNAIL)

    common = ["sample", "--checkpoint", str(checkpoint), "--n", "4", "--labels", "1,2", "--seed", "3"]
    assert main(common + ["--out", str(tmp_path / "cached.png")]) == 0
    assert main(common + ["--naive", "--out", str(tmp_path / "naive.png")]) == 0
    cached, naive = (matplotlib.image.imread(tmp_path / name) for name in ("cached.png", "naive.png"))
    np.testing.assert_array_equal(cached[CAPTION_BAND:], naive[CAPTION_BAND:])  # below the titles, which differ

    assert main(TINY_TRAIN + ["--steps", "4", "--checkpoint", str(checkpoint), "--resume"]) == 0
    assert read_checkpoint(checkpoint)["step"] == 4
    assert main(TINY_TRAIN + ["--heads", "1", "--checkpoint", str(checkpoint), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_one_cached_attention_step_equals_the_whole_sequence_attention_at_that_place():
    rng = np.random.default_rng(0)
    n, heads, length, dk, dv = 2, 3, 6, 4, 5
    q, k = (rng.standard_normal((n, heads, length, dk)).astype(np.float32) * 3 for _ in range(2))
    v = rng.standard_normal((n, heads, length, dv)).astype(np.float32)
    whole = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v),
                                           mask=earlier_pixels(2, 3)).data
    for p in range(1, length):
        step = attend_to_cache(mg.tensor(q[:, :, p]), mg.tensor(k[:, :, :p]), mg.tensor(v[:, :, :p]))
        assert step.shape == (n, heads, dv)
        np.testing.assert_allclose(step.data, whole[:, :, p], rtol=1e-5, atol=1e-6)
    first = attend_to_cache(mg.tensor(q[:, :, 0]), mg.tensor(k[:, :, :0]), mg.tensor(v[:, :, :0]))
    assert first.shape == (n, heads, dv) and not first.data.any()


def test_a_cached_attention_step_is_stable_for_large_scores_and_differentiable():
    q = mg.tensor(np.full((1, 1, 2), 100.0, dtype=np.float32), requires_grad=True)
    keys = mg.tensor(np.array([[[[100.0, 100.0], [-100.0, -100.0]]]], dtype=np.float32))
    values = mg.tensor(np.array([[[[1.0], [2.0]]]], dtype=np.float32))
    out = attend_to_cache(q, keys, values)
    np.testing.assert_allclose(out.data, [[[1.0]]])  # all weight on the first key, no overflow
    out.sum().backward()
    assert np.isfinite(q.grad).all()


def test_the_background_holds_the_papers_linear_position_and_its_sines_and_cosines():
    from minigen.models.pixelsnail import background, background_at, background_channels
    grid = background(2, 3, 4, np, frequencies=2).data
    assert grid.shape == (2, background_channels(2), 3, 4) == (2, 10, 3, 4) and grid.dtype == np.float32
    rows, cols = np.indices((3, 4))
    np.testing.assert_allclose(grid[0, 0], (rows - 1.5) / 3)
    np.testing.assert_allclose(grid[0, 1], (cols - 2.0) / 4)
    np.testing.assert_allclose(grid[1, 8], np.sin(np.pi * 2 * (cols + 0.5) / 4), atol=1e-6)  # m = 1, column sine
    np.testing.assert_allclose(background_at(2, 3, 3, 4, np, 2), grid[0, :, 2, 3])  # one place = the grid there
    assert background(1, 3, 4, np).shape == (1, 2, 3, 4), "no frequencies: the paper's two channels"


def test_a_score_of_the_column_features_can_pick_out_the_queries_own_column():
    """With the linear column alone a bilinear score is monotone in the key's column; with the
    sines and cosines, sum_m cos(a_m(j) - a_m(j')) (a fixed bilinear form) peaks exactly at j' = j."""
    from minigen.models.pixelsnail import background_at
    width, frequencies = 16, 4
    columns = background_at(np.zeros(width, dtype=int), np.arange(width), 16, width, np, frequencies)
    sines_cosines = columns[2:].reshape(frequencies, 2, 2, width)[:, 1].reshape(2 * frequencies, width)  # columns
    scores = sines_cosines.T @ sines_cosines  # (query column, key column)
    assert (scores.argmax(axis=1) == np.arange(width)).all()
    linear = columns[1]
    assert all(np.argmax(w * linear * linear[j]) in (0, width - 1) for j in range(width) for w in (1, -1))

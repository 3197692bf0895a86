"""Sample grids with a caption and a row of real images, drawn one file pixel per grid pixel."""

import matplotlib.image
import numpy as np

from minigen import cli
from minigen.viz import CAPTION_BAND, image_grid, save_grid


def test_a_captioned_grid_holds_the_grid_and_the_real_images_exactly(tmp_path):
    rng = np.random.default_rng(0)
    samples, real = rng.integers(0, 4, (16, 1, 8, 8)), rng.integers(0, 4, (4, 1, 8, 8))
    grid = save_grid(samples, 4, tmp_path / "g.png", nrow=4, scale=2, title="a title", real=real)
    page = matplotlib.image.imread(tmp_path / "g.png")[:, :, 0]
    reference = image_grid(real, 4, 4, 2)[:, :, 0]
    width = page.shape[1]
    assert page.shape[0] == 2 * CAPTION_BAND + grid.shape[0] + reference.shape[0]
    top, left = CAPTION_BAND, (width - grid.shape[1]) // 2
    np.testing.assert_allclose(page[top:top + grid.shape[0], left:left + grid.shape[1]], grid[:, :, 0], atol=1 / 255)
    top, left = 2 * CAPTION_BAND + grid.shape[0], (width - reference.shape[1]) // 2
    np.testing.assert_allclose(page[top:top + reference.shape[0], left:left + reference.shape[1]], reference,
                               atol=1 / 255)
    assert (page[:CAPTION_BAND] < 0.5).any(), "the caption is drawn in the band above the grid"


def test_without_a_caption_the_file_is_the_grid_itself(tmp_path):
    samples = np.random.default_rng(1).integers(0, 2, (4, 1, 8, 8))
    grid = save_grid(samples, 2, tmp_path / "g.png", nrow=2)
    assert matplotlib.image.imread(tmp_path / "g.png").shape[:2] == grid.shape[:2]


def test_the_title_says_which_model_drew_the_grid_how_and_its_classes():
    run = {"family": "ddpm", "data": "digits", "step": 1500}
    options = {"sampler": "ddim", "steps": 50, "eta": 0.0, "guidance": 3.0}
    title = cli._grid_title(run, options, np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    assert title == "ddpm on digits, step 1500: ddim sampler, 50 steps; columns: classes 0-3"
    assert cli._grid_title(run, options, np.array([3, 7])).endswith("classes 3, 7")
    assert cli._grid_title(run, options, None) == "ddpm on digits, step 1500: ddim sampler, 50 steps"

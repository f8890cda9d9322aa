"""Image grids: the tiling, the PNG file, and the callback that leaves them in the run folder."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from tests.conftest import compose_config
from vae_lab.components.images import BORDER_VALUE, LABEL_MARGIN, save_image_grid, tile
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule
from vae_lab.training.callbacks import PRIOR_SAMPLES_FILE, RECONSTRUCTIONS_FILE, ImageGrids


def test_tile_lays_images_out_row_by_row_between_borders():
    images = np.arange(5, dtype=float)[:, None, None] * np.ones((5, 2, 3)) / 10
    grid = tile(images, ncols=3)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1)
    for i in range(5):
        row, col = divmod(i, 3)
        cell = grid[1 + 3 * row : 3 + 3 * row, 1 + 4 * col : 4 + 4 * col]
        assert np.all(cell == i / 10), i
    assert np.all(grid[0] == BORDER_VALUE) and np.all(grid[:, 0] == BORDER_VALUE)
    assert np.all(grid[4:6, 9:12] == BORDER_VALUE)  # the sixth cell is empty


def test_saved_grid_is_a_png_of_enlarged_clipped_grey_images(tmp_path):
    images = np.zeros((3, 8, 8))
    images[1] = 1.0
    images[2] = 7.0  # clipped to white
    path = tmp_path / "grid.png"
    save_image_grid(images, path)
    png = imread(path)
    assert png.shape[:2] == (4 * 8 + 2, 3 * (4 * 8 + 1) + 1)  # 8 x 8 enlarged 4 times
    grey = png[..., 0]
    assert np.all(grey[1:33, 1:33] == 0.0)
    assert np.all(grey[1:33, 34:66] == 1.0) and np.all(grey[1:33, 67:99] == 1.0)


@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    cfg = compose_config()
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return datamodule, VAE.from_config(cfg, datamodule.data_dim)


def fake_trainer(datamodule, run_dir, loggers=(), rank_zero=True) -> SimpleNamespace:
    return SimpleNamespace(
        is_global_zero=rank_zero,
        default_root_dir=str(run_dir),
        datamodule=datamodule,
        loggers=list(loggers),
    )


def digit_in_cell(png: np.ndarray, n: int, margin: int = 0) -> np.ndarray:
    """The 8 x 8 digit in cell n of a grid of 8 columns of digits enlarged 4 times, right of a
    label margin of ``margin`` pixels."""
    row, col = divmod(n, 8)
    top, left = 1 + 33 * row, margin + 1 + 33 * col
    return png[top : top + 32 : 4, left : left + 32 : 4, 0]


def test_callback_writes_prior_samples_and_reconstructions(digits_model, tmp_path):
    datamodule, model = digits_model
    wandb = MagicMock(spec=WandbLogger)
    trainer = fake_trainer(datamodule, tmp_path, [CSVLogger(tmp_path), wandb])
    ImageGrids().on_train_end(trainer, model)

    side = 8 * (4 * 8 + 1) + 1  # 64 digits, 8 x 8 enlarged 4 times, in 8 rows of 8
    samples = imread(tmp_path / PRIOR_SAMPLES_FILE)
    reconstructions = imread(tmp_path / RECONSTRUCTIONS_FILE)
    assert samples.shape[:2] == (side, side)
    assert reconstructions.shape[:2] == (side, side + LABEL_MARGIN)
    # rows of 8 inputs, each above the row of their 8 reconstructions
    test_images = datamodule.splits[2][:32].reshape(32, 8, 8).numpy()
    cells = [8 * (2 * (k // 8)) + k % 8 for k in range(32)]
    originals = np.stack([digit_in_cell(reconstructions, n, LABEL_MARGIN) for n in cells])
    np.testing.assert_allclose(originals, test_images, atol=1 / 255)
    labels = reconstructions[:, : LABEL_MARGIN - 2, 0]  # dark text on white, in every row
    assert labels.max() == 1.0 and all(labels[33 * r : 33 * r + 33].min() < 0.5 for r in range(8))
    logged = {c.kwargs["key"]: c.kwargs["images"] for c in wandb.log_image.call_args_list}
    assert logged == {
        "prior_samples": [str(tmp_path / PRIOR_SAMPLES_FILE)],
        "reconstructions": [str(tmp_path / RECONSTRUCTIONS_FILE)],
    }


def test_callback_writes_nothing_on_other_ranks(digits_model, tmp_path):
    datamodule, model = digits_model
    ImageGrids().on_train_end(fake_trainer(datamodule, tmp_path, rank_zero=False), model)
    assert list(tmp_path.iterdir()) == []

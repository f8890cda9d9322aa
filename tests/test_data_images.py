"""data=images: a folder of image files or an .npz the test writes, its splits and shapes, one
line naming the file for anything unreadable or of the wrong shape, and a short run."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from PIL import Image

from tests.conftest import SAMPLE_QUALITY_STAGE, compose_config
from vae_lab.components.data import DataFileError, Images
from vae_lab.components.images import image_batch, save_image_grid
from vae_lab.config.validation import ConfigError
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute
from vae_lab.training.build import build_datamodule

RNG = np.random.default_rng(0)


def write_folder(folder: Path, count: int, size: tuple[int, int] = (6, 5), mode: str = "L"):
    """``count`` random 8-bit PNGs of height x width ``size``, some in a sub-folder."""
    channels = {"L": (), "RGB": (3,)}[mode]
    for i in range(count):
        pixels = RNG.integers(0, 256, (*size, *channels), dtype=np.uint8)
        path = folder / ("sub" if i % 2 else "") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode).save(path)


def setup(path: Path, **kwargs) -> Images:
    datamodule = Images(str(path), binarize=False, **kwargs)
    datamodule.setup()
    return datamodule


def test_a_grey_folder_is_read_at_8_bits_and_split_by_seed(tmp_path):
    write_folder(tmp_path, 20)
    (tmp_path / "notes.txt").write_text("not an image: skipped")
    datamodule = setup(tmp_path, val_fraction=0.2, test_fraction=0.1)
    train, val, test = datamodule.splits
    assert (len(train), len(val), len(test)) == (14, 4, 2)
    assert datamodule.image_shape == (6, 5) and datamodule.data_dim == 30
    assert datamodule.pixel_levels == 256
    levels = train * 255
    assert levels.equal(levels.round()) and 0 <= train.min() and train.max() <= 1
    again = setup(tmp_path, val_fraction=0.2, test_fraction=0.1)
    assert all(a.equal(b) for a, b in zip(datamodule.splits, again.splits, strict=True))
    other = setup(tmp_path, val_fraction=0.2, test_fraction=0.1, split_seed=1)
    assert not other.splits[2].equal(test)


def test_a_colour_folder_is_channel_first(tmp_path):
    write_folder(tmp_path, 4, size=(3, 2), mode="RGB")
    pixels = np.asarray(Image.open(tmp_path / "000.png"))  # [H, W, C]
    datamodule = Images(str(tmp_path))
    assert datamodule.image_shape == (3, 3, 2) and datamodule.data_dim == 18
    first = datamodule.arrays()["train"][0]
    assert np.array_equal(first, pixels.transpose(2, 0, 1))


def test_a_folder_mixing_grey_and_colour_is_colour(tmp_path):
    write_folder(tmp_path, 2, size=(3, 2), mode="RGB")
    grey = RNG.integers(0, 256, (3, 2), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "zzz.png")  # last in path order
    images = Images(str(tmp_path)).arrays()["train"]
    assert images.shape == (3, 3, 3, 2) and all(np.array_equal(c, grey) for c in images[2])


def test_a_16_bit_image_is_named(tmp_path):
    Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataFileError, match="deep.png is a I;16 image: only 8-bit images"):
        Images(str(tmp_path)).arrays()


def test_mixed_sizes_name_both_files(tmp_path):
    write_folder(tmp_path, 3)
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DataFileError) as err:
        Images(str(tmp_path)).arrays()
    message = f"{tmp_path / 'odd.png'} is 7x5 (H x W), but {tmp_path / '000.png'} is 6x5"
    assert message in str(err.value)


def test_a_corrupt_image_is_named(tmp_path):
    write_folder(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFileError, match=f"{tmp_path / 'broken.png'} is not a readable image"):
        setup(tmp_path)


@pytest.mark.parametrize(
    ("layout", "image_shape"),
    [((10, 4, 3), (4, 3)), ((10, 4, 3, 3), (3, 4, 3)), ((10, 3, 4, 2), (3, 4, 2))],
)
def test_an_npz_of_train_val_and_test(tmp_path, layout, image_shape):
    path = tmp_path / "data.npz"
    arrays = {k: RNG.integers(0, 256, (n, *layout[1:]), dtype=np.uint8)
              for k, n in (("train", 10), ("val", 3), ("test", 4))}  # fmt: skip
    np.savez(path, **arrays)
    datamodule = setup(path)
    assert datamodule.image_shape == image_shape
    assert [len(s) for s in datamodule.splits] == [10, 3, 4]
    channel_first = arrays["test"] if len(layout) == 3 or layout[1] == 3 else (
        arrays["test"].transpose(0, 3, 1, 2))  # fmt: skip
    expected = channel_first.reshape(4, -1) / 255.0
    np.testing.assert_allclose(datamodule.splits[2].numpy(), expected, rtol=1e-6)


def test_an_npz_of_train_alone_is_split_and_floats_off_the_grid_are_real_values(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, train=RNG.random((40, 4, 4)).astype(np.float32))
    datamodule = setup(path, val_fraction=0.25, test_fraction=0.25)
    assert [len(s) for s in datamodule.splits] == [20, 10, 10]
    assert datamodule.pixel_levels is None
    np.savez(path, train=RNG.integers(0, 256, (40, 4, 4)) / 255.0)  # float64 on the grid
    assert Images(str(path)).pixel_levels == 256


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((2, 3, 3))}, "has no 'train' array (it holds x_train)"),
        ({"train": np.zeros((2, 9))}, "['train'] has shape [2, 9]: data=images reads [N, H, W]"),
        ({"train": np.full((2, 3, 3), 2.0)}, "['train'] holds values outside [0, 1]"),
        ({"train": np.full((2, 3, 3), 300)}, "['train'] holds integers outside 0..255"),
        (
            {"train": np.zeros((2, 3, 3)), "test": np.zeros((2, 4, 4))},
            "['test'] holds images of shape [1, 4, 4], but 'train' of [1, 3, 3]",
        ),
    ],
)
def test_a_wrong_npz_is_one_line_naming_it(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFileError) as err:
        setup(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a zip", "is not a readable .npz"), (None, "does not exist")],
)
def test_an_unreadable_or_missing_path_is_named(tmp_path, content, message):
    path = tmp_path / "data.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataFileError, match=message):
        setup(path)


@pytest.mark.parametrize("value, shown", [("1.5", "1.5"), ("false", "False")])
def test_fractions_are_checked_with_their_key(tmp_path, value, shown):
    """Out of [0, 1), or a switch where a number belongs (Python counts False as 0, in range)."""
    cfg = compose_config(["data=images", f"data.path={tmp_path}", f"data.test_fraction={value}"])
    with pytest.raises(
        ConfigError, match=rf"^data\.test_fraction={shown} is invalid: must be a number"
    ):
        build_datamodule(cfg)


def test_a_short_run_on_an_npz_with_the_discretized_logistic(tmp_path, caplog):
    """The whole run on 8-bit images: test/bits_per_dim beside test/log_px; the sample-quality
    stage skips a dataset without labels in one line."""
    path = tmp_path / "data.npz"
    np.savez(path, train=RNG.integers(0, 256, (300, 6, 6), dtype=np.uint8))
    overrides = ["data=images", f"data.path={path}", "likelihood=discretized_logistic",
                 SAMPLE_QUALITY_STAGE]  # fmt: skip
    cfg = compose_config(overrides)
    with caplog.at_level(logging.INFO):
        execute(cfg, tmp_path / "run", {"data": "images"})
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["test/bits_per_dim"] == pytest.approx(
        -metrics["test/log_px"] / (36 * math.log(2)), rel=1e-12
    )
    assert "test/fid_samples" not in metrics
    skipped = [m for r in caplog.records if "sample quality: skip" in (m := r.getMessage())]
    assert skipped == ["sample quality: skipped, no class labels of Images are read to train "
                       "the feature classifier on"]  # fmt: skip


@pytest.mark.parametrize(
    ("image_shape", "batch"),
    [((4, 3), (2, 4, 3)), ((1, 4, 3), (2, 4, 3)), ((3, 2, 2), (2, 3, 2, 2)), ((12,), (2, 1, 12))],
)
def test_grids_unflatten_grey_colour_and_vectors(tmp_path, image_shape, batch):
    """A colour grid is an RGB PNG whose cells are the images, channels last."""
    flat = torch.rand(2, 12)
    images = image_batch(flat, image_shape)
    assert images.shape == batch
    save_image_grid(images, tmp_path / "grid.png")
    grid = imread(tmp_path / "grid.png")
    assert grid.ndim == 3 and grid.shape[-1] == 4  # written as RGBA
    if len(batch) == 4:
        cell = grid[1 : 1 + 32, 1 : 1 + 32, :3]  # 2x2 pixels enlarged 16 times
        expected = images[0].transpose(1, 2, 0).repeat(16, 0).repeat(16, 1)
        np.testing.assert_allclose(cell, expected, atol=1 / 255)

"""``data=images data.path=PATH``: a researcher's own images, as a folder of image files or an
``.npz`` (``vae_lab.components.data.image_files`` reads both).

A folder's images (grey or colour, one size) are all training data; an ``.npz`` holds a
``train`` array and optionally ``val`` and ``test``. A split that is absent is drawn from the
training images with ``split_seed``: ``test_fraction`` of them for the test split, then
``val_fraction`` for the validation split. Images are flattened channel-first, C x H x W, to
vectors in [0, 1]; ``image_shape`` is (H, W) for grey images and (C, H, W) for colour ones.
Images read from files are 8-bit, which every likelihood takes, the discretized logistic
included; an ``.npz`` of floats off the grid k/255 takes the Bernoulli or Gaussian one.

The data have no class labels, so the sample-quality stage, whose classifier is trained on
labels, skips them with one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vae_lab.components.data.datamodules import FRACTION, InMemoryDataModule, SeededSplit, Splits
from vae_lab.components.data.files import DataFileError
from vae_lab.components.data.image_files import read_folder, read_npz
from vae_lab.config.validation import require_all

SPLITS = ("train", "val", "test")


class Images(InMemoryDataModule):
    """The images at ``path`` (module docstring); read once, when first asked for."""

    name = "images"

    def __init__(
        self,
        path: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_all(FRACTION, val_fraction=val_fraction, test_fraction=test_fraction)
        self.path = Path(path).expanduser()
        self._split = SeededSplit(val_fraction, test_fraction, split_seed)
        self._arrays: dict[str, np.ndarray] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The splits the files hold, as images [N, C, H, W]."""
        if self._arrays is None:
            if self.path.is_dir():
                self._arrays = {"train": read_folder(self.path)}
            elif self.path.suffix == ".npz" and self.path.is_file():
                self._arrays = read_npz(self.path, SPLITS)
            elif not self.path.exists():
                raise DataFileError(f"data.path={self.path} does not exist")
            else:
                raise DataFileError(
                    f"data.path={self.path} is neither a folder of images nor an .npz"
                )
        return self._arrays

    @property
    def image_shape(self) -> tuple[int, ...]:
        channels, height, width = self.arrays()["train"].shape[1:]
        return (height, width) if channels == 1 else (channels, height, width)

    @property
    def pixel_levels(self) -> int | None:
        """256 where every split is 8-bit, None (real values) where one is not."""
        return 256 if all(a.dtype == np.uint8 for a in self.arrays().values()) else None

    def load_splits(self) -> Splits:
        data = {key: vectors(array) for key, array in self.arrays().items()}
        train = data["train"]
        train, val, test = self._split(train, val="val" not in data, test="test" not in data)
        return train, data.get("val", val), data.get("test", test)


def vectors(images: np.ndarray) -> Tensor:
    """Images [N, C, H, W] as float32 vectors [N, C*H*W] in [0, 1]."""
    flat = torch.from_numpy(np.ascontiguousarray(images)).flatten(1)
    return flat.float() / 255.0 if images.dtype == np.uint8 else flat.float()

"""``data=omniglot``: the two small background sets of Omniglot (Lake, Salakhutdinov &
Tenenbaum 2015, "Human-level concept learning through probabilistic program induction"),
``images_background_small1.zip`` and ``images_background_small2.zip`` of brendenlake/omniglot,
under ``data.root/omniglot_lake_small/``.

They are NOT the 28x28 Omniglot of VAE papers (Burda et al. 2016's ``chardata.mat``, 24,345
training and 8,070 test images of 50 alphabets): they hold 2,720 and 3,120 binary 105x105
strokes of 5 alphabets each, 4,840 distinct images once the 1,000 the two sets share (their
Greek and Latin alphabets) are counted once. Each image is inverted (strokes 1, background
0, as MNIST's ink), area-averaged to 28x28 (Pillow's box filter: an 8-bit grey level, the
fraction of stroke in the cell) and, under a Bernoulli likelihood, binarised like MNIST
(``vae_lab.components.data.datamodules``). The split is drawn with ``split_seed``:
``test_fraction`` of the images for the test split, ``val_fraction`` for validation, the rest
for training; the same drawer's images of a character fall on both sides of it. The class
labels are the 242 characters (alphabet and character), for the sample-quality classifier.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import torch

from vae_lab.components.data.datamodules import (
    FRACTION,
    FileDataModule,
    SeededSplit,
    Splits,
)
from vae_lab.components.data.files import DataFileError, RemoteFile
from vae_lab.components.data.image_files import decode_image
from vae_lab.config.validation import require_all

SOURCE = (
    "https://raw.githubusercontent.com/brendenlake/omniglot/"
    "057f034baf2ecb8530bc5710e5a23584d2a519cc/python"
)
SHA256 = {
    "images_background_small1.zip": (
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"
    ),
    "images_background_small2.zip": (
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"
    ),
}
SIZE = 28


def read_strokes(content: bytes, name: str) -> dict[str, np.ndarray]:
    """The PNGs of one archive, by their path below its top folder (alphabet/character/file),
    downsampled to SIZE x SIZE and inverted: uint8 [SIZE, SIZE], strokes bright."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        images = {}
        for member in sorted(m for m in archive.namelist() if m.endswith(".png")):
            with archive.open(member) as file:
                pixels = decode_image(file, f"{name}:{member}", size=SIZE)[0]
            images[member.split("/", 1)[1]] = 255 - pixels
    except (zipfile.BadZipFile, OSError) as err:
        raise DataFileError(f"{name} is not a readable zip archive ({err})") from err
    return images


class Omniglot(FileDataModule):
    """The small background sets of Omniglot at 28x28 (module docstring)."""

    name = "omniglot"
    image_shape = (SIZE, SIZE)
    pixel_levels = 256

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_all(FRACTION, val_fraction=val_fraction, test_fraction=test_fraction)
        self.files = {
            fname: RemoteFile("omniglot_lake_small", fname, f"{SOURCE}/{fname}", sha)
            for fname, sha in SHA256.items()
        }
        self._split = SeededSplit(val_fraction, test_fraction, split_seed)

    def images(self) -> dict[str, np.ndarray]:
        """Every distinct image by its path alphabet/character/file, the shared ones once."""
        images: dict[str, np.ndarray] = {}
        for fname in self.files:
            images |= read_strokes(self.read(fname), fname)
        return dict(sorted(images.items()))

    def load_splits(self) -> Splits:
        images = self.images()
        pixels = np.stack(list(images.values())).reshape(len(images), -1)
        return self._split(torch.from_numpy(pixels).float() / 255.0)

    def load_labels(self) -> Splits:
        """The character of each image, numbered in sorted order of alphabet/character."""
        characters = [path.rsplit("/", 1)[0] for path in self.images()]
        number = {name: i for i, name in enumerate(sorted(set(characters)))}
        return self._split(torch.tensor([number[name] for name in characters]))

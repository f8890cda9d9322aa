"""Image datasets as LightningDataModules holding their splits as tensors in memory.

Images are flattened to vectors in [0, 1]. With a Bernoulli likelihood (``binarize=True``)
grey-level datasets are binarised: the training set afresh at every batch, on the device,
x ~ Bernoulli(pixel) (dynamic binarisation, Salakhutdinov & Murray 2008), and the validation
and test sets once with the fixed ``binarize_seed`` so that every evaluation sees the same
binary images. With a Gaussian or discretized logistic likelihood images stay grey-level; a
likelihood of discrete grey levels (``grey_levels``: 256 for the discretized logistic) takes
only data whose values lie on its grid k/(L-1), which ``setup`` checks in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from vae_lab.components.data.batches import BatchOrder, TensorBatches
from vae_lab.components.data.files import DataFileError, RemoteFile, default_root, ensure, fetch
from vae_lab.config.validation import POSITIVE_INT, ConfigError, Rule, is_number, require

Splits = tuple[Tensor, Tensor, Tensor]

#: the share of a dataset drawn for a held-out split
FRACTION: Rule = (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")


def binarize(p: Tensor) -> Tensor:
    """x ~ Bernoulli(p) elementwise, as x = 1[u < p] with u ~ U(0, 1): torch.bernoulli's
    distribution, drawn with one vectorised uniform draw where its CPU kernel draws element by
    element (about three times faster on an MNIST batch; docs/speed.md, "Where the time goes"),
    compared in place so that u's storage holds x (no boolean mask to allocate and convert)."""
    return torch.rand_like(p).lt_(p)


@dataclass(frozen=True)
class SeededSplit:
    """(train, val, test) of one set: the first ``round(test_fraction n)`` of an order drawn
    from ``seed`` are the test split, the next ``round(val_fraction n)`` the validation split,
    the rest the training; a split the data already has (``val``/``test`` false) gets none."""

    val_fraction: float
    test_fraction: float
    seed: int

    def __call__(self, values: Tensor, val: bool = True, test: bool = True) -> Splits:
        num_val = round(self.val_fraction * len(values)) if val else 0
        num_test = round(self.test_fraction * len(values)) if test else 0
        order = torch.randperm(len(values), generator=torch.Generator().manual_seed(self.seed))
        test_rows, val_rows, train_rows = (
            order[:num_test],
            order[num_test : num_test + num_val],
            order[num_test + num_val :],
        )
        return values[train_rows], values[val_rows], values[test_rows]


def levels_text(levels: int | None) -> str:
    if levels is None:
        return "real values"
    return "binary values" if levels == 2 else f"{levels} grey levels k/{levels - 1}"


class InMemoryDataModule(pl.LightningDataModule):
    """Train/val/test tensors [N, X] in [0, 1]; subclasses say how to load them.

    ``pixel_levels`` is the number of levels L of the values k/(L-1) the data take (None: real
    values); ``grey_levels``, the grid a likelihood of discrete levels needs (None: any data).
    """

    name = "this dataset"
    image_shape: tuple[int, ...]
    already_binary = False
    pixel_levels: int | None = None

    def __init__(
        self,
        batch_size: int = 100,
        eval_batch_size: int = 100,
        binarize: bool = True,
        binarize_seed: int = 0,
        seed: int = 0,
        grey_levels: int | None = None,
    ) -> None:
        super().__init__()
        require("batch_size", batch_size, POSITIVE_INT)
        require("eval_batch_size", eval_batch_size, POSITIVE_INT)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.binarize = binarize and not self.already_binary
        self.binarize_seed = binarize_seed
        self.seed = seed
        self.grey_levels = grey_levels
        self.splits: Splits | None = None

    @property
    def data_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def load_splits(self) -> Splits:
        raise NotImplementedError

    def load_labels(self) -> Splits:
        """The class labels of the train/val/test splits (for the sample-quality classifier)."""
        raise DataFileError(f"{type(self).__name__} has no class labels")

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        train, val, test = self.load_splits()
        self.check_levels()
        if not (len(train) and len(val) and len(test)):
            raise ConfigError(
                f"the data has {len(train)} training, {len(val)} validation and {len(test)} test "
                "points: each split needs some (data.val_size, data.val_fraction, "
                "data.test_fraction)"
            )
        if self.binarize:
            generator = torch.Generator().manual_seed(self.binarize_seed)
            val = torch.bernoulli(val, generator=generator)
            test = torch.bernoulli(test, generator=generator)
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        self.splits = tuple(s.float().to(device) for s in (train, val, test))

    def check_levels(self) -> None:
        """A ConfigError unless the data's values lie on the likelihood's grid k/(L-1): L - 1
        a multiple of the data's own L - 1 (binary data lie on every grid)."""
        need, have = self.grey_levels, self.pixel_levels
        if need is None or (have is not None and (need - 1) % (have - 1) == 0):
            return
        raise ConfigError(
            f"the likelihood models {levels_text(need)}, but data={self.name} holds "
            f"{levels_text(have)}: use likelihood=bernoulli or likelihood=gaussian, or 8-bit "
            "data (data=mnist, fashion_mnist, omniglot, images)"
        )

    def _batches(self, data: Tensor, batch_size: int, shuffle: bool) -> TensorBatches:
        rank, world = (0, 1)
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        order = BatchOrder(data.shape[0], batch_size, shuffle, self.seed, rank, world)
        return TensorBatches(data, order)

    def train_dataloader(self) -> TensorBatches:
        return self._batches(self.splits[0], self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches(self.splits[1], self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches(self.splits[2], self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        if self.binarize and self.trainer is not None and self.trainer.training:
            return binarize(batch)
        return batch


class Digits(InMemoryDataModule):
    """scikit-learn's 1,797 8x8 handwritten digits (no download), split with ``split_seed``."""

    name = "digits"
    image_shape = (8, 8)
    pixel_levels = 17  # values 0..16

    def __init__(
        self, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self._split = SeededSplit(val_fraction, test_fraction, split_seed)

    def load_splits(self) -> Splits:
        from sklearn.datasets import load_digits

        return self._split(torch.from_numpy(load_digits().data).float() / 16.0)

    def load_labels(self) -> Splits:
        from sklearn.datasets import load_digits

        return self._split(torch.from_numpy(load_digits().target))


class FileDataModule(InMemoryDataModule):
    """A dataset read from files under ``root`` (default ``$VAE_LAB_DATA``)."""

    files: dict[str, RemoteFile]

    def __init__(
        self, root: str | None = None, download: bool = False, mirror: str | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.root = root or default_root()
        self.download = download
        self.mirror = mirror

    def prepare_data(self) -> None:
        for file in self.files.values():
            ensure(file, self.root, self.download, self.mirror)

    def read(self, key: str) -> bytes:
        return fetch(self.files[key], self.root, self.download, self.mirror)


def parse_idx_images(content: bytes, name: str) -> Tensor:
    """An IDX image file (magic 0x803, big-endian count, rows, cols, uint8 pixels): [N, H*W]."""
    magic, count, rows, cols = np.frombuffer(content[:16], ">i4")
    if magic != 0x803 or len(content) != 16 + count * rows * cols:
        raise DataFileError(f"{name} is not an IDX image file")
    pixels = np.frombuffer(content, np.uint8, offset=16).reshape(count, rows * cols)
    return torch.from_numpy(pixels.copy())


IDX_SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        {
            "train": (
                "train-images-idx3-ubyte.gz",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "test": (
                "t10k-images-idx3-ubyte.gz",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
        },
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        {
            "train": (
                "train-images-idx3-ubyte.gz",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "test": (
                "t10k-images-idx3-ubyte.gz",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
        },
    ),
}


#: the label files (IDX, magic 0x801) of each IDX dataset: split -> (file name, sha256)
IDX_LABELS = {
    "mnist": {
        "train": (
            "train-labels-idx1-ubyte.gz",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        "test": (
            "t10k-labels-idx1-ubyte.gz",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    },
    "fashion_mnist": {
        "train": (
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "test": (
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
}


def parse_idx_labels(content: bytes, name: str) -> Tensor:
    """An IDX label file (magic 0x801, big-endian count, uint8 labels): [N]."""
    magic, count = np.frombuffer(content[:8], ">i4")
    if magic != 0x801 or len(content) != 8 + count:
        raise DataFileError(f"{name} is not an IDX label file")
    return torch.from_numpy(np.frombuffer(content, np.uint8, offset=8).astype(np.int64))


class IDXImages(FileDataModule):
    """MNIST or Fashion-MNIST from the IDX files: 60,000 train images split into
    ``60000 - val_size`` for training and the last ``val_size`` for validation; 10,000 test."""

    image_shape = (28, 28)
    pixel_levels = 256

    def __init__(self, name: str = "mnist", val_size: int = 10000, **kwargs) -> None:
        super().__init__(**kwargs)
        base, files = IDX_SOURCES[name]
        self.files = {
            split: RemoteFile(name, fname, f"{base}/{fname}", sha)
            for split, (fname, sha) in files.items()
        }
        self.val_size = val_size
        self.name = name

    def load_splits(self) -> Splits:
        train = parse_idx_images(self.read("train"), self.files["train"].name).float() / 255.0
        test = parse_idx_images(self.read("test"), self.files["test"].name).float() / 255.0
        return (*self.hold_out(train), test)

    def hold_out(self, train: Tensor) -> tuple[Tensor, Tensor]:
        """The 60,000 training images (or labels) less the last ``val_size``, and those."""
        if not 0 < self.val_size < len(train):
            raise ConfigError(
                f"data.val_size={self.val_size} is invalid: must be between 1 and "
                f"{len(train) - 1} (of the {len(train)} training images)"
            )
        cut = len(train) - self.val_size
        return train[:cut], train[cut:]

    def load_labels(self) -> Splits:
        """Read on request only: training needs no label files."""
        base = IDX_SOURCES[self.name][0]
        labels = {}
        for split, (fname, sha) in IDX_LABELS[self.name].items():
            file = RemoteFile(self.name, fname, f"{base}/{fname}", sha)
            labels[split] = parse_idx_labels(
                fetch(file, self.root, self.download, self.mirror), fname
            )
        return (*self.hold_out(labels["train"]), labels["test"])


BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
BINARIZED_MNIST_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}


class BinarizedMNIST(FileDataModule):
    """The fixed binarisation of Larochelle & Murray (2011): 50,000 / 10,000 / 10,000 images,
    text files of 784 space-separated 0/1 values per line."""

    name = "binarized_mnist"
    image_shape = (28, 28)
    already_binary = True
    pixel_levels = 2

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.files = {
            split: RemoteFile(
                "binarized_mnist",
                f"binarized_mnist_{split}.amat.gz",
                f"{BINARIZED_MNIST_URL}/binarized_mnist_{split}.amat",
                sha,
            )
            for split, sha in BINARIZED_MNIST_SHA256.items()
        }

    def load_splits(self) -> Splits:
        def parse(split: str) -> Tensor:
            chars = np.frombuffer(self.read(split), np.uint8)
            return torch.from_numpy(chars.reshape(-1, 2 * 784)[:, ::2] - ord("0"))

        return parse("train"), parse("valid"), parse("test")

"""Datasets as in-memory LightningDataModules."""

from vae_lab.components.data.datamodules import (
    BinarizedMNIST,
    Digits,
    IDXImages,
    InMemoryDataModule,
    binarize,
)
from vae_lab.components.data.files import DataFileError
from vae_lab.components.data.images import Images
from vae_lab.components.data.linear_gaussian import LinearGaussian
from vae_lab.components.data.omniglot import Omniglot

__all__ = [
    "BinarizedMNIST",
    "DataFileError",
    "Digits",
    "IDXImages",
    "Images",
    "InMemoryDataModule",
    "LinearGaussian",
    "Omniglot",
    "binarize",
]

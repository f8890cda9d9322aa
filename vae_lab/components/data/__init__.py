"""Datasets as in-memory LightningDataModules."""

from vae_lab.components.data.datamodules import (
    BinarizedMNIST,
    Digits,
    IDXImages,
    InMemoryDataModule,
    binarize,
)
from vae_lab.components.data.files import DataFileError
from vae_lab.components.data.linear_gaussian import LinearGaussian

__all__ = [
    "BinarizedMNIST",
    "DataFileError",
    "Digits",
    "IDXImages",
    "InMemoryDataModule",
    "LinearGaussian",
    "binarize",
]

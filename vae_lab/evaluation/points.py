"""Where and on what the pipeline evaluates: the device, and the points of a split."""

from __future__ import annotations

import torch
from torch import Tensor

from vae_lab.components.data import InMemoryDataModule
from vae_lab.config.validation import ConfigError

SPLITS = ("train", "val", "test")


def eval_device(name: str) -> torch.device:
    """``eval.device``: auto is the GPU where torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"eval.device={name}, but torch sees no GPU here: use eval.device=cpu")
    return torch.device(name)


def select_points(datamodule: InMemoryDataModule, split: str, num: int | None, seed: int) -> Tensor:
    """A seeded subset of ``num`` points of the split (all of it for None), binarised with the
    datamodule's fixed seed where it binarises (the training split is otherwise binarised
    afresh at every batch)."""
    data = datamodule.splits[SPLITS.index(split)]
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x = data[order[:num]]
    if split == "train" and datamodule.binarize:
        generator = torch.Generator().manual_seed(datamodule.binarize_seed)
        x = torch.bernoulli(x, generator=generator)
    return x

"""Batches of an in-memory tensor, drawn by index: no per-item Python work, no workers.

A ``torch.utils.data.DataLoader`` over a ``TensorDataset`` indexes and collates one item at a
time; here a batch is one ``x[indices]``. Each process of a distributed run takes the
interleaved shard ``rank::world_size`` of the (shuffled) order, so shards are disjoint and
cover every datapoint exactly once: the last batch is kept, never padded. Shuffled (training)
batches drop the remainder of n / world_size so every process takes the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


class TensorBatches:
    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def _usable(self) -> int:
        n = self.data.shape[0]
        return n - n % self.world_size if self.shuffle else n

    def _shard_size(self) -> int:
        return len(range(self.rank, self._usable(), self.world_size))

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        n = self.data.shape[0]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        self.epoch += 1
        order = order[: self._usable()][self.rank :: self.world_size].to(self.data.device)
        for start in range(0, order.shape[0], self.batch_size):
            yield self.data[order[start : start + self.batch_size]]

"""Batches of an in-memory tensor, drawn by index: no per-item Python work, no workers.

A ``torch.utils.data.DataLoader`` over a ``TensorDataset`` indexes and collates one item at a
time; here a batch is one ``x[indices]``. ``BatchOrder`` decides which indices form each batch
of an epoch and which process of a distributed run takes it:

* training (shuffled): a permutation seeded by ``stream_seed(seed, epoch)``; each process takes the
  interleaved shard ``rank::world_size`` of it, the remainder of n / world_size dropped so every
  process takes the same number of steps (each process's batch is ``batch_size``).
* evaluation (in order): the data is cut into consecutive batches of ``batch_size`` and process
  ``rank`` takes batches ``rank, rank + world_size, ...``. Every datapoint is seen exactly once,
  the last batch is kept and never padded, and a batch holds the same datapoints whatever the
  number of processes: global batch ``i`` starts at datapoint ``i * batch_size``. The module
  seeds its test-time sampling by that global index (``stream_seed(seed, "test", i)``), so
  test metrics do not depend on the number of processes.

``stream_seed`` names each random stream of a run by a tuple (the run's seed, what the stream
is for, its index) hashed to a 64-bit seed: streams of different tuples are unrelated. A sum
would not do: with ``seed + epoch``, seed 1's first epoch had the order of seed 0's second,
and every replicate ran through its neighbour's sequence of orders one epoch apart.

Lightning calls ``sampler.set_epoch(epoch)`` before each epoch (the ``DistributedSampler``
protocol), so the order is a function of the epoch and survives a resume from a checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager

import torch
from torch import Tensor


def stream_seed(*parts: int | str) -> int:
    """A 64-bit generator seed for the random stream named by ``parts``, e.g. (seed, epoch)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def forked_rng(device: torch.device) -> AbstractContextManager:
    """torch's random streams of the CPU and of ``device`` restored as they were after the
    block: draws inside it (a test stream, an image grid) leave the training stream alone."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


class BatchOrder:
    def __init__(
        self,
        num_items: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            per_process = self.num_items // self.world_size
            return math.ceil(per_process / self.batch_size)
        return len(range(self.rank, math.ceil(self.num_items / self.batch_size), self.world_size))

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_items, generator=generator)
            usable = self.num_items - self.num_items % self.world_size
            shard = order[:usable][self.rank :: self.world_size]
            yield from shard.split(self.batch_size)
        else:
            batches = torch.arange(self.num_items).split(self.batch_size)
            yield from batches[self.rank :: self.world_size]


class TensorBatches:
    """Iterates ``data[indices]`` for the index batches of ``sampler``.

    ``sampler`` and ``batch_sampler`` follow the attributes of ``torch.utils.data.DataLoader``
    that Lightning reads (to call ``set_epoch`` and to check shuffling).
    """

    batch_sampler = None

    def __init__(self, data: Tensor, sampler: BatchOrder) -> None:
        self.data = data
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Tensor]:
        for indices in self.sampler:
            yield self.data[indices.to(self.data.device)]

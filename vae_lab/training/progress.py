"""The training progress bar: Lightning's, labelled with the job's epochs and its time left.

Lightning's bar counts the steps of one epoch and its ETA is that epoch's; a job of
``experiment=inference_gap`` has 3,280 of them, so its bar reads ``Epoch 348/3280 (4:05:12
left)``. The time left is

    (E - e) * mean(t_{i+1} - t_i),

E the job's epochs, e the current one, t_i the starts of this process's epochs (a resumed job
counts from its checkpoint's epoch). The first epoch's time is left out of the mean once there
are others, for it holds one-off costs (the first batches, compilation); the epochs that
validate and write checkpoints count theirs, so the mean carries them at the run's cadence.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm


def seconds_left(epoch: int, max_epochs: int, starts: Sequence[float]) -> float | None:
    """The job's remaining epochs, this one included, times the mean epoch time so far (the
    first epoch's left out once there are others); None before an epoch has ended."""
    durations = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    if not durations:
        return None
    typical = durations[1:] or durations
    return (max_epochs - epoch) * statistics.fmean(typical)


def epoch_label(epoch: int, max_epochs: int | None, starts: Sequence[float]) -> str:
    """``Epoch 348/3280 (4:05:12 left)``; ``Epoch 348`` when the job has no epoch limit."""
    if max_epochs is None or max_epochs < 0:
        return f"Epoch {epoch}"
    left = seconds_left(epoch, max_epochs, starts)
    label = f"Epoch {epoch}/{max_epochs}"
    return label if left is None else f"{label} ({tqdm.format_interval(left)} left)"


class JobProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar whose label gives the job's epochs and time left (``epoch_label``)."""

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.epoch_starts: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.epoch_starts.append(time.perf_counter())
        label = epoch_label(trainer.current_epoch, trainer.max_epochs, self.epoch_starts)
        self.train_progress_bar.set_description(label)

"""The training progress: Lightning's bar, labelled with the job's epochs and its time left, on a
terminal; a line now and then in a log file.

Lightning's bar counts the steps of one epoch and its ETA is that epoch's; a job of
``experiment=inference_gap`` has 3,280 of them, so its bar reads ``Epoch 348/3280 (4:05:12
left)``. The time left is

    (E - e) * mean(t_{i+1} - t_i),

E the job's epochs, e the current one, t_i the starts of this process's epochs (a resumed job
counts from its checkpoint's epoch). The first epoch's time is left out of the mean once there
are others, for it holds one-off costs (first allocations; with eval.compile, compiling); the
epochs that validate and write checkpoints count theirs, so the mean carries them at the run's
cadence.

Where the output is not a terminal (``nohup``, a cluster job's output file) a bar's redraws
would fill the file, some 20 MB over such a job; there the bar is off and a line is printed at
the end of an epoch, at most every ``line_every_s`` seconds and at the last epoch.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from tqdm import tqdm

from vae_lab.config.validation import (
    BOOLEAN,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    optional,
    require,
)


def intervals(starts: Sequence[float]) -> list[float]:
    """The times between consecutive starts: each epoch's wall time, from its start to the next."""
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def seconds_left(epoch: int, max_epochs: int, starts: Sequence[float]) -> float | None:
    """The job's remaining epochs, this one included, times the mean epoch time so far (the
    first epoch's left out once there are others); None before an epoch has ended."""
    durations = intervals(starts)
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


def progress_line(label: str, metrics: Mapping[str, Any]) -> str:
    """``Epoch 349/3280 (4:05:07 left): train/loss=88.9, val/elbo=-98.3``."""
    shown = ", ".join(
        f"{name}={tqdm.format_num(value) if isinstance(value, float) else value}"
        for name, value in metrics.items()
    )
    return f"{label}: {shown}" if shown else label


class JobProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar labelled with the job's epochs and time left (``epoch_label``) where
    ``bar`` is true (None: where the output is a terminal); otherwise no bar, and a
    ``progress_line`` at the end of an epoch at most every ``line_every_s`` seconds and at the
    job's last epoch."""

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        bar: bool | None = None,
        line_every_s: float = 60.0,
    ) -> None:
        require("refresh_rate", refresh_rate, NON_NEGATIVE_INT)  # 0: no bar (Lightning's)
        require("bar", bar, optional(BOOLEAN))
        require("line_every_s", line_every_s, NON_NEGATIVE_NUMBER)
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.bar = bar
        self.line_every_s = line_every_s
        self.lines = False
        self.epoch_starts: list[float] = []
        self.last_line_at: float | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.lines = not (sys.stdout.isatty() if self.bar is None else self.bar)
        if self.lines:
            self.disable()

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.epoch_starts.append(time.perf_counter())
        label = epoch_label(trainer.current_epoch, trainer.max_epochs, self.epoch_starts)
        self.train_progress_bar.set_description(label)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not (self.lines and trainer.is_global_zero):
            return
        now, done = time.perf_counter(), trainer.current_epoch + 1
        last = done == trainer.max_epochs
        if self.last_line_at is None or now - self.last_line_at >= self.line_every_s or last:
            label = epoch_label(done, trainer.max_epochs, [*self.epoch_starts, now])
            print(progress_line(label, self.get_metrics(trainer, pl_module)), flush=True)
            self.last_line_at = now

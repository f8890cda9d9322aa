"""Deliberate faults, to check how a run or a sweep meets them: ``+fault=nan_loss``,
``+fault=sigterm``, ``+fault=sigkill``."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace

import pytorch_lightning as pl


class InjectNaN(pl.Callback):
    """From training step ``at_step`` on, the objective's training loss is NaN.

    The module then raises ``FloatingPointError`` ("training loss is nan at step N"), as a
    diverging run would, whatever the objective.
    """

    def __init__(self, at_step: int = 0) -> None:
        self.at_step = at_step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.at_step and "loss" not in vars(pl_module.objective):
            loss = pl_module.objective.loss
            pl_module.objective.loss = lambda *args: replace(
                result := loss(*args), loss=result.loss * math.nan
            )


class SendSignal(pl.Callback):
    """Sends ``signal`` (a name, e.g. SIGTERM) to this process after training step
    ``at_step``, as a cluster's scheduler would; not in a fit resumed from a checkpoint."""

    def __init__(self, at_step: int = 0, signal: str = "SIGTERM") -> None:
        self.at_step = at_step
        self.signal = signal

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step + 1 and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.Signals[self.signal])

"""Deliberate faults, to check that a sweep isolates a failing job: ``+fault=nan_loss``."""

from __future__ import annotations

import math

import pytorch_lightning as pl


class InjectNaN(pl.Callback):
    """From training step ``at_step`` on, the KL weight of the loss is NaN.

    The training loss, recon - weight * KL, is then NaN and the module raises
    ``FloatingPointError`` ("training loss is nan at step N"), as a diverging run would.
    """

    def __init__(self, at_step: int = 0) -> None:
        self.at_step = at_step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.at_step:
            pl_module.kl_weight = lambda: math.nan

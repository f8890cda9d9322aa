"""The paper's budget: one job of ``experiment=inference_gap`` (3,280 epochs of MNIST, batch 100,
validation every ``trainer.check_val_every_n_epoch`` epochs), projected from whole epochs.

``trainer.fit`` runs the preset's own Trainer, callbacks, logger, checkpoints and validation
settings for ``epochs`` epochs, validating every ``val_every`` epochs instead of the preset's
cadence so that a few epochs hold both kinds. Each epoch is timed from one
``on_train_epoch_start`` to the next (its training, then its validation and checkpoint writes
where it has them); the first epoch, which holds one-off costs (the first allocations, the data's
first pass), is reported apart. The projection

    minutes = (E * epoch_s + (E / n) * validation_s) / 60,

with E = 3,280 and n the preset's cadence, ``epoch_s`` the median epoch without validation and
``validation_s`` the median extra of an epoch with it, is ``paper_budget_minutes`` (goal <= 60
on an idle 2-core CPU). The test stage at the full protocol is not in it: it runs once per job.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from benchmarks.common import Bench, Goal, Result, compose_config, synchronize
from benchmarks.training import quiet_terminal
from vae_lab.model.module import VAE
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
from vae_lab.training.build import build_logger, build_trainer
from vae_lab.training.progress import intervals

PRESET = "inference_gap"


@dataclass
class Size:
    epochs: int = 7
    val_every: int = 2
    batches: int | None = None  # training steps per epoch; None = the whole training set


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(epochs=3, val_every=2, batches=3)


class EpochClock(pl.Callback):
    """The wall time from each training epoch's start to the next's (the last: to fit's end)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.starts.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return intervals(self.starts)


def preset_config(bench: Bench, size: Size) -> Any:
    """The preset's config on the bench's data, for ``size.epochs`` epochs."""
    cfg = compose_config({**bench.overrides, "experiment": PRESET})
    overrides = {"max_epochs": size.epochs, "check_val_every_n_epoch": size.val_every,
                 "limit_train_batches": size.batches, "num_sanity_val_steps": 0,
                 "enable_progress_bar": True}  # fmt: skip
    cfg.trainer = OmegaConf.merge(cfg.trainer, overrides)
    return cfg


def run(bench: Bench, size: Size) -> Result:
    base = compose_config({**bench.overrides, "experiment": PRESET})
    cfg = preset_config(bench, size)
    pl.seed_everything(cfg.seed, verbose=False)
    model = VAE.from_config(cfg, bench.data_dim, bench.datamodule.image_shape).to(bench.device)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as run_dir, quiet_terminal():
        folder = Path(run_dir)
        trainer = build_trainer(copy.deepcopy(cfg), folder, build_logger(cfg, folder),
                                checkpoint_io=AtomicCheckpointIO())  # fmt: skip
        trainer.callbacks.insert(0, clock)
        trainer.fit(model, datamodule=bench.datamodule)
    seconds = clock.seconds
    later = list(enumerate(seconds, start=1))[1:]  # the first epoch holds one-off costs
    with_val = [s for epoch, s in later if epoch % size.val_every == 0]
    without = [s for epoch, s in later if epoch % size.val_every != 0]
    epoch_s = statistics.median(without)
    validation_s = max(statistics.median(with_val) - epoch_s, 0.0) if with_val else float("nan")
    epochs, cadence = int(base.trainer.max_epochs), int(base.trainer.check_val_every_n_epoch)
    minutes = (epochs * epoch_s + epochs / cadence * validation_s) / 60
    steps = trainer.num_training_batches
    figures = {
        "paper_budget_minutes": minutes,
        "paper_epochs": epochs,
        "paper_val_every": cadence,
        "epoch_s": epoch_s,
        "step_ms": 1e3 * epoch_s / steps,
        "validation_s": validation_s,
        "first_epoch_s": seconds[0],
        "precision": str(cfg.trainer.precision),
    }
    return Result(
        figures,
        [Goal("paper_budget_minutes", "<=", 60.0)],
        note=f"{size.epochs} epochs of the {PRESET} preset, validation every {size.val_every}; "
        "medians of the epochs after the first",
    )

"""Build the run's components from the composed config (``_target_`` instantiation, each
through ``vae_lab.config.instantiate.component``, whose errors name the config key); the model
itself is ``VAE.from_config``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.plugins.io import CheckpointIO

from vae_lab.components.data import InMemoryDataModule
from vae_lab.config.instantiate import component
from vae_lab.config.validation import ConfigError
from vae_lab.model.checkpoints import parameterizations


def build_datamodule(cfg: DictConfig) -> InMemoryDataModule:
    """The dataset, binarised exactly when the likelihood models binary data, and checked
    against the grid of grey levels a discrete likelihood needs."""
    likelihood = get_class(cfg.likelihood._target_)
    return component(cfg.data, "data", binarize=likelihood.binary_data,
                     grey_levels=likelihood.grey_levels, seed=cfg.seed)  # fmt: skip


def build_logger(cfg: DictConfig, run_dir: Path) -> pl.loggers.Logger | None:
    if cfg.logger is None:
        return None
    logger = component(cfg.logger, "logger", save_dir=str(run_dir))
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


class RunStamp(pl.Callback):
    """Writes into every checkpoint (``checkpoint["vae_lab"]``) what identifies its run and
    rebuilds its model: the run's id and config hash, so that ``vae_lab.evaluate`` can refuse a
    checkpoint of another run, and the run's resolved config (plain containers, which load as
    weights only) with the data's shape, so that ``VAE.load_from_checkpoint`` rebuilds the
    model from the file alone, and the version of each posterior family's parameterization,
    so that weights of an older one are refused rather than read as another q."""

    def __init__(self, cfg: DictConfig, stamp: dict[str, str] | None = None) -> None:
        self.stamp = {**(stamp or {}), "config": OmegaConf.to_container(cfg, resolve=True)}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["vae_lab"] = {**self.stamp, "parameterizations": parameterizations(pl_module)}
        if trainer.datamodule is not None:
            checkpoint["vae_lab"]["data_dim"] = trainer.datamodule.data_dim
            checkpoint["vae_lab"]["image_shape"] = list(trainer.datamodule.image_shape)


class StepTimer(pl.Callback):
    """The wall time of the training steps alone (``seconds``): from each epoch's first batch
    to the end of its last, summed over epochs; set-up, validation and checkpoints are left
    out. On a GPU the clock is read without waiting for the device, so an epoch's last few
    queued kernels may fall outside it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._first: float | None = None
        self._last = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._first is not None:
            self.seconds += self._last - self._first
            self._first = None


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    logger: pl.loggers.Logger | None,
    stamp: dict[str, str] | None = None,
    checkpoint_io: CheckpointIO | None = None,
) -> pl.Trainer:
    """Lightning's Trainer from ``cfg.trainer``, keeping the best-validation-ELBO checkpoint
    (``best.ckpt``) and the latest (``last.ckpt``, written at every validation); every
    checkpoint carries the run's config and ``stamp`` (``RunStamp``). ``checkpoint_io`` writes
    them (the run store's, ``vae_lab.records.checkpoint_io``; None: Lightning's own).

    Further callbacks come from ``cfg.callbacks``, a mapping of name -> ``_target_`` config
    (a null entry is skipped), so a feature adds its callback by config alone; a progress bar
    among them is dropped when ``trainer.enable_progress_bar`` is false.
    """
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator=gpu, but torch sees no GPU here: use trainer=cpu (or default)"
        )
    # Two callbacks: Lightning's save_last writes last.ckpt only when a checkpoint is saved,
    # that is when val/elbo improves, so a requeued job would redo every epoch since its best.
    # The best one is listed first: both save at the end of each validation in this order, so
    # last.ckpt holds the best's state of that validation, which a resumed run continues from.
    # enable_version_counter=False: a run copied elsewhere and resumed keeps one file of each.
    folder = run_dir / "checkpoints"
    checkpoints = [
        ModelCheckpoint(dirpath=folder, filename="best", monitor="val/elbo", mode="max",
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False),
    ]  # fmt: skip
    extra = [
        component(c, f"callbacks.{name}")
        for name, c in (cfg.get("callbacks") or {}).items()
        if c is not None
    ]
    if not cfg.trainer.get("enable_progress_bar", True):
        extra = [c for c in extra if not isinstance(c, ProgressBar)]
    return component(
        cfg.trainer,
        "trainer",
        logger=logger or False,
        callbacks=[*checkpoints, *extra, StepTimer(), RunStamp(cfg, stamp)],
        plugins=[checkpoint_io] if checkpoint_io is not None else None,
        default_root_dir=str(run_dir),
    )

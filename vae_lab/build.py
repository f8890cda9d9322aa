"""Build the run's components from the composed config (``_target_`` instantiation).

Every component is built through ``component``: a ConfigError its constructor raises about an
argument (``num_flows=0 is invalid: ...``) reaches the user named by its key
(``posterior.num_flows=0 is invalid: ...``), and any other error while building it as one line
naming the group, so a new component's bad value needs no list of keys to edit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar

from vae_lab.data import InMemoryDataModule
from vae_lab.hook_overhead import BestCheckpoint, NullProfiler
from vae_lab.module import VAE
from vae_lab.validation import ConfigError


def _cause(err: BaseException) -> BaseException:
    """The error under Hydra's InstantiationException wrappers."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def component(node: DictConfig, group: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; its errors as one ConfigError naming ``group``."""
    try:
        return instantiate(node, **kwargs)
    except Exception as err:  # every failure to build is the config's
        cause = _cause(err)
        if isinstance(cause, ConfigError):
            message = str(cause)
            named = message if message.startswith(group) else f"{group}.{message}"
            raise ConfigError(named) from None
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise ConfigError(
            f"{group} (_target_ {node.get('_target_')}) cannot be built from this config: "
            f"{type(cause).__name__}: {text}"
        ) from err


def build_datamodule(cfg: DictConfig) -> InMemoryDataModule:
    """The dataset, binarised exactly when the likelihood models binary data."""
    binary = get_class(cfg.likelihood._target_).binary_data
    return component(cfg.data, "data", binarize=binary, seed=cfg.seed)


def build_optimizer(cfg: DictConfig) -> Any:
    """The optimizer factory of ``cfg.optim``, tried once on a dummy parameter so that a bad
    value (``optim.lr=-1``) is reported before anything is trained."""
    factory = component(cfg.optim, "optim")
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except Exception as err:
        values = " ".join(f"optim.{k}={v}" for k, v in cfg.optim.items() if not k.startswith("_"))
        fix = " (drop the key with ~optim.fused)" if "'fused'" in str(err) else ""
        raise ConfigError(f"optim ({values}) is invalid: {err}{fix}") from err
    return factory


def build_model(cfg: DictConfig, data_dim: int) -> VAE:
    """The VAE; an objective the posterior family cannot train is refused here, before
    training (a run made before the ``objective`` group trains with the ELBO)."""
    nets = component(cfg.model, "model", data_dim=data_dim, latent_dim=cfg.latent_dim)
    posterior = component(
        cfg.posterior, "posterior", feature_dim=nets.feature_dim, latent_dim=cfg.latent_dim
    )
    objective = component(cfg.objective, "objective") if cfg.get("objective") else None
    if objective is not None:
        objective.check(posterior)
    return VAE(
        encoder=nets.encoder,
        decoder=nets.decoder,
        posterior=posterior,
        prior=component(cfg.prior, "prior", latent_dim=cfg.latent_dim, data_dim=data_dim),
        likelihood=component(cfg.likelihood, "likelihood", data_dim=data_dim),
        optimizer=build_optimizer(cfg),
        objective=objective,
        lr_scheduler=component(cfg.lr_schedule, "lr_schedule") if cfg.get("lr_schedule") else None,
        eval_num_samples=cfg.eval.num_samples,
        eval_chunk_size=cfg.eval.chunk_size,
        eval_compile=cfg.eval.get("compile", False),
        val_num_samples=cfg.eval.val_num_samples,
        test_seed=cfg.seed,
    )


def build_logger(cfg: DictConfig, run_dir: Path) -> pl.loggers.Logger | None:
    if cfg.logger is None:
        return None
    logger = component(cfg.logger, "logger", save_dir=str(run_dir))
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


class RunStamp(pl.Callback):
    """Writes the run's id and config hash into every checkpoint (``checkpoint['vae_lab']``),
    so that ``vae_lab.evaluate`` can refuse a checkpoint of another run."""

    def __init__(self, stamp: dict[str, str]) -> None:
        self.stamp = dict(stamp)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["vae_lab"] = self.stamp


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
) -> pl.Trainer:
    """Lightning's Trainer from ``cfg.trainer``, keeping the best-validation-ELBO checkpoint.

    Further callbacks come from ``cfg.callbacks``, a mapping of name -> ``_target_`` config
    (a null entry is skipped), so a feature adds its callback by config alone; a progress bar
    among them is dropped when ``trainer.enable_progress_bar`` is false. With no
    ``trainer.profiler``, the Trainer profiles nothing at the least cost per hook
    (``vae_lab.hook_overhead``).
    """
    if cfg.trainer.get("accelerator") == "gpu" and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator=gpu, but torch sees no GPU here: use trainer=cpu (or default)"
        )
    checkpoint = BestCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/elbo",
        mode="max",
        save_last=True,
        enable_version_counter=False,  # a run copied elsewhere and resumed keeps one best.ckpt
    )
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
        callbacks=[checkpoint, *extra, StepTimer(), *([RunStamp(stamp)] if stamp else [])],
        default_root_dir=str(run_dir),
        **({} if cfg.trainer.get("profiler") else {"profiler": NullProfiler()}),
    )

"""Build the run's components from the composed config (``_target_`` instantiation)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from vae_lab.data import InMemoryDataModule
from vae_lab.module import VAE


def build_datamodule(cfg: DictConfig) -> InMemoryDataModule:
    """The dataset, binarised exactly when the likelihood models binary data."""
    binary = get_class(cfg.likelihood._target_).binary_data
    return instantiate(cfg.data, binarize=binary, seed=cfg.seed)


def build_model(cfg: DictConfig, data_dim: int) -> VAE:
    nets = instantiate(cfg.model, data_dim=data_dim, latent_dim=cfg.latent_dim)
    return VAE(
        encoder=nets.encoder,
        decoder=nets.decoder,
        posterior=instantiate(
            cfg.posterior, feature_dim=nets.feature_dim, latent_dim=cfg.latent_dim
        ),
        prior=instantiate(cfg.prior, latent_dim=cfg.latent_dim, data_dim=data_dim),
        likelihood=instantiate(cfg.likelihood, data_dim=data_dim),
        optimizer=instantiate(cfg.optim),
        kl_warmup_steps=cfg.kl_warmup_steps,
        eval_num_samples=cfg.eval.num_samples,
        eval_chunk_size=cfg.eval.chunk_size,
        val_num_samples=cfg.eval.val_num_samples,
        test_seed=cfg.seed,
    )


def build_logger(cfg: DictConfig, run_dir: Path) -> pl.loggers.Logger | None:
    if cfg.logger is None:
        return None
    logger = instantiate(cfg.logger, save_dir=str(run_dir))
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def build_trainer(cfg: DictConfig, run_dir: Path, logger: pl.loggers.Logger | None) -> pl.Trainer:
    """Lightning's Trainer from ``cfg.trainer``, keeping the best-validation-ELBO checkpoint.

    Further callbacks come from ``cfg.callbacks``, a mapping of name -> ``_target_`` config
    (a null entry is skipped), so a feature adds its callback by config alone.
    """
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/elbo",
        mode="max",
        save_last=True,
    )
    extra = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    return instantiate(
        cfg.trainer,
        logger=logger or False,
        callbacks=[checkpoint, *extra],
        default_root_dir=str(run_dir),
    )

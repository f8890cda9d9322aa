"""``vae_lab.load(RUN_DIR)``: a trained run as Python objects, for a notebook or a script.

The run folder is read as ``python -m vae_lab.evaluate`` reads it (``vae_lab.records.run_folder``):
its saved config over today's defaults with old ``_target_`` paths mapped, its checkpoint as
weights only and refused when stamped with another run's id. So any run folder loads, one
trained before checkpoints carried their config too (``VAE.load_from_checkpoint`` needs that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE
from vae_lab.records.interrupts import resume_command
from vae_lab.records.outputs import METRICS_FILE, read_metrics
from vae_lab.records.run_folder import is_run, load_model, locate, saved_config
from vae_lab.training.build import build_datamodule

#: the checkpoints every run folder keeps, by the name ``load`` takes
CHECKPOINTS = ("best", "last")


@dataclass
class LoadedRun:
    """A trained run: its folder, config, record (metrics.json, empty where there is none),
    model (eval mode, no gradient) and set-up datamodule (its splits on the CPU)."""

    run_dir: Path
    config: DictConfig
    metrics: dict[str, Any]
    model: VAE
    datamodule: InMemoryDataModule


def load(
    run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path = "best"
) -> LoadedRun:
    """The run of ``run_dir`` with the weights of its ``checkpoint``: ``best`` (the best
    validation ELBO, which the run's test figures are of), ``last``, or a checkpoint file's
    path; the model on ``device``. A folder that is not a run's is a one-line ConfigError."""
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder} does not exist: give the folder of a run (vae_lab.run)")
    if not is_run(folder):
        raise ConfigError(f"{folder} is not a run folder (no .hydra/config.yaml)")
    named = str(checkpoint) in CHECKPOINTS
    ckpt = folder / "checkpoints" / f"{checkpoint}.ckpt" if named else Path(checkpoint)
    if named and not ckpt.is_file():
        raise ConfigError(
            f"{folder} has no checkpoints/{ckpt.name} (a run stopped in its first epoch): "
            f"continue it with `{resume_command(folder)}`"
        )
    [run] = locate(folder, ckpt)
    cfg = saved_config(run.run_dir)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    model = load_model(cfg, run, datamodule.data_dim, datamodule.image_shape).to(device)
    metrics = read_metrics(folder) if (folder / METRICS_FILE).is_file() else {}
    return LoadedRun(folder, cfg, metrics, model, datamodule)

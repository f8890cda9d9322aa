"""Weights & Biases tracking: one W&B run per job, every job of a sweep in one group.

A run joins the group ``<name>-<stamp>``: the experiment preset's name (else the script's) and
the last two parts of the sweep folder, by default its date and time, so all jobs of one sweep
share it. It is tagged ``posterior:NAME``, ``prior:NAME``, ``data:NAME`` and ``seed:N`` and
carries the chosen options under ``choices`` beside the full resolved config, so the W&B UI can
group and filter runs by family. W&B goes online when the user is logged in, offline otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)

TAGGED_CHOICES = ("posterior", "prior", "data")
#: log p(x) = ELBO + inference gap: the columns of the W&B table logged at the end of a run
GAP_COLUMNS = ("test/elbo", "test/log_px", "test/inference_gap")


@dataclass(frozen=True)
class RunLabels:
    """What names a job in W&B, read from Hydra's view of the job."""

    group: str | None = None
    name: str | None = None
    choices: dict[str, str] = field(default_factory=dict)


def hydra_labels() -> RunLabels:
    """The job's group, name and chosen options; empty outside a Hydra app (e.g. in tests)."""
    if not HydraConfig.initialized():
        return RunLabels()
    hydra = HydraConfig.get()
    choices = {
        group: str(option)
        for group, option in hydra.runtime.choices.items()
        if not group.startswith("hydra/") and option is not None
    }
    folder = Path(hydra.sweep.dir if hydra.mode == RunMode.MULTIRUN else hydra.run.dir)
    study = choices.get("experiment", hydra.job.name)
    name = "-".join(choices[g] for g in ("posterior", "prior") if g in choices)
    return RunLabels(
        group=f"{study}-{'_'.join(folder.parts[-2:])}",
        name=f"{name}-{hydra.job.num}" if hydra.mode == RunMode.MULTIRUN else name or None,
        choices=choices,
    )


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


def wandb_logger(
    save_dir: str,
    project: str = "vae_lab",
    mode: str = "auto",
    group: str | None = None,
    job_type: str = "train",
    tags: list[str] | None = None,
    name: str | None = None,
    seed: int | None = None,
) -> WandbLogger:
    """A Lightning WandbLogger; ``mode`` is online, offline or auto (online when logged in).

    ``group`` and ``name`` default to the job's (see the module docstring); ``tags`` are added
    to the job's own tags: posterior, prior, data and, given ``seed``, the seed.
    """
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
    if mode == "offline":
        log.info("W&B is offline; upload later with: wandb sync %s/wandb/offline-run-*", save_dir)
    labels = hydra_labels()
    job_tags = [f"{g}:{labels.choices[g]}" for g in TAGGED_CHOICES if g in labels.choices]
    if seed is not None:
        job_tags.append(f"seed:{seed}")
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=mode == "offline",
        group=group or labels.group,
        job_type=job_type,
        tags=[*job_tags, *(tags or [])],
        name=name or labels.name,
        config={"choices": labels.choices},
    )


def finish_run(record: dict[str, Any]) -> None:
    """Close this process's W&B run, if one is open, with the job's final ``record``.

    A completed run gets its gap decomposition as a one-row W&B Table ``gap_decomposition``
    (chosen options, seed, ELBO, log p(x), inference gap); a failed one is marked failed. Then
    ``wandb.finish()``, so the next job of the same process starts a run of its own.
    """
    wandb = sys.modules.get("wandb")  # never import wandb for a job that did not use it
    if wandb is None or wandb.run is None:
        return
    completed = record.get("status") == "completed"
    if completed:
        keys = [*TAGGED_CHOICES, "seed", *GAP_COLUMNS]
        table = wandb.Table(columns=keys, data=[[record.get(k) for k in keys]])
        wandb.run.log({"gap_decomposition": table})
    else:
        wandb.run.summary["error"] = record.get("error")
    wandb.run.summary["status"] = record.get("status")
    wandb.finish(exit_code=0 if completed else 1)

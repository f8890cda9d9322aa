"""Experiment loggers. W&B goes online when the user is logged in and offline otherwise."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


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
    tags: list[str] | None = None,
    name: str | None = None,
) -> WandbLogger:
    """A Lightning WandbLogger; ``mode`` is online, offline or auto (online when logged in)."""
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
    if mode == "offline":
        log.info("W&B is offline; upload later with: wandb sync %s/wandb/offline-run-*", save_dir)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=mode == "offline",
        group=group,
        tags=list(tags or []),
        name=name,
    )

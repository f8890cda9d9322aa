"""How many threads torch computes with."""

from __future__ import annotations

import logging

import torch
from omegaconf import OmegaConf

from vae_lab.config.validation import validate

log = logging.getLogger(__name__)


def use_threads(num_threads: int | None) -> None:
    """Give torch ``num_threads`` intra-op threads (None: keep torch's default)."""
    validate(OmegaConf.create({"num_threads": num_threads}))
    if num_threads:
        torch.set_num_threads(num_threads)
    log.info("torch uses %d threads", torch.get_num_threads())

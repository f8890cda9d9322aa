"""The optimizer of a run's config, checked before anything is built on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from omegaconf import DictConfig
from torch import nn

from vae_lab.config.instantiate import component
from vae_lab.config.validation import ConfigError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def build_optimizer(cfg: DictConfig) -> OptimizerFactory:
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

"""Today's composed run config, from Python (the Hydra app's own, inside it)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from vae_lab.config.paths import CONF_DIR


def compose_default(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m vae_lab.run`` would compose today (inside the Hydra app too)."""
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")

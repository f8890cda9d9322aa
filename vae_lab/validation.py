"""Checks of the composed config, run before anything is built or trained.

Each rule names a key, a test and what is allowed, so a bad value gives one clear line such as
``latent_dim=-1 is invalid: must be a positive integer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed."""


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _epochs(v: Any) -> bool:
    return v is None or (isinstance(v, int) and (v == -1 or v >= 1))


def _families(v: Any) -> bool:
    if v is None or isinstance(v, str):
        return True
    names = v if isinstance(v, ListConfig) else []
    return len(names) > 0 and all(f is None or isinstance(f, str) for f in names)


Rule = tuple[str, Callable[[Any], bool], str]

RULES: list[Rule] = [
    ("latent_dim", _positive_int, "a positive integer"),
    ("seed", _non_negative_int, "a non-negative integer"),
    ("kl_warmup_steps", _non_negative_int, "a non-negative integer (0 = no warm-up)"),
    ("optim.lr", _positive_number, "a positive number"),
    ("eval.num_samples", _positive_int, "a positive integer (K of the IW estimate)"),
    ("eval.chunk_size", _positive_int, "a positive integer (samples drawn at once)"),
    ("eval.val_num_samples", _positive_int, "a positive integer"),
    ("data.batch_size", _positive_int, "a positive integer"),
    ("data.eval_batch_size", _positive_int, "a positive integer"),
    ("trainer.max_epochs", _epochs, "a positive integer, or -1 for no limit"),
    ("posterior.num_flows", _positive_int, "a positive integer"),
    ("posterior.hidden_dim", _positive_int, "a positive integer"),
    ("posterior.context_dim", _positive_int, "a positive integer"),
    ("posterior.num_householder", _positive_int, "a positive integer"),
    ("prior.num_components", _positive_int, "a positive integer"),
    ("prior.init", lambda v: v in ("data", "random"), "data or random"),
    ("eval.split", lambda v: v in ("train", "val", "test"), "one of train, val, test"),
    ("eval.gap_points", lambda v: v is None or _positive_int(v), "a positive integer or null"),
    ("eval.seed", _non_negative_int, "a non-negative integer"),
    ("eval.ais_steps", _positive_int, "a positive integer"),
    ("eval.ais_chains", _positive_int, "a positive integer"),
    ("eval.ais_leapfrog_steps", _positive_int, "a positive integer"),
    ("eval.ais_pilot_chains", _positive_int, "a positive integer"),
    ("eval.qstar_decays", _non_negative_int, "a non-negative integer"),
    ("eval.qstar_gradient", lambda v: v in ("stl", "reparam"), "stl or reparam"),
    ("eval.qstar_residual_steps", _positive_int, "a positive integer"),
    ("eval.bdmc", lambda v: isinstance(v, bool), "true or false"),
    ("eval.bdmc_points", _positive_int, "a positive integer"),
    ("eval.qstar_family", _families, "a posterior option, a non-empty list of them, or null"),
    ("eval.qstar_init", lambda v: v in ("encoder", "prior"), "encoder or prior"),
    ("eval.qstar_lr", _positive_number, "a positive number"),
    ("eval.qstar_samples", _positive_int, "a positive integer"),
    ("eval.qstar_max_steps", _positive_int, "a positive integer"),
    ("eval.qstar_tol", lambda v: v == 0 or _positive_number(v), "a non-negative number"),
    ("data.data_dim", _positive_int, "a positive integer"),
    ("data.noise_std", _positive_number, "a positive number"),
    ("data.num_train", _positive_int, "a positive integer"),
    ("data.num_val", _positive_int, "a positive integer"),
    ("data.num_test", _positive_int, "a positive integer"),
]

_MISSING = object()


def validate(cfg: DictConfig, rules: list[Rule] = RULES) -> None:
    """Raise ConfigError for the first key whose value breaks its rule; absent keys pass."""
    for key, ok, allowed in rules:
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING and not ok(value):
            raise ConfigError(f"{key}={value} is invalid: must be {allowed}")

"""What identifies a run: its whole composed config.

A run is the option chosen in each config group (``posterior: flow``) together with every
value of its resolved config, except the keys that say where or how a run is carried out and
not what it computes (``NOT_IDENTITY``: the data folder, threads, the logger, ...). Two runs
with the same identity but their ``seed`` are replicates; any other difference makes them
different configurations, which the report never pools. A class is named by its stable name
(``vae_lab.config.targets``), so the identity does not depend on where the class lives. The
identity's hash (``config_hash``) is recorded in metrics.json and in every checkpoint of the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_lab.config.targets import map_targets, stable

log = logging.getLogger(__name__)

#: keys that do not change what a run computes (a key names itself and everything below it)
NOT_IDENTITY = (
    "resume",
    "num_threads",
    "data.root",
    "data.download",
    "data.mirror",
    "logger",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "callbacks.progress_bar",
    "callbacks.image_grids",
    "eval.device",
    "eval.compile",
    # which figures the run's test stage and evaluate compute, not what a figure's value is
    "eval.test_stages",
    "eval.stages",
    "eval.evaluate_num_samples",
    "callbacks.sample_quality",
)
#: groups whose option is not part of the identity (hydra/* groups are left out too)
NOT_IDENTITY_GROUPS = ("logger",)
#: the key that makes replicates of one configuration
REPLICATE = "seed"


def choices_of(runtime_choices: Mapping[str, Any]) -> dict[str, str]:
    """The option chosen in each of the run's config groups (Hydra's ``runtime.choices``)."""
    return {
        group: str(option)
        for group, option in runtime_choices.items()
        if not group.startswith("hydra/") and option is not None
    }


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    if isinstance(node, list):
        return {prefix[:-1]: json.dumps(node)}
    return {prefix[:-1]: node}


def outside_identity(key: str) -> bool:
    """Whether ``key`` (or a key above it) is one of ``NOT_IDENTITY``."""
    return any(key == k or key.startswith(f"{k}.") for k in NOT_IDENTITY)


def warmup_unused(cfg: DictConfig) -> bool:
    """Whether the run's objective has no KL warm-up to read ``kl_warmup_steps`` (iwae, savae)."""
    objective = cfg.get("objective")
    return isinstance(objective, DictConfig) and "kl_warmup_steps" not in objective


def note_unused_warmup(cfg: DictConfig) -> None:
    """Say so when the run's objective has no KL warm-up to take ``kl_warmup_steps`` (a preset's
    warm-up swept over objectives); it then leaves the run's identity too."""
    if cfg.get("kl_warmup_steps") and warmup_unused(cfg):
        name = str(cfg.objective.get("_target_", "")).rsplit(".", 1)[-1]
        log.info("kl_warmup_steps=%s is not used: the %s objective has no KL warm-up",
                 cfg.kl_warmup_steps, name)  # fmt: skip


def identity(cfg: DictConfig | Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, Any]:
    """Group -> option and flattened key -> value: everything that makes the run what it is."""
    config = OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg.copy()
    OmegaConf.set_struct(config, False)
    for key in NOT_IDENTITY:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent) if parent else config
        if isinstance(node, DictConfig) and leaf in node:
            node.pop(leaf)
    if warmup_unused(config):
        config.pop("kl_warmup_steps", None)
    try:
        plain = OmegaConf.to_container(config, resolve=True)
    except Exception:  # an unresolvable value identifies the run as written
        plain = OmegaConf.to_container(config, resolve=False)
    flat = {
        k: v for k, v in _flatten(map_targets(plain, stable)).items() if not outside_identity(k)
    }
    groups = {g: str(o) for g, o in choices.items() if g not in NOT_IDENTITY_GROUPS}
    return {**groups, **flat}


def config_hash(ident: Mapping[str, Any]) -> str:
    """A short hash of an identity: equal for runs of the same config and seed."""
    text = json.dumps(dict(ident), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def configuration(ident: Mapping[str, Any]) -> dict[str, Any]:
    """The identity without the seed: what replicates share."""
    return {k: v for k, v in ident.items() if k != REPLICATE}

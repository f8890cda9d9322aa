"""Where the classes a config names live, and the stable names a run's identity uses for them.

A config names its components by ``_target_`` (``vae_lab.components.posteriors.Planar``).
Configs saved before the package took its layered layout name them at their old places
(``vae_lab.posteriors.Planar``): ``upgraded`` maps those to today's, so that an old run folder
still evaluates and resumes. A run's identity, and so its ``config_hash``, names each class by
its ``stable`` name (the name it had when hashes were first recorded), so that moving a class
changes no hash: an old and a new run of one configuration stay one configuration.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

#: old module -> module today; a class moves with its module
MOVED = {
    **{f"vae_lab.{m}": f"vae_lab.components.{m}" for m in (
        "posteriors", "data", "priors", "likelihoods", "networks", "normal", "diffusion",
        "minibatch_adam", "images")},
    **{f"vae_lab.{m}": f"vae_lab.estimators.{m}" for m in (
        "elbo", "estimate", "ais", "bdmc", "psis", "gaps", "metrics", "fast_eval")},
    **{f"vae_lab.{m}": f"vae_lab.model.{m}" for m in ("objectives", "module", "schedules")},
    **{f"vae_lab.{m}": f"vae_lab.training.{m}" for m in ("callbacks", "faults", "build")},
    **{f"vae_lab.{m}": f"vae_lab.evaluation.{m}" for m in ("sample_quality", "refit")},
    **{f"vae_lab.{m}": f"vae_lab.records.{m}" for m in (
        "outputs", "csv_logger", "tracking", "interrupts", "console")},
    **{f"vae_lab.{m}": f"vae_lab.config.{m}" for m in ("identity", "validation", "paths")},
    "vae_lab.report.summary": "vae_lab.records.sweep",
    "vae_lab.report.collect": "vae_lab.records.collect",
}  # fmt: skip
_TODAY_TO_STABLE = {new: old for old, new in MOVED.items()}


def _replace_module(target: str, table: dict[str, str]) -> str:
    module = target
    while "." in module:
        module = module.rpartition(".")[0]
        if module in table:
            return table[module] + target[len(module) :]
    return target


def current(target: str) -> str:
    """A ``_target_`` as it is importable today."""
    return _replace_module(target, MOVED)


def stable(target: str) -> str:
    """A ``_target_``'s stable name: the same wherever the class has moved since."""
    return _replace_module(current(target), _TODAY_TO_STABLE)


def map_targets(node: Any, rename: Any) -> Any:
    """``node`` (a plain mapping or list, as ``OmegaConf.to_container`` gives) with every
    ``_target_`` renamed in place by ``rename``; returns ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                node[key] = rename(value)
            else:
                map_targets(value, rename)
    elif isinstance(node, list):
        for item in node:
            map_targets(item, rename)
    return node


#: callbacks of configs saved before their work moved elsewhere: name -> where it went
RETIRED_CALLBACKS = {"sample_quality": "the sample_quality stage of eval.test_stages"}


def upgraded(cfg: DictConfig) -> DictConfig:
    """A saved config with its old ``_target_`` paths mapped to today's, less the callbacks
    whose work moved elsewhere (``RETIRED_CALLBACKS``)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for name in RETIRED_CALLBACKS:
        (plain.get("callbacks") or {}).pop(name, None)
    return OmegaConf.create(map_targets(plain, current))

"""Where the classes a config names live, and the stable names a run's identity uses for them.

A config names its components by ``_target_`` (``vae_lab.components.posteriors.Planar``).
Configs saved before the package took its layered layout name them at their old places
(``vae_lab.posteriors.Planar``): ``upgraded`` maps those to today's, so that an old run folder
still evaluates and resumes. A run's identity, and so its ``config_hash``, names each class by
its ``stable`` name (the name it had when hashes were first recorded), so that moving a class
changes no hash: an old and a new run of one configuration stay one configuration.

A config read from a run folder or a checkpoint may come from anyone, and instantiating it
calls whatever its ``_target_``s name: ``upgraded`` refuses, before anything is built, every
``_target_`` that is not one of ``check_targets``'s (a class of vae_lab or of torch.optim, a
factory of vae_lab, a Lightning class the shipped ``conf/`` names).
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from vae_lab.config.validation import ConfigError

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


#: packages whose classes a received config may name (``torch.optim.lr_scheduler`` included)
CLASS_PACKAGES = ("vae_lab.", "torch.optim.")
#: the functions of vae_lab a config builds a component with: every other target is a class,
#: for a function such as ``vae_lab.records.outputs.write_text`` would write any file it is given
FACTORIES = ("vae_lab.components.networks.mlp_networks", "vae_lab.components.conv.conv_networks",
             "vae_lab.components.hierarchical.hierarchical_networks",
             "vae_lab.records.tracking.wandb_logger")  # fmt: skip
#: Lightning's classes that conf/ names, or named (the TQDM bar of run folders written before
#: vae_lab's own bar: resume= rebuilds them), allowed by their exact path alone
LIGHTNING = ("pytorch_lightning.Trainer", "pytorch_lightning.callbacks.TQDMProgressBar")


def _allowed(target: Any) -> bool:
    """Whether ``target`` names a class of ``CLASS_PACKAGES``, one of ``FACTORIES`` or of
    ``LIGHTNING``. The path is resolved, importing modules of vae_lab or torch.optim only, and
    what it resolves to must be defined there: a prefix alone would let an attribute chain
    through a module's imports (``vae_lab.records.run_folder.os.system``) out of the package.
    No part may start with ``_`` (``__main__``, ``__globals__``, ``__builtins__``)."""
    if not isinstance(target, str) or any(p.startswith("_") for p in target.split(".")):
        return False
    if target in LIGHTNING:
        return True
    package = next((p for p in CLASS_PACKAGES if target.startswith(p)), None)
    if package is None:
        return False
    try:
        found = get_object(target)
    except Exception:  # a path that resolves to nothing names nothing this config may build
        return False
    if target in FACTORIES:
        return True
    return isinstance(found, type) and found.__module__.startswith(package)


def check_targets(node: Any, key: str = "") -> None:
    """Refuse, as one ConfigError naming its key, a ``_target_`` anywhere in ``node`` (a plain
    mapping or list, nested ones and those under ``_args_`` or ``_partial_`` nodes included)
    that ``_allowed`` does not accept; ``_convert_`` and ``_recursive_`` call nothing.

    The classes of vae_lab are trusted as a whole: what their constructors do with the
    arguments a config gives them is the limit of this check."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_" and not _allowed(value):
                raise ConfigError(
                    f"{path}={value} is not a component of vae_lab: a received config may name "
                    "only vae_lab's components, torch.optim's optimisers and schedulers and "
                    f"{', '.join(LIGHTNING)}; nothing was built from it"
                )
            check_targets(value, path)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            check_targets(item, f"{key}[{index}]")


def upgraded(cfg: DictConfig) -> DictConfig:
    """A received config (a run folder's, a checkpoint's) with its old ``_target_`` paths
    mapped to today's, less the callbacks whose work moved elsewhere (``RETIRED_CALLBACKS``);
    a ``_target_`` that ``check_targets`` refuses is a ConfigError, before anything is built."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for name in RETIRED_CALLBACKS:
        (plain.get("callbacks") or {}).pop(name, None)
    check_targets(map_targets(plain, current))
    return OmegaConf.create(plain)

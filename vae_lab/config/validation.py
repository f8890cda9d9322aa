"""The project's config error and the checks components run on their own arguments.

A component checks its arguments in its constructor (``require(name, value, rule)``) and raises
``ConfigError`` naming the argument; ``vae_lab.config.instantiate`` names the config group, so a bad
value of any component, a new one included, reaches the user as one line such as
``posterior.num_flows=0 is invalid: must be a positive integer``. There is no central list of
keys: only the run's own top-level keys are checked here (``RUN_RULES``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed, or a run folder used the wrong way."""


Rule = tuple[Callable[[Any], bool], str]


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or a float; not a bool, which Python counts as an int (``true`` is not 1.0)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


POSITIVE_INT: Rule = (lambda v: _integer(v) and v > 0, "a positive integer")
NON_NEGATIVE_INT: Rule = (lambda v: _integer(v) and v >= 0, "a non-negative integer")
POSITIVE_NUMBER: Rule = (lambda v: is_number(v) and v > 0, "a positive number")
NON_NEGATIVE_NUMBER: Rule = (lambda v: is_number(v) and v >= 0, "a non-negative number")

#: a switch: true or false themselves, not 1 or 0 (which ``one_of(True, False)`` let through)
BOOLEAN: Rule = (lambda v: isinstance(v, bool), "true or false")

#: draws of an estimate whose standard error is reported: one draw has no sample variance
SAMPLES_WITH_STDERR: Rule = (
    lambda v: _integer(v) and v >= 2,
    "an integer >= 2 (draws of an estimate: its stderr needs two)",
)

#: Lightning's max_epochs and max_steps: -1 lifts the limit, 0 would train nothing
TRAINING_LIMIT: Rule = (
    lambda v: _integer(v) and (v > 0 or v == -1),
    "a positive integer, or -1 (no limit)",
)


def one_of(*allowed: Any) -> Rule:
    return (lambda v: v in allowed, "one of " + ", ".join(map(str, allowed)))


def optional(rule: Rule) -> Rule:
    ok, allowed = rule
    return (lambda v: v is None or ok(v), f"{allowed} or null")


def require(name: str, value: Any, rule: Rule) -> None:
    """Raise ConfigError ``NAME=VALUE is invalid: must be ...`` unless ``value`` obeys ``rule``."""
    ok, allowed = rule
    if not ok(value):
        raise ConfigError(f"{name}={value} is invalid: must be {allowed}")


def require_all(rule: Rule, **values: Any) -> None:
    """``require(name, value, rule)`` for each ``name=value``, in order."""
    for name, value in values.items():
        require(name, value, rule)


#: the run's own keys (no component owns them): key -> rule
RUN_RULES: dict[str, Rule] = {
    "seed": NON_NEGATIVE_INT,
    "latent_dim": POSITIVE_INT,
    "kl_warmup_steps": (NON_NEGATIVE_INT[0], "a non-negative integer (0 = no warm-up)"),
    "num_threads": optional(POSITIVE_INT),
    "eval.num_samples": SAMPLES_WITH_STDERR,
    "eval.chunk_size": optional((POSITIVE_INT[0], "a positive integer (samples drawn at once)")),
    "eval.compile": BOOLEAN,
    "eval.val_num_samples": SAMPLES_WITH_STDERR,
    # a run that trains nothing would be recorded completed with the untrained model's figures
    "trainer.max_epochs": optional(TRAINING_LIMIT),
    "trainer.max_steps": TRAINING_LIMIT,
    "trainer.limit_train_batches": optional(
        (POSITIVE_NUMBER[0], "a positive number (of batches, or a fraction of them)")
    ),
    "sample_quality.rendering": one_of("mean", "sample"),
    "sample_quality.max_images": optional(POSITIVE_INT),
    "sample_quality.nearest_k": POSITIVE_INT,
    "sample_quality.kid_subsets": POSITIVE_INT,
    "sample_quality.kid_subset_size": POSITIVE_INT,
}

_MISSING = object()


def validate(cfg: DictConfig, rules: dict[str, Rule] = RUN_RULES) -> None:
    """Raise ConfigError for the first key whose value breaks its rule; absent keys pass."""
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING:
            require(key, value, rule)

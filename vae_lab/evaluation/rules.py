"""The rules of the evaluation's config keys (``eval.*``), checked before any work."""

from __future__ import annotations

from collections.abc import Sequence

from vae_lab.config.compose import override_key
from vae_lab.config.validation import (
    BOOLEAN,
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SAMPLES_WITH_STDERR,
    ConfigError,
    Rule,
    one_of,
    optional,
)
from vae_lab.evaluation.points import SPLITS

#: evaluate's own keys: key -> rule
EVAL_RULES: dict[str, Rule] = {
    "eval.split": one_of(*SPLITS),
    "eval.gap_points": optional(POSITIVE_INT),
    "eval.seed": NON_NEGATIVE_INT,
    "eval.evaluate_num_samples": SAMPLES_WITH_STDERR,
    "eval.ais_steps": POSITIVE_INT,
    "eval.ais_chains": SAMPLES_WITH_STDERR,
    "eval.ais_leapfrog_steps": POSITIVE_INT,
    "eval.qstar_lr": POSITIVE_NUMBER,
    "eval.qstar_init": one_of("encoder", "prior"),
    "eval.qstar_samples": POSITIVE_INT,
    "eval.qstar_max_steps": POSITIVE_INT,
    "eval.qstar_tol": NON_NEGATIVE_NUMBER,
    "eval.ais_pilot_chains": POSITIVE_INT,
    "eval.ais_start": one_of("best", "encoder"),
    "eval.qstar_decays": NON_NEGATIVE_INT,
    "eval.qstar_gradient": one_of("stl", "reparam"),
    "eval.qstar_residual_steps": POSITIVE_INT,
    "eval.qstar_newton_steps": NON_NEGATIVE_INT,
    "eval.bdmc": BOOLEAN,
    "eval.bdmc_points": POSITIVE_INT,
    "eval.bdmc_max_width": POSITIVE_NUMBER,
    "eval.device": (
        lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
        "auto, cpu, cuda or cuda:N",
    ),
}

#: keys an evaluation may override (a prefix ending in "." stands for every key below it)
EVAL_OVERRIDABLE = ("eval.", "sample_quality.", "refit.", "data.root", "data.download",
                    "data.mirror", "data.eval_batch_size", "num_threads")  # fmt: skip


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override of the run's model or training: evaluate keeps what was trained."""
    if bad := [o for o in overrides if not override_key(o).startswith(EVAL_OVERRIDABLE)]:
        raise ConfigError(
            f"{bad[0]}: evaluate keeps the run's trained model and config; only "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in EVAL_OVERRIDABLE)} may "
            "change (a q* in another family: eval.qstar_family=NAME)"
        )

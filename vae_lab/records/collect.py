"""Find the runs under one or more folders and read their ``metrics.json``.

A run is any folder holding a ``metrics.json``; a sweep folder holds one per job. Runs of a
sweep still going on (``status: running``) and failed runs are kept, so the report can say so.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vae_lab.config.identity import REPLICATE, choices_of, identity
from vae_lab.config.paths import CONF_DIR
from vae_lab.records.outputs import EVAL_PREFIX, EVAL_SPLIT, METRICS_FILE, held_by_another

#: the groups a metrics.json names when its run folder has no .hydra/ to read them from
RECORDED_GROUPS = ("data", "posterior", "prior", "likelihood", "model")


class NoRunsError(Exception):
    """A folder given to the report holds no run."""


@dataclass(frozen=True)
class Run:
    """One job: its folder and the content of its metrics.json."""

    folder: Path
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "unknown"))

    def choice(self, group: str) -> str:
        return str(self.metrics.get(group) or "-")

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed")

    @cached_property
    def choices(self) -> dict[str, str]:
        """The option of each config group, read from the run's ``.hydra/hydra.yaml``; for a
        folder without one, the options its metrics.json names."""
        try:
            hydra = OmegaConf.load(self.folder / ".hydra" / "hydra.yaml").hydra
            return choices_of(hydra.runtime.choices)
        except Exception:  # no readable .hydra/: a hand-made or older folder
            return {g: str(self.metrics[g]) for g in RECORDED_GROUPS if self.metrics.get(g)}

    @cached_property
    def identity(self) -> dict[str, Any]:
        """The run's whole config (``vae_lab.config.identity``), read from its ``.hydra/``; for a
        folder without one, its options and seed."""
        try:
            saved = OmegaConf.load(self.folder / ".hydra" / "config.yaml")
        except Exception:  # no readable .hydra/: a hand-made or older folder
            return {**self.choices, REPLICATE: self.seed}
        return identity(saved, self.choices)

    @property
    def evaluated_on_test(self) -> bool:
        """Whether its eval/* figures, if any, are of the test split, as the report's are."""
        return self.metrics.get(EVAL_SPLIT, "test") == "test"

    def value(self, metric: str) -> float | None:
        """A metric as a float (NaN and inf included), None when the run does not have it; an
        eval/* figure of another split than test is not the report's, so None too."""
        if metric.startswith(EVAL_PREFIX) and not self.evaluated_on_test:
            return None
        value = self.metrics.get(metric)
        return None if value is None else float(value)  # "nan" and "inf" parse back to floats


@cache
def default_options() -> dict[str, str]:
    """The default option of each config group: the defaults list of ``conf/config.yaml``."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return {
        group: str(option)
        for entry in defaults
        if isinstance(entry, dict)  # not _self_
        for group, option in entry.items()
        if option is not None
    }


@cache
def option_order(group: str) -> tuple[str, ...]:
    """The options of ``group`` in the report's order: its default first, then the other files
    of ``conf/<group>/`` alphabetically."""
    default = default_options().get(group)
    options = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
    return tuple(sorted(options, key=lambda option: option != default))


def option_rank(group: str, option: str) -> tuple[int, str]:
    """Sort key of an option of ``group``: ``option_order``'s, then options not in conf/, by
    name."""
    order = option_order(group)
    return (order.index(option) if option in order else len(order), option)


def run_key(run: Run) -> tuple:
    seed = run.seed if isinstance(run.seed, int) else math.inf
    return (
        run.choice("data"),
        option_rank("posterior", run.choice("posterior")),
        option_rank("prior", run.choice("prior")),
        seed,
        str(run.folder),
    )


def malformed(metrics: Any) -> str | None:
    """Why a parsed metrics.json cannot be reported, in one line; None when it can.

    The report indexes the record by key and reads every ``split/name`` entry but
    ``EVAL_SPLIT`` as a float, so a record that is not an object, or a metric that is not a
    number (None, a number, or a string such as "nan" that parses as one), would stop the whole
    report with a traceback instead of leaving out this one run.
    """
    if not isinstance(metrics, dict):
        return f"not a JSON object but a {type(metrics).__name__}"
    for key, value in metrics.items():
        if "/" not in key or key == EVAL_SPLIT or value is None:
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{key} is not a number: {json.dumps(value)[:60]}"
    return None


def read_run(path: Path) -> Run:
    """The run of a metrics.json; an unreadable or malformed one (``malformed``) becomes a run
    with status ``unreadable``, its ``error`` saying why and, where it names them, its options
    and seed kept, so the report lists it and reports the other runs."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return Run(path.parent, {"status": "unreadable", "error": f"{type(err).__name__}: {err}"})
    if (problem := malformed(metrics)) is not None:
        named = metrics if isinstance(metrics, dict) else {}
        kept = {
            k: named[k] for k in (*RECORDED_GROUPS, "seed") if isinstance(named.get(k), str | int)
        }
        return Run(path.parent, {**kept, "status": "unreadable", "error": problem})
    return Run(folder=path.parent, metrics=metrics)


def find_runs(folders: Sequence[Path]) -> list[Run]:
    """Every run under ``folders``, sorted by data, posterior, prior and seed. A run recorded
    as ``running`` whose writer lock no process holds was stopped without recording how it
    ended (killed outright, or its machine lost): its status is ``killed``.

    Raises NoRunsError naming the first folder that is missing or holds no metrics.json.
    """
    paths: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise NoRunsError(f"{folder} is not a folder")
        found = sorted(folder.rglob(METRICS_FILE))
        if not found:
            raise NoRunsError(f"no {METRICS_FILE} under {folder}: not a run or sweep folder")
        paths.extend(found)
    unique: dict[Path, Path] = {}  # a run named twice (a folder and its parent, a link) is one
    for path in paths:
        unique.setdefault(path.resolve(), path)
    return sorted((_alive(read_run(p)) for p in unique.values()), key=run_key)


def _alive(run: Run) -> Run:
    if run.status == "running" and not held_by_another(run.folder):
        return replace(run, metrics={**run.metrics, "status": "killed"})
    return run


def with_status(runs: Iterable[Run], status: str) -> list[Run]:
    return [run for run in runs if run.status == status]


def status_counts(runs: Iterable[Run]) -> str:
    """E.g. ``3 completed, 1 failed``."""
    counts = Counter(run.status for run in runs)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))

"""The report's numbers: per configuration, mean ± standard deviation over seeds; the CSV.

A configuration is a run's whole config but its seed (``vae_lab.config.identity``): runs that differ
in any other key are never pooled, and the keys that differ are the table's columns.
Only completed runs enter the statistics. The standard deviation is the sample one (n - 1), and
a column that shows one says so in its header; a cell of one run shows its value with ``n = 1``,
not a ± that no second seed backs, a cell with none a dash, and a metric that only some of a
cell's runs have (the eval/ gaps, before every run is evaluated) says its n. The Monte Carlo
stderr of log p(x) and the PSIS k-hat are each run's own diagnostics: their columns show the
mean over seeds alone. Spreads are printed to two significant digits, so that a small one is
never a bare 0.00.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_lab.config.identity import configuration
from vae_lab.records.collect import Run, option_rank, with_status

#: (metric, column title); the eval/ gaps appear once `python -m vae_lab.evaluate` has run, the
#: refined q's gap and the sample-quality columns where some run has them
METRICS = (
    ("test/elbo", "ELBO"),
    ("test/log_px", "log p(x)"),
    ("test/log_px_stderr", "stderr"),  # the IW estimate's Monte Carlo standard error
    ("test/bits_per_dim", "bits/dim"),  # the twin of log p(x) under a grey-level likelihood
    ("eval/bits_per_dim", "bits/dim, best"),  # the twin of evaluate's best log p(x)
    ("test/psis_khat", "k̂"),  # above 0.7 the IW estimate of log p(x) is unreliable
    ("test/inference_gap", "inference gap"),
    ("eval/approximation_gap", "approximation gap"),
    ("eval/amortization_gap", "amortization gap"),
    ("eval/amortization_gap_refined", "amortization gap, refined q"),  # objective=savae
    # model=hierarchical: the active units of each stochastic layer (Burda et al. 2016, Table 2)
    ("test/active_units_z1", "active units z1"),
    ("test/active_units_z2", "active units z2"),
    # sample quality (vae_lab.evaluation.sample_quality), where the runs have it
    ("test/fid_recon", "FID recon"),
    ("test/fid_samples", "FID samples"),
    ("test/kid_samples", "KID samples"),
    ("test/precision_samples", "precision"),
    ("test/recall_samples", "recall"),
)
#: shown in every table; the others only where some completed run has them
ALWAYS_SHOWN = ("test/elbo", "test/log_px", "test/inference_gap")
#: a run's own uncertainty or diagnostic: the table gives their mean over seeds, with no ± (the
#: spread of a standard error over seeds is no figure a reader wants)
MEAN_ONLY = ("test/log_px_stderr", "test/psis_khat")
SPREAD = ("test/log_px_stderr",)  # printed like a standard deviation (``significant``)
SD_HEADER = " ± sd over seeds"
CSV_LEAD = ("folder", "status", "data", "posterior", "prior", "likelihood", "model", "seed")
CSV_TAIL = ("wall_time_s", "error")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for a single value) of n values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(mean=statistics.fmean(values), std=std, n=len(values))

    def __str__(self) -> str:
        """``mean ± sd``; ``mean (n = 1)`` for one value, whose sd over seeds is unknown."""
        if self.std is None:
            return f"{self.mean:.2f} (n = 1)"
        return f"{self.mean:.2f} ± {significant(self.std)}"


def significant(value: float, digits: int = 2) -> str:
    """``value`` to ``digits`` significant digits and at least two decimals, without exponent:
    a standard error of 0.0013 nats is 0.0013, not the 0.00 of a fixed two decimals."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.2f}"
    decimals = max(2, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Cell:
    """The runs of one configuration (their whole config but the seed), whatever their status.

    ``columns`` are the keys that tell the table's configurations apart, with this one's
    values: ``posterior`` and ``prior`` always, ``data`` and any other key (``optim.lr``)
    where they differ among the runs read.
    """

    columns: tuple[tuple[str, str], ...]
    runs: tuple[Run, ...]

    @property
    def completed(self) -> list[Run]:
        return with_status(self.runs, "completed")

    def stat(self, metric: str) -> Stat | None:
        values = [run.value(metric) for run in self.completed]
        return Stat.of([v for v in values if v is not None])

    def value(self, key: str) -> str:
        return dict(self.columns).get(key, "-")

    @property
    def data(self) -> str:
        return self.value("data")

    @property
    def posterior(self) -> str:
        return self.value("posterior")

    @property
    def prior(self) -> str:
        return self.value("prior")

    def label(self, with_data: bool = False) -> str:
        """E.g. ``flow · vamp`` or ``flow · vamp · optim.lr=0.001``."""
        parts = [
            value if key in LEAD else f"{key}={value}"
            for key, value in self.columns
            if key != "data" or with_data
        ]
        return " · ".join(parts)


#: the keys that lead the table, in this order (data only where several datasets are read)
LEAD = ("data", "posterior", "prior")
_ABSENT = "—"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_keys(identities: Sequence[dict[str, Any]]) -> list[str]:
    """The keys whose value differs among the identities (a key one of them lacks included)."""
    keys = sorted(set().union(*identities)) if identities else []
    return [
        key
        for key in keys
        if len({_canonical(ident.get(key, _ABSENT)) for ident in identities}) > 1
    ]


def column_keys(
    identities: Sequence[dict[str, Any]], groups: set[str], differing: Sequence[str]
) -> list[str]:
    """The differing keys that name a configuration: a config group's option, and any other
    key only where it differs among runs with the same options (``posterior=flow`` and
    ``posterior=gaussian`` differ in ``posterior.num_flows`` because their options do)."""
    shown = []
    for key in differing:
        if key not in groups:
            by_options: dict[str, set[str]] = {}
            for ident in identities:
                options = _canonical({group: ident.get(group) for group in sorted(groups)})
                by_options.setdefault(options, set()).add(_canonical(ident.get(key, _ABSENT)))
            if all(len(values) == 1 for values in by_options.values()):
                continue
        shown.append(key)
    lead = [k for k in LEAD if k != "data" or k in shown]
    return [*lead, *(k for k in shown if k not in LEAD)]


def _shown_value(value: Any) -> str:
    return _ABSENT if value is None else str(value)


def _order(cell: Cell) -> tuple:
    """The contract's order of data, posterior and prior, then the other values (numbers
    by value)."""
    ranks = [option_rank(key, cell.value(key)) for key in LEAD]
    rest = []
    for key, value in cell.columns:
        if key not in LEAD:
            try:
                rest.append((0, float(value), ""))
            except ValueError:
                rest.append((1, 0.0, value))
    return (*ranks, *rest)


def cells(runs: Sequence[Run]) -> list[Cell]:
    """The runs grouped by their whole config but the seed: one cell per configuration.

    Runs whose metrics.json could not be read are left out: their config is unknown.
    """
    readable = [run for run in runs if run.status != "unreadable"]
    identities = [configuration(run.identity) for run in readable]
    differing = differing_keys(identities)
    groups = {group for run in readable for group in run.choices}
    columns = column_keys(identities, groups, differing)
    groups: dict[tuple[str, ...], list[Run]] = {}
    shown: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
    for run, ident in zip(readable, identities, strict=True):
        key = tuple(_canonical(ident.get(k, _ABSENT)) for k in differing)
        groups.setdefault(key, []).append(run)
        values = {**{k: run.choice(k) for k in LEAD}, **ident}
        shown[key] = tuple((k, _shown_value(values.get(k, _ABSENT))) for k in columns)
    table = [Cell(shown[key], tuple(members)) for key, members in groups.items()]
    return sorted(table, key=_order)


def several_datasets(table: Sequence[Cell]) -> bool:
    return bool(table) and "data" in dict(table[0].columns)


def shown_metrics(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """``METRICS`` in their order: the always-shown ones and those some completed run has."""
    completed = with_status(runs, "completed")
    return [
        (key, title)
        for key, title in METRICS
        if key in ALWAYS_SHOWN or any(run.value(key) is not None for run in completed)
    ]


def headed(table: Sequence[Cell], metrics: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The metrics with `` ± sd over seeds`` added to the title of each column whose cells show
    a ± (some cell has several seeds), so that a reader never takes it for a standard error."""
    return [
        (key, title + SD_HEADER)
        if key not in MEAN_ONLY and any((s := c.stat(key)) is not None and s.n > 1 for c in table)
        else (key, title)
        for key, title in metrics
    ]


def _shown(key: str, stat: Stat | None, runs: int) -> str:
    """A statistic for the table; with its n when only some of the runs have the metric."""
    if stat is None:
        return "—"
    if key in MEAN_ONLY:
        text = significant(stat.mean) if key in SPREAD else f"{stat.mean:.2f}"
    elif stat.n == 1:
        return str(stat)  # it says n = 1 already
    else:
        text = str(stat)
    return text if stat.n == runs else f"{text} (n = {stat.n})"


def markdown_table(table: Sequence[Cell], metrics: Sequence[tuple[str, str]]) -> str:
    """One row per cell: its configuration, the number of completed runs, mean ± sd per
    metric."""
    keys = [key for key, _ in table[0].columns] if table else list(LEAD[1:])
    header = [*keys, "runs", *(title for _, title in metrics)]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * len(keys) + ["---:"] * (len(metrics) + 1)) + " |",
    ]
    for cell in table:
        row = [
            *(value for _, value in cell.columns),
            str(len(cell.completed)),
            *(_shown(key, cell.stat(key), len(cell.completed)) for key, _ in metrics),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_csv(runs: Sequence[Run], path: Path, table: Sequence[Cell] = ()) -> None:
    """One row per run: its folder (relative to the CSV's), status, options, the keys that
    tell the table's configurations apart, metrics, error."""
    config = [k for k, _ in table[0].columns if k not in CSV_LEAD] if table else []
    keys = {key for run in runs for key in run.metrics}
    middle = sorted(keys - set(CSV_LEAD) - set(CSV_TAIL) - set(config))
    columns = [*CSV_LEAD, *config, *middle, *CSV_TAIL]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for run in runs:
            row = {key: run.metrics.get(key, run.identity.get(key)) for key in columns}
            row["folder"] = os.path.relpath(run.folder, path.parent)
            writer.writerow(row)

"""The report's numbers: per posterior x prior, mean ± standard deviation over seeds; the CSV.

Only completed runs enter the statistics. The standard deviation is the sample one (n - 1);
a cell with one run shows its value alone, a cell with none a dash, and a metric that only
some of a cell's runs have (the eval/ gaps, before every run is evaluated) says its n.
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vae_lab.report.collect import Run, with_status

#: (metric, column title); the eval/ gaps appear once `python -m vae_lab.evaluate` has run, the
#: sample-quality columns where some run has them
METRICS = (
    ("test/elbo", "ELBO"),
    ("test/log_px", "log p(x)"),
    ("test/inference_gap", "inference gap"),
    ("eval/approximation_gap", "approximation gap"),
    ("eval/amortization_gap", "amortization gap"),
    # sample quality (vae_lab.sample_quality), where the runs have it
    ("test/fid_recon", "FID recon"),
    ("test/fid_samples", "FID samples"),
    ("test/kid_samples", "KID samples"),
    ("test/precision_samples", "precision"),
    ("test/recall_samples", "recall"),
)
ALWAYS_SHOWN = 3  # the first test/ metrics; the others only where some run has them
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
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass(frozen=True)
class Cell:
    """The runs of one data x posterior x prior combination, whatever their status."""

    data: str
    posterior: str
    prior: str
    runs: tuple[Run, ...]

    @property
    def completed(self) -> list[Run]:
        return with_status(self.runs, "completed")

    def stat(self, metric: str) -> Stat | None:
        values = [run.value(metric) for run in self.completed]
        return Stat.of([v for v in values if v is not None])

    def label(self, with_data: bool = False) -> str:
        names = (
            (self.data, self.posterior, self.prior) if with_data else (self.posterior, self.prior)
        )
        return " · ".join(names)


def cells(runs: Sequence[Run]) -> list[Cell]:
    """The runs grouped by data, posterior and prior, in the order of ``runs``.

    Runs whose metrics.json could not be read are left out: their options are unknown.
    """
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        if run.status == "unreadable":
            continue
        key = (run.choice("data"), run.choice("posterior"), run.choice("prior"))
        groups.setdefault(key, []).append(run)
    return [Cell(*key, runs=tuple(members)) for key, members in groups.items()]


def several_datasets(table: Sequence[Cell]) -> bool:
    return len({cell.data for cell in table}) > 1


def shown_metrics(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """The always-shown metrics, then the eval/ gaps that some completed run has."""
    completed = with_status(runs, "completed")
    optional = [
        (key, title)
        for key, title in METRICS[ALWAYS_SHOWN:]
        if any(run.value(key) is not None for run in completed)
    ]
    return [*METRICS[:ALWAYS_SHOWN], *optional]


def _shown(stat: Stat | None, runs: int) -> str:
    """A statistic for the table; with its n when only some of the runs have the metric."""
    if stat is None:
        return "—"
    return str(stat) if stat.n == runs else f"{stat} (n={stat.n})"


def markdown_table(table: Sequence[Cell], metrics: Sequence[tuple[str, str]]) -> str:
    """One row per cell: its options, the number of completed runs, mean ± sd per metric."""
    keys = ["data"] if several_datasets(table) else []
    header = [*keys, "posterior", "prior", "runs", *(title for _, title in metrics)]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * (len(keys) + 2) + ["---:"] * (len(metrics) + 1)) + " |",
    ]
    for cell in table:
        stats = [cell.stat(key) for key, _ in metrics]
        row = [
            *([cell.data] if keys else []),
            cell.posterior,
            cell.prior,
            str(len(cell.completed)),
            *(_shown(stat, len(cell.completed)) for stat in stats),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_csv(runs: Sequence[Run], path: Path) -> None:
    """One row per run: its folder (relative to the CSV's), status, options, metrics, error."""
    keys = {key for run in runs for key in run.metrics}
    middle = sorted(keys - set(CSV_LEAD) - set(CSV_TAIL))
    columns = [*CSV_LEAD, *middle, *CSV_TAIL]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for run in runs:
            row = {key: run.metrics.get(key) for key in columns}  # None -> empty
            row["folder"] = os.path.relpath(run.folder, path.parent)
            writer.writerow(row)

"""``training_curves.png``: val/elbo and train/loss against the step, from each run's
``csv/metrics.csv`` (``logger=csv``, the default).

One colour per configuration (a row of the table): each seed a thin line, their mean at the
steps all seeds logged a thick one, so whether a run had converged, diverged or still improved
when it stopped is seen beside the table's final figures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib import rcParams
from matplotlib.figure import Figure

from vae_lab.records.collect import Run
from vae_lab.records.csv_logger import METRICS_CSV
from vae_lab.report.plots import DPI, LEGEND, WIDTH, _save
from vae_lab.report.table import Cell, several_datasets

CURVES_FILE = "training_curves.png"
NO_CURVES = f"No {CURVES_FILE}: no run has a csv/{METRICS_CSV} (runs logged with logger=csv do)."
#: (metric, panel title), one panel each
CURVES = (("val/elbo", "validation ELBO (higher is better)"), ("train/loss", "training loss"))

Series = dict[int, float]  # step -> value


def history(run: Run) -> dict[str, Series] | None:
    """Each of ``CURVES``' metrics of the run by step, or None when it has no metrics.csv.

    A row logs some metrics only (the training loss every few steps, the validation ELBO once an
    epoch); empty and non-finite values are left out.
    """
    path = run.folder / "csv" / METRICS_CSV
    if not path.is_file():
        return None
    series: dict[str, Series] = {metric: {} for metric, _ in CURVES}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            for metric, values in series.items():
                try:
                    step, value = int(float(row["step"])), float(row[metric])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    values[step] = value
    return series


def mean_curve(seeds: Sequence[Series]) -> Series:
    """The mean over the seeds at the steps every seed logged."""
    steps = sorted(set.intersection(*(set(seed) for seed in seeds))) if seeds else []
    return {step: sum(seed[step] for seed in seeds) / len(seeds) for step in steps}


def training_curves_figure(table: Sequence[Cell]) -> Figure | None:
    """The figure, or None when no run of the table has a metrics.csv."""
    histories = [[h for run in cell.runs if (h := history(run))] for cell in table]
    if not any(histories):
        return None
    plotted = [(cell, seeds) for cell, seeds in zip(table, histories, strict=True) if seeds]
    legend_rows = math.ceil(len(plotted) / LEGEND["ncols"])
    fig = Figure(figsize=(WIDTH, 3.5 + 0.2 * legend_rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(CURVES))
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    with_data = several_datasets(table)
    for k, (cell, seeds) in enumerate(plotted):
        colour = colours[k % len(colours)]
        for ax, (metric, _) in zip(axes, CURVES, strict=True):
            for seed in seeds:  # markers: a metric logged once an epoch may be a single point
                ax.plot(*_xy(seed[metric]), ".-", color=colour, linewidth=0.6, markersize=3,
                        alpha=0.5)  # fmt: skip
            mean = _xy(mean_curve([s[metric] for s in seeds]))
            ax.plot(*mean, "o-", color=colour, linewidth=1.8, markersize=3)
        axes[0].plot([], [], color=colour, linewidth=1.8, label=cell.label(with_data))
    for ax, (_, title) in zip(axes, CURVES, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.legend(**LEGEND)
    fig.suptitle("Training curves: thick the mean over seeds, thin each seed", fontsize=10)
    return fig


def training_curves_plot(table: Sequence[Cell], path: Path) -> Path | None:
    """``training_curves_figure`` saved to ``path``, or None when no run has a metrics.csv."""
    fig = training_curves_figure(table)
    return None if fig is None else _save(fig, path)


def _xy(series: Series) -> tuple[list[int], list[float]]:
    steps = sorted(series)
    return steps, [series[step] for step in steps]

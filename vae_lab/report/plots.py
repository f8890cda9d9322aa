"""The report's figures, drawn with matplotlib's object API (no pyplot state) into PNG files.

Both figures have one horizontal row per data x posterior x prior cell, top to bottom in the
table's order, so they stay readable for the 21 cells of the full grid. They are ``WIDTH``
inches wide and ``figure_height(cells)`` high, at ``DPI`` dots per inch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vae_lab.report.table import Cell, several_datasets

WIDTH = 8.0
DPI = 100
LEGEND = {"loc": "outside lower center", "ncols": 3, "fontsize": 8, "frameon": False}
COLOURS = {"approximation": "#4c72b0", "amortization": "#dd8452", "undecomposed": "#9a9a9a"}


def figure_height(num_cells: int) -> float:
    """Inches: room for the title, axis and legend, plus 0.3 inch a row; at least 3."""
    return max(3.0, 1.5 + 0.3 * num_cells)


def _figure(table: Sequence[Cell]) -> tuple[Figure, Axes, np.ndarray]:
    """A figure with one row per cell, labelled, first cell at the top."""
    fig = Figure(figsize=(WIDTH, figure_height(len(table))), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    rows = np.arange(len(table))
    with_data = several_datasets(table)
    ax.set_yticks(rows, [cell.label(with_data) for cell in table], fontsize=8)
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    return fig, ax, rows


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def gap_plot(table: Sequence[Cell], path: Path) -> Path:
    """The inference gap of each cell as a bar, split where ``vae_lab.evaluate`` has run.

    A cell whose runs carry ``eval/approximation_gap`` and ``eval/amortization_gap`` gets the
    two stacked (approximation first); otherwise one grey bar, ``test/inference_gap``. Bars are
    means over seeds; the whiskers one standard deviation of each segment.
    """
    fig, ax, rows = _figure(table)
    used: dict[str, object] = {}
    for row, cell in zip(rows, table, strict=True):
        approx, amort = cell.stat("eval/approximation_gap"), cell.stat("eval/amortization_gap")
        segments = (
            [("approximation", approx), ("amortization", amort)]
            if approx is not None and amort is not None
            else [("undecomposed", cell.stat("test/inference_gap"))]
        )
        left = 0.0
        for part, stat in segments:
            if stat is None:
                ax.text(0, row, " no completed run", va="center", fontsize=8, color="grey")
                continue
            used[part] = ax.barh(row, stat.mean, left=left, color=COLOURS[part], height=0.6)
            left += stat.mean
            if stat.std is not None:
                ax.errorbar(left, row, xerr=stat.std, color="black", capsize=3, linewidth=1)
    names = {
        "approximation": "approximation gap",
        "amortization": "amortization gap",
        "undecomposed": "inference gap (not split: run vae_lab.evaluate)",
    }
    fig.legend([used[p] for p in used], [names[p] for p in used], **LEGEND)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("nats (mean over seeds, whiskers ± 1 sd)")
    ax.set_title("Gap decomposition: log p(x) - ELBO by posterior · prior", fontsize=10)
    return _save(fig, path)


def log_px_plot(table: Sequence[Cell], path: Path) -> Path:
    """Test log p(x) (IW estimate) per cell: each seed, and mean ± sd; the ELBO just below."""
    fig, ax, rows = _figure(table)
    series = (  # metric, offset in rows, marker, colour, legend
        ("test/log_px", 0.0, "o", "#4c72b0", "log p(x), mean ± sd (faint dots: seeds)"),
        ("test/elbo", 0.25, "D", "#55a868", "ELBO, mean ± sd"),
    )
    for row, cell in zip(rows, table, strict=True):
        seeds = [v for v in (run.value("test/log_px") for run in cell.completed) if v is not None]
        ax.scatter(seeds, [row] * len(seeds), color="#4c72b0", alpha=0.35, s=14, linewidths=0)
        for metric, offset, marker, colour, _ in series:
            stat = cell.stat(metric)
            if stat is not None:
                ax.errorbar(
                    stat.mean, row + offset, xerr=stat.std, fmt=marker, color=colour, capsize=3
                )
    for _, _, marker, colour, legend in series:
        ax.plot([], [], marker, color=colour, label=legend)
    fig.legend(**LEGEND)
    ax.set_xlabel("nats per test image (higher is better)")
    ax.set_title("Test log p(x) by posterior · prior", fontsize=10)
    return _save(fig, path)

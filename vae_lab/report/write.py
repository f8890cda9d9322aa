"""Write the report: collect the runs, tabulate, plot, render report.md and report.csv."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from vae_lab.records.collect import find_runs, with_status
from vae_lab.report.curves import CURVES_FILE, training_curves_plot
from vae_lab.report.document import render
from vae_lab.report.plots import gap_plot, log_px_plot
from vae_lab.report.sample_quality import sample_quality_plot
from vae_lab.report.table import cells, write_csv

log = logging.getLogger(__name__)


def write_report(folders: Sequence[Path], out_dir: Path | None = None) -> list[Path]:
    """Write the report of the runs under ``folders``; the files written.

    Raises ``collect.NoRunsError`` naming a folder that is missing or holds no run. A run whose
    metrics.json is unreadable or malformed is left out of the figures, listed in report.md
    and warned of here, one line each, so that one bad record never costs the whole report.
    """
    runs = find_runs(folders)
    for run in with_status(runs, "unreadable"):
        log.warning("%s: metrics.json left out of the report: %s", run.folder, run.metrics["error"])
    out_dir = out_dir or folders[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    table = cells(runs)
    plots = [gap_plot(table, out_dir / "gaps.png"), log_px_plot(table, out_dir / "log_px.png")]
    if (blur := sample_quality_plot(table, out_dir / "sample_quality.png")) is not None:
        plots.append(blur)
    if (curves := training_curves_plot(table, out_dir / CURVES_FILE)) is not None:
        plots.append(curves)
    markdown, csv_path = out_dir / "report.md", out_dir / "report.csv"
    markdown.write_text(render(runs, table, plots, out_dir))
    write_csv(runs, csv_path, table)
    return [markdown, csv_path, *plots]

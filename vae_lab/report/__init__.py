"""``python -m vae_lab.report DIR... [--out DIR]``: aggregate runs into a report.

Reads every ``metrics.json`` under the folders (a sweep still running or partly failed is
fine) and writes into ``--out``, by default the first folder:

* ``report.md``: per posterior x prior, mean ± sd over seeds of test/elbo, test/log_px,
  test/inference_gap and, where ``vae_lab.evaluate`` has run, the approximation and
  amortization gaps; the count of runs; failed runs with their errors; plots; each run's images;
* ``report.csv``: one row per run;
* ``gaps.png`` (the gap decomposition) and ``log_px.png`` (log p(x) per posterior x prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vae_lab.report.collect import NoRunsError, find_runs
from vae_lab.report.document import render
from vae_lab.report.plots import gap_plot, log_px_plot
from vae_lab.report.table import cells, write_csv

__all__ = ["NoRunsError", "write_report"]


def write_report(folders: Sequence[Path], out_dir: Path | None = None) -> list[Path]:
    """Write the report of the runs under ``folders``; the files written."""
    runs = find_runs(folders)
    out_dir = out_dir or folders[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    table = cells(runs)
    plots = [gap_plot(table, out_dir / "gaps.png"), log_px_plot(table, out_dir / "log_px.png")]
    markdown, csv_path = out_dir / "report.md", out_dir / "report.csv"
    markdown.write_text(render(runs, table, plots, out_dir))
    write_csv(runs, csv_path)
    return [markdown, csv_path, *plots]

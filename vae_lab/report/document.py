"""``report.md``: the table, the runs that failed or still run, the plots, each run's images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vae_lab.records.collect import Run, status_counts, with_status
from vae_lab.report.curves import CURVES_FILE, NO_CURVES
from vae_lab.report.table import Cell, headed, markdown_table, shown_metrics

#: image grids that vae_lab.training.callbacks.ImageGrids leaves in every run folder
RUN_IMAGES = (
    ("reconstructions.png", "rows of test images (input) above their reconstructions (recon)"),
    ("prior_samples.png", "prior samples"),
)

RUNNING = "Still running (another process holds their .run.lock)"
KILLED = "Stopped without recording how they ended (killed outright; resume them with resume=)"
UNREADABLE = "Unreadable metrics.json"
OTHER_SPLIT = "Evaluated on another split than test (their eval/ figures are not in the table)"


def _run_name(run: Run, out_dir: Path) -> str:
    return f"`{os.path.relpath(run.folder, out_dir)}`"


def _options(run: Run) -> str:
    """Posterior, prior, the objective where it is not the default ELBO, data and seed."""
    objective = run.choice("objective")
    shown = [run.choice("posterior"), run.choice("prior")]
    shown += [objective] if objective not in ("elbo", "-") else []
    return ", ".join([*shown, run.choice("data"), f"seed {run.seed}"])


def _listing(title: str, runs: Sequence[Run], out_dir: Path, with_error: bool) -> list[str]:
    if not runs:
        return []
    lines = [f"## {title}", ""]
    for run in runs:
        error = f": {run.metrics.get('error', 'no error recorded')}" if with_error else ""
        lines.append(f"- {_run_name(run, out_dir)} ({_options(run)}){error}")
    return [*lines, ""]


def _image(run: Run, name: str, out_dir: Path) -> str:
    path = run.folder / name
    return f"![{name}]({os.path.relpath(path, out_dir)})" if path.exists() else f"no {name}"


def _images(runs: Sequence[Run], out_dir: Path) -> list[str]:
    header = ["run", "options", *(title for _, title in RUN_IMAGES)]
    lines = ["## Images of each run", "", "| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join(["---"] * len(header)) + " |")
    for run in runs:
        images = [_image(run, name, out_dir) for name, _ in RUN_IMAGES]
        lines.append(
            f"| {_run_name(run, out_dir)} | {_options(run)} | " + " | ".join(images) + " |"
        )
    return [*lines, ""]


def render(runs: Sequence[Run], table: Sequence[Cell], plots: Sequence[Path], out_dir: Path) -> str:
    """The whole of report.md; links are relative to ``out_dir``, where it is written."""
    lines = [
        "# vae_lab report",
        "",
        f"{len(runs)} runs ({status_counts(runs)}). Mean over the seeds of the completed runs, in",
        "nats; log p(x) and the ELBO are per test image, higher is better. A ± is the standard",
        "deviation over seeds (its column says so); a figure of one seed says n = 1 instead.",
        "stderr is the mean of the runs' Monte Carlo standard errors of log p(x), k̂ their mean",
        "PSIS k-hat (above 0.7 the importance-weighted estimate is unreliable).",
        "",
        markdown_table(table, headed(table, shown_metrics(runs))),
        "",
        *_listing("Failed runs", with_status(runs, "failed"), out_dir, with_error=True),
        *_listing(RUNNING, with_status(runs, "running"), out_dir, with_error=False),
        *_listing(KILLED, with_status(runs, "killed"), out_dir, with_error=False),
        *_listing(UNREADABLE, with_status(runs, "unreadable"), out_dir, with_error=True),
        *_listing(
            OTHER_SPLIT, [r for r in runs if not r.evaluated_on_test], out_dir, with_error=False
        ),
        "## Plots",
        "",
        *(f"![{plot.stem}]({os.path.relpath(plot, out_dir)})" for plot in plots),
        *([] if any(plot.name == CURVES_FILE for plot in plots) else ["", NO_CURVES]),
        "",
        *_images(with_status(runs, "completed"), out_dir),
    ]
    return "\n".join(lines)

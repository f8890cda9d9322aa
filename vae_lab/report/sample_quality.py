"""The sample-quality figure: per data x posterior x prior, the FID of reconstructions and of
prior samples, and of the samples of each refitted prior.

The FID of reconstructions (z ~ q(z|x)) is what the decoder alone costs; the step up to the FID
of samples (z ~ p(z)) is the prior's share of the blur, drawn as a bar between the two; each
prior refitted to the aggregate posterior (``eval.refit_prior``) is a marker on that bar, so
"how much of the blur the prior causes, and how much each prior removes" is one picture.
A cell evaluated by ``vae_lab.evaluate`` shows its eval/ figures (the refitted priors are
scored on the same images), else the test/ ones of its run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.image import imread

from vae_lab.evaluation.refit import REFIT_OPTIONS
from vae_lab.report.plots import DPI, LEGEND, _figure, _save
from vae_lab.report.table import Cell

MARKERS = {"mixture": "s", "flow": "^", "diffusion": "*"}


def prefix(cell: Cell) -> str:
    return "eval" if cell.stat("eval/fid_samples") is not None else "test"


def sample_quality_figure(table: Sequence[Cell]) -> Figure | None:
    """The figure, or None when no run has sample metrics. Its legend names only what is
    drawn: a refitted prior no run has is no marker to look for."""
    if all(cell.stat(f"{prefix(cell)}/fid_samples") is None for cell in table):
        return None
    fig, ax, rows = _figure(table)
    refitted: set[str] = set()
    drawn = False
    for row, cell in zip(rows, table, strict=True):
        recon = cell.stat(f"{prefix(cell)}/fid_recon")
        samples = cell.stat(f"{prefix(cell)}/fid_samples")
        if recon is None or samples is None:
            ax.text(0, row, " no sample metrics", va="center", fontsize=8, color="grey")
            continue
        drawn = True
        ax.plot([recon.mean, samples.mean], [row, row], color="#c44e52", linewidth=4, alpha=0.35)
        ax.errorbar(recon.mean, row, xerr=recon.std, fmt="o", color="#4c72b0", capsize=3)
        ax.errorbar(samples.mean, row, xerr=samples.std, fmt="D", color="#c44e52", capsize=3)
        for name in REFIT_OPTIONS:
            refit = cell.stat(f"eval/fid_samples_refit_{name}")
            if refit is not None:
                ax.plot(refit.mean, row, MARKERS[name], color="#55a868", markersize=8)
                refitted.add(name)
    if drawn:
        ax.plot([], [], "o", color="#4c72b0", label="FID of reconstructions, z ~ q(z|x)")
        ax.plot([], [], "D", color="#c44e52", label="FID of samples, z ~ p(z)")
        ax.plot([], [], color="#c44e52", linewidth=4, alpha=0.35, label="the prior's share")
        for name, marker in MARKERS.items():
            if name in refitted:
                ax.plot([], [], marker, color="#55a868", label=f"samples of p(z) refitted: {name}")
        fig.legend(**LEGEND)
    ax.set_xlabel("FID to the test images, classifier features (lower is better)")
    ax.set_title("Sample quality: the blur of the decoder and of the prior", fontsize=10)
    return fig


def sample_quality_plot(table: Sequence[Cell], path: Path) -> Path | None:
    """``sample_quality_figure`` saved to ``path``, or None when no run has sample metrics."""
    fig = sample_quality_figure(table)
    return None if fig is None else _save(fig, path)


def side_by_side(grids: Sequence[tuple[str, Path]], path: Path) -> Path:
    """Image grids (PNG files, e.g. ``prior_samples.png`` and ``prior_samples_refit_flow.png``
    of one run) side by side, each under its title, in one PNG."""
    fig = Figure(figsize=(3.2 * len(grids), 3.6), dpi=DPI, layout="constrained")
    for ax, (title, grid) in zip(fig.subplots(1, len(grids), squeeze=False)[0], grids, strict=True):
        ax.imshow(imread(grid), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return _save(fig, path)

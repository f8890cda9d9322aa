"""The report's sample-quality columns and figure, present only where runs have the metrics."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from tests.test_report import completed, make_run, rows
from vae_lab.components.images import save_image_grid
from vae_lab.records.collect import find_runs
from vae_lab.report.sample_quality import sample_quality_figure, side_by_side
from vae_lab.report.table import cells
from vae_lab.report.write import write_report

SAMPLE_METRICS = {
    "test/fid_recon": 10.0,
    "test/fid_samples": 30.0,
    "test/kid_samples": 5.0,
    "test/precision_samples": 0.8,
    "test/recall_samples": 0.4,
}


def test_sample_quality_columns_and_plot_appear_when_runs_have_them(tmp_path):
    make_run(tmp_path / "0", "gaussian", 0, **completed(-90.0, -93.0, **SAMPLE_METRICS))
    refit = {"eval/fid_samples": 31.0, "eval/fid_recon": 9.0, "eval/fid_samples_refit_flow": 15.0}
    make_run(tmp_path / "1", "flow", 0, **completed(-89.0, -92.0, **SAMPLE_METRICS, **refit))
    written = write_report([tmp_path])
    report = (tmp_path / "report.md").read_text()
    header = report.split("\n\n")[2].splitlines()[0]
    assert header.endswith("| FID recon | FID samples | KID samples | precision | recall |")
    one = ["10.00", "30.00", "5.00", "0.80", "0.40"]
    assert rows(report)["gaussian"][-5:] == [f"{v} (n = 1)" for v in one]
    plot = tmp_path / "sample_quality.png"
    assert plot in written and imread(plot).shape[0] > 100
    assert "![sample_quality](sample_quality.png)" in report


def test_the_legend_names_only_the_markers_drawn(tmp_path):
    """Only the flow prior was refitted: no square or star to look for in the legend."""
    refit = {"eval/fid_samples": 31.0, "eval/fid_recon": 9.0, "eval/fid_samples_refit_flow": 15.0}
    make_run(tmp_path / "0", "flow", 0, **completed(-89.0, -92.0, **SAMPLE_METRICS, **refit))
    fig = sample_quality_figure(cells(find_runs([tmp_path])))
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend[-1] == "samples of p(z) refitted: flow"
    assert not any("mixture" in t or "diffusion" in t for t in legend)
    assert len(legend) == 4


def test_no_sample_quality_columns_or_plot_without_the_metrics(tmp_path):
    make_run(tmp_path / "0", "gaussian", 0, **completed(-90.0, -93.0))
    write_report([tmp_path])
    assert "FID" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "sample_quality.png").exists()


def test_side_by_side_puts_the_grids_in_one_image(tmp_path):
    grids = []
    for k, title in enumerate(("standard", "refitted flow", "refitted diffusion")):
        save_image_grid(np.full((16, 8, 8), k / 2), tmp_path / f"{k}.png")
        grids.append((title, tmp_path / f"{k}.png"))
    image = imread(side_by_side(grids, tmp_path / "side.png"))
    assert image.shape[1] > 2.5 * image.shape[0] * 0.8  # three panels in a row

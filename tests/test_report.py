"""The report on hand-made run folders: statistics, listings, links, CSV, plots and errors."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from matplotlib.image import imread, imsave

from tests.conftest import report_cli
from vae_lab.records.collect import find_runs, option_rank
from vae_lab.records.outputs import run_lock
from vae_lab.report.curves import NO_CURVES, mean_curve, training_curves_figure
from vae_lab.report.plots import DPI, WIDTH, figure_height
from vae_lab.report.table import cells, significant
from vae_lab.report.write import write_report


def make_run(folder: Path, posterior: str, seed: int, status: str = "completed", **metrics):
    """A run folder whose metrics.json is what vae_lab.run writes (plus ``metrics``)."""
    folder.mkdir(parents=True)
    record = {"posterior": posterior, "prior": "standard", "data": "digits", "seed": seed}
    (folder / "metrics.json").write_text(json.dumps({**record, "status": status, **metrics}))
    return folder


def completed(log_px: float, elbo: float, **more) -> dict:
    return {"test/log_px": log_px, "test/elbo": elbo, "test/inference_gap": log_px - elbo, **more}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """gaussian: two seeds; full_cov: one completed, one failed; flow: one still running."""
    root = tmp_path / "sweep"
    make_run(root / "0", "gaussian", 0, **completed(-90.0, -93.0))
    make_run(root / "1", "gaussian", 1, **completed(-92.0, -94.0))
    make_run(root / "2", "full_cov", 0, **completed(-89.5, -91.0))
    make_run(root / "3", "full_cov", 1, "failed", error="FloatingPointError: training loss is nan")
    make_run(root / "4", "flow", 0, "running")
    return root


def rows(report: str) -> dict[str, list[str]]:
    """report.md's table: posterior -> the row's cells."""
    lines = [line for line in report.split("\n\n")[2].splitlines()[2:]]
    cells = [[c.strip() for c in line.strip("| ").split(" | ")] for line in lines]
    return {row[0]: row for row in cells}


def test_table_gives_mean_and_sd_over_seeds(sweep):
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    assert "5 runs (3 completed, 1 failed, 1 killed)" in report
    header = report.split("\n\n")[2].splitlines()[0]
    by = " ± sd over seeds"  # gaussian has two seeds
    assert header == f"| posterior | prior | runs | ELBO{by} | log p(x){by} | inference gap{by} |"
    table = rows(report)
    sd = statistics.stdev([-90.0, -92.0])
    assert table["gaussian"] == [
        "gaussian",
        "standard",
        "2",
        f"-93.50 ± {statistics.stdev([-93.0, -94.0]):.2f}",
        f"-91.00 ± {sd:.2f}",
        f"2.50 ± {statistics.stdev([3.0, 2.0]):.2f}",
    ]
    one = "(n = 1)"  # one seed: no sd to give
    assert table["full_cov"] == [
        "full_cov", "standard", "1", f"-91.00 {one}", f"-89.50 {one}", f"1.50 {one}"
    ]  # fmt: skip
    assert table["flow"] == ["flow", "standard", "0", "—", "—", "—"]


def test_failed_and_running_runs_are_listed(sweep):
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    failed = report.split("## Failed runs")[1].split("##")[0].strip()
    assert (
        failed
        == "- `3` (full_cov, standard, digits, seed 1): FloatingPointError: training loss is nan"
    )
    # run 4 is recorded as running, but no process holds its writer lock: it was killed
    killed = report.split("## Stopped without recording")[1].split("##")[0].strip()
    assert killed.split("\n\n")[1] == "- `4` (flow, standard, digits, seed 0)"
    assert "## Still running" not in report
    with run_lock(sweep / "4"):  # a process that trains in it
        write_report([sweep])
        report = (sweep / "report.md").read_text()
    running = report.split("## Still running")[1].split("##")[0].strip().split("\n\n")[1]
    assert running == "- `4` (flow, standard, digits, seed 0)"
    assert "## Stopped without recording" not in report


def test_evaluated_gaps_get_columns_and_stacked_bars(sweep):
    gaps = {"eval/approximation_gap": 0.5, "eval/amortization_gap": 1.5,
            "eval/amortization_gap_refined": 0.7}  # fmt: skip
    make_run(sweep / "5", "iaf", 0, **completed(-88.0, -90.0, **gaps))
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    assert (
        report.split("\n\n")[2]
        .splitlines()[0]
        .endswith("| approximation gap | amortization gap | amortization gap, refined q |")
    )
    assert rows(report)["iaf"][-3:] == ["0.50 (n = 1)", "1.50 (n = 1)", "0.70 (n = 1)"]
    assert rows(report)["gaussian"][-3:] == ["—", "—", "—"]


def test_gaps_evaluated_on_another_split_are_listed_not_tabled(sweep):
    """The table's figures are per test image: the gaps of a run evaluated on the training
    split neither enter it nor pool with another seed's test-split gaps."""
    gaps = {"eval/approximation_gap": 0.5, "eval/amortization_gap": 1.5}
    make_run(sweep / "5", "iaf", 0, **completed(-88.0, -90.0, **gaps, **{"eval/split": "test"}))
    make_run(sweep / "6", "iaf", 1, **completed(-88.0, -90.0, **gaps, **{"eval/split": "train"}))
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    assert rows(report)["iaf"][-2:] == ["0.50 (n = 1)", "1.50 (n = 1)"]
    listing = report.split("## Evaluated on another split than test")[1].split("##")[0]
    assert "`6`" in listing and "`5`" not in listing


def test_a_metric_of_some_runs_only_says_its_n(sweep):
    (sweep / "0" / "metrics.json").write_text(
        json.dumps(
            {
                **json.loads((sweep / "0" / "metrics.json").read_text()),
                "eval/approximation_gap": 1.0,
                "eval/amortization_gap": 2.0,
            }
        )
    )
    write_report([sweep])
    gaps = rows((sweep / "report.md").read_text())["gaussian"][-2:]
    assert gaps == ["1.00 (n = 1)", "2.00 (n = 1)"]


def test_run_images_are_linked_or_said_missing(sweep):
    imsave(sweep / "0" / "reconstructions.png", [[0.0, 1.0]], cmap="gray")
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| `0` |"))
    assert "![reconstructions.png](0/reconstructions.png)" in line
    assert "no prior_samples.png" in line


def test_csv_has_one_row_per_run(sweep):
    write_report([sweep])
    with (sweep / "report.csv").open() as file:
        table = list(csv.DictReader(file))
    assert [row["folder"] for row in table] == ["0", "1", "4", "2", "3"]  # gaussian, flow, full_cov
    assert [row["status"] for row in table][2:] == ["killed", "completed", "failed"]
    assert float(table[0]["test/log_px"]) == -90.0
    assert table[4]["error"].startswith("FloatingPointError") and table[4]["test/log_px"] == ""


def test_plots_are_images_of_the_expected_size(sweep):
    written = write_report([sweep])
    assert [p.name for p in written] == ["report.md", "report.csv", "gaps.png", "log_px.png"]
    for plot in written[2:]:
        assert imread(plot).shape[:2] == (round(figure_height(3) * DPI), round(WIDTH * DPI))


def test_several_folders_into_another(tmp_path, sweep):
    other = make_run(tmp_path / "single", "gaussian", 2, **completed(-91.0, -92.0)).parent
    out = tmp_path / "out"
    write_report([sweep, other], out)
    report = (out / "report.md").read_text()
    assert rows(report)["gaussian"][2] == "3"
    assert "![gaps](gaps.png)" in report
    assert "`../sweep/0`" in report


def test_a_run_named_twice_is_counted_once(tmp_path, sweep, monkeypatch):
    """The sweep and one of its runs, the run by another spelling of its path."""
    monkeypatch.chdir(tmp_path)
    write_report([sweep, Path("sweep") / ".." / "sweep" / "0"], tmp_path / "out")
    assert rows((tmp_path / "out" / "report.md").read_text())["gaussian"][2] == "2"
    with (tmp_path / "out" / "report.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 5


def test_unreadable_metrics_is_listed(sweep):
    (sweep / "1" / "metrics.json").write_text("{not json")
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    assert "## Unreadable metrics.json\n\n- `1`" in report
    assert rows(report)["gaussian"][2] == "1"


@pytest.mark.parametrize("case", [pytest.param("empty", marks=pytest.mark.slow), "missing"])
def test_a_folder_without_runs_is_one_line(tmp_path, case):
    folder = tmp_path / case
    if case == "empty":
        (folder / "sub").mkdir(parents=True)
    result = report_cli(str(folder))
    assert result.returncode == 2
    expected = {
        "empty": f"error: no metrics.json under {folder}: not a run or sweep folder",
        "missing": f"error: {folder} is not a folder",
    }[case]
    assert result.stderr == expected + "\n"


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_cli_writes_the_report(sweep):
    result = report_cli(str(sweep))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {sweep}/report.md, {sweep}/report.csv")


def test_options_sort_by_the_default_then_conf_then_name():
    posteriors = ["zeta", "sylvester", "full_cov", "gaussian", "flow", "alpha"]
    assert sorted(posteriors, key=lambda o: option_rank("posterior", o)) == [
        "gaussian", "flow", "full_cov", "sylvester", "alpha", "zeta"
    ]  # fmt: skip
    assert sorted(["vamp", "flow", "standard"], key=lambda o: option_rank("prior", o)) == [
        "standard", "flow", "vamp"
    ]  # fmt: skip


def test_stderr_and_khat_columns_give_the_mean_of_the_runs(sweep):
    make_run(sweep / "5", "iaf", 0, **completed(-88.0, -90.0, **{
        "test/log_px_stderr": 0.0012, "test/psis_khat": 0.4}))  # fmt: skip
    make_run(sweep / "6", "iaf", 1, **completed(-88.001, -90.0, **{
        "test/log_px_stderr": 0.0014, "test/psis_khat": 0.6}))  # fmt: skip
    write_report([sweep])
    report = (sweep / "report.md").read_text()
    header = report.split("\n\n")[2].splitlines()[0]
    assert "| log p(x) ± sd over seeds | stderr | k̂ | inference gap" in header
    assert rows(report)["iaf"][4:7] == ["-88.00 ± 0.00071", "0.0013", "0.50"]
    assert rows(report)["gaussian"][5:7] == ["—", "—"]


def test_one_seed_says_n_1_and_no_sd_header(tmp_path):
    make_run(tmp_path / "0", "gaussian", 0, **completed(-90.0, -93.0))
    write_report([tmp_path])
    report = (tmp_path / "report.md").read_text()
    assert "±" not in report.split("\n\n")[2]
    assert rows(report)["gaussian"][3:] == [
        "-93.00 (n = 1)", "-90.00 (n = 1)", "3.00 (n = 1)"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0013, "0.0013"), (0.00012345, "0.00012"), (0.5, "0.50"), (1.414, "1.41"), (0.0, "0.00")],
)
def test_spreads_keep_two_significant_digits(value, shown):
    assert significant(value) == shown


def write_history(run: Path, rows: list[tuple[int, str, str]]) -> None:
    """``run``'s csv/metrics.csv as the CSV logger writes it: (step, train/loss, val/elbo)."""
    (run / "csv").mkdir()
    lines = ["epoch,step,train/loss,val/elbo", *(f"0,{s},{loss},{elbo}" for s, loss, elbo in rows)]
    (run / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_training_curves_one_thick_line_per_configuration(sweep):
    write_history(sweep / "0", [(10, "5.0", ""), (20, "4.0", "-95.0"), (30, "3.5", "")])
    write_history(sweep / "1", [(10, "6.0", ""), (20, "4.5", "-96.0")])
    write_history(sweep / "2", [(10, "5.5", "-97.0")])
    written = write_report([sweep])
    assert sweep / "training_curves.png" in written
    assert "![training_curves](training_curves.png)" in (sweep / "report.md").read_text()
    fig = training_curves_figure(cells(find_runs([sweep])))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "gaussian · standard", "full_cov · standard"
    ]  # fmt: skip
    elbo, loss = fig.axes
    thick = [line.get_xydata().tolist() for line in loss.lines if line.get_linewidth() > 1]
    assert thick == [[[10, 5.5], [20, 4.25]], [[10, 5.5]]]  # the means over seeds
    assert len([line for line in elbo.lines if line.get_linewidth() < 1]) == 3  # the seeds


def test_mean_curve_keeps_the_steps_every_seed_logged():
    assert mean_curve([{1: 1.0, 2: 2.0}, {2: 4.0, 3: 0.0}]) == {2: 3.0}


def test_no_training_curves_without_a_csv_is_one_line(sweep):
    written = write_report([sweep])
    assert not (sweep / "training_curves.png").exists()
    assert sweep / "training_curves.png" not in written
    assert (sweep / "report.md").read_text().count(NO_CURVES) == 1

"""Sweeps as a user runs them: ``python -m vae_lab.run -m ...`` in a subprocess, shrunk;
the SLURM launcher up to its sbatch script; the experiment presets and their schedule.

Each launcher runs a 2 x 2 grid to four completed runs that the report turns into a table and
plots; a job made to fail (NaN) is recorded as failed while the others complete. Jobs run with
one torch thread (OMP_NUM_THREADS=1), except under joblib, which sets the threads itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import HydraContext, RunMode
from hydra.utils import instantiate
from matplotlib.image import imread

from tests.conftest import CONF_DIR, REPO, SHRINK, compose_config, options, report_cli
from vae_lab.model.schedules import IWAESchedule, iwae_stage
from vae_lab.records.outputs import read_metrics
from vae_lab.report.plots import DPI, WIDTH, figure_height
from vae_lab.training.threads import available_cores

GRID = ["posterior=gaussian,full_cov", "seed=0,1"]


def run_sweep(sweep_dir: Path, *overrides: str, threads: str | None = "1"):
    """``python -m vae_lab.run -m`` with the shrinking overrides, into ``sweep_dir``.

    ``threads`` is the jobs' OMP_NUM_THREADS; None leaves it to the launcher.
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_lab.run",
            "-m",
            *SHRINK,
            *overrides,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env if threads is None else {**env, "OMP_NUM_THREADS": threads},
    )


def job_metrics(sweep_dir: Path) -> list[dict]:
    return [read_metrics(job) for job in sorted(sweep_dir.iterdir()) if job.name.isdigit()]


def table_rows(report: str) -> list[list[str]]:
    """The cells of report.md's first table, without its header and rule."""
    lines = [line for line in report.splitlines() if line.startswith("| ")]
    header = lines[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return [row for row in rows if len(row) == header.count("|") - 1][:4]


#: the submitit launcher on this machine, one core and ten minutes a job
SUBMITIT_LOCAL = ("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                  "hydra.launcher.timeout_min=10")  # fmt: skip

LAUNCHERS = {  # launcher -> its overrides and the jobs' OMP_NUM_THREADS
    "basic": ([], "1"),
    "joblib": (["hydra.launcher.n_jobs=2"], None),  # two jobs at once, cores // 2 threads each
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_grid_sweep_completes_and_reports(launcher, tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides, threads = LAUNCHERS[launcher]
    result = run_sweep(sweep_dir, *GRID, f"hydra/launcher={launcher}", *overrides, threads=threads)
    assert result.returncode == 0, result.stderr[-3000:]
    expected_threads = int(threads) if threads else max(available_cores() // 2, 1)
    said = f"torch uses {expected_threads} thread{'' if expected_threads == 1 else 's'}"
    for job in range(4):
        assert said in (sweep_dir / f"{job}/run.log").read_text()
    metrics = job_metrics(sweep_dir)
    assert [m["status"] for m in metrics] == ["completed"] * 4
    assert {(m["posterior"], m["seed"]) for m in metrics} == {
        ("gaussian", 0),
        ("gaussian", 1),
        ("full_cov", 0),
        ("full_cov", 1),
    }

    report = report_cli(str(sweep_dir))
    assert report.returncode == 0, report.stderr
    rows = table_rows((sweep_dir / "report.md").read_text())
    assert [row[:3] for row in rows] == [
        ["gaussian", "standard", "2"],
        ["full_cov", "standard", "2"],
    ]
    spread = r"-?\d+\.\d\d ± \d+\.\d+"  # mean ± sd over the two seeds, sd to 2 significant digits
    for row in rows:  # ELBO, log p(x), stderr and k̂ (means over seeds), inference gap
        assert all(re.fullmatch(spread, cell) for cell in (*row[3:5], row[7])), row
        assert re.fullmatch(r"\d+\.\d+", row[5]) and re.fullmatch(r"-?\d+\.\d\d", row[6]), row
    csv_lines = (sweep_dir / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4
    for plot in ("gaps.png", "log_px.png"):
        image = imread(sweep_dir / plot)
        assert image.shape[:2] == (round(figure_height(2) * DPI), round(WIDTH * DPI)), plot


@pytest.mark.slow  # a two-job sweep in a subprocess: make test-full
def test_failing_job_is_isolated_and_reported(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, "+fault=none,nan_loss")
    assert result.returncode == 1  # the sweep went on, then says that a job failed
    completed, failed = job_metrics(sweep_dir)
    assert completed["status"] == "completed"
    assert failed["status"] == "failed"
    assert failed["error"].startswith("FloatingPointError: training loss is nan at step 0")
    assert "1 completed, 1 failed" in result.stdout  # the sweep summary, from Hydra's log

    report = report_cli(str(sweep_dir))
    assert report.returncode == 0, report.stderr
    text = (sweep_dir / "report.md").read_text()
    failures = text.split("## Failed runs")[1].split("##")[0]
    assert (
        "`1` (gaussian, standard, digits, seed 0): FloatingPointError: training loss is nan"
        in failures
    )
    header = next(line for line in text.splitlines() if line.startswith("| posterior"))
    assert header.startswith("| posterior | prior | fault | runs |")  # the faults differ
    assert [row[:4] for row in table_rows(text)] == [
        ["gaussian", "standard", "nan_loss", "0"],
        ["gaussian", "standard", "none", "1"],
    ]


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, "seed=0,1", *SUBMITIT_LOCAL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["status"] for m in job_metrics(sweep_dir)] == ["completed", "completed"]
    assert list((sweep_dir / ".submitit").glob("*/*_log.out"))  # ran through submitit


def test_slurm_launcher_puts_the_cluster_knobs_into_the_sbatch_script(tmp_path, monkeypatch):
    """The real SlurmLauncher up to `sbatch`, which a stand-in copies and refuses."""
    bin_dir, script = tmp_path / "bin", tmp_path / "sbatch_script.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho no cluster >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    knobs = [
        "partition=gpu",
        "timeout_min=720",
        "nodes=2",
        "gpus_per_node=4",
        "tasks_per_node=4",
        "cpus_per_task=8",
        "mem_gb=64",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/launcher=slurm",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
                *(f"hydra.launcher.{knob}" for knob in knobs),
            ],
            return_hydra_config=True,
        )
        monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
        HydraConfig.instance().set_config(cfg)
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(
            hydra_context=HydraContext(config_loader=None, callbacks=None),
            task_function=lambda _: None,
            config=cfg,
        )
        with pytest.raises(Exception, match="no cluster"):
            launcher.launch([["seed=0"]], initial_job_idx=0)
    lines = set(script.read_text().splitlines())
    expected = [
        "--partition=gpu",
        "--time=720",
        "--nodes=2",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--requeue",
        "--signal=USR2@120",
    ]  # requeue: preemption; USR2: submitit requeues
    assert {f"#SBATCH {flag}" for flag in expected} <= lines


def test_presets_compose_to_their_recipe():
    gap = compose_config(["experiment=inference_gap"], shrink=False)
    assert (gap.data._target_, gap.data.batch_size, gap.latent_dim) == (
        "vae_lab.components.data.IDXImages",
        100,
        50,
    )
    assert list(gap.model.hidden) == [200, 200] and gap.model.activation == "tanh"
    assert (gap.optim.lr, gap.optim.eps, gap.trainer.max_epochs) == (1e-3, 1e-4, 3280)
    assert gap.lr_schedule._target_ == "vae_lab.model.schedules.IWAESchedule"
    quick = compose_config(["experiment=quick"], shrink=False)
    assert quick.data._target_ == "vae_lab.components.data.Digits" and quick.optim.eps == 1e-4

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = compose("config", ["experiment=quick"], return_hydra_config=True).hydra
    grid = hydra.sweeper.params
    for group in ("posterior", "prior"):  # every option the grid sweeps exists
        for option in grid[group].split(","):
            assert (CONF_DIR / group / f"{option}.yaml").exists(), (group, option)
    assert hydra.mode == RunMode.MULTIRUN and grid.seed == "0,1"


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_preset_takes_every_model(preset):
    """A preset leaves the networks to the model group: each model option composes with it
    and builds for MNIST's shape (a preset that set mlp's keys broke model=conv)."""
    for model in options("model"):
        cfg = compose_config([f"experiment={preset}", f"model={model}"], shrink=False)
        nets = instantiate(cfg.model, data_shape=(28, 28), latent_dim=cfg.latent_dim)
        assert nets.feature_dim > 0, (preset, model)


def test_iwae_schedule_stages():
    stages = [iwae_stage(epoch) for epoch in range(3280)]
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(8)]  # 3,280 epochs
    assert stages == sorted(stages) and iwae_stage(3280) == 8
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = IWAESchedule(optimizer)
    rates = []
    for _ in range(40):  # stages 0..3: 1, 3, 9, 27 epochs
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [1e-3 * 10 ** (-iwae_stage(epoch) / 7) for epoch in range(40)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[-1] == pytest.approx(1e-3 * 10 ** (-3 / 7))

"""A job of a sweep killed outright (SIGKILL, ``+fault=sigkill``): the sweep ends with one line
naming the launcher's failure and the summary, never a traceback, and exit status 1.

Under submitit (the SLURM path) every job is a process of its own: the healthy job beside the
killed one completes, and the summary counts both. Under joblib a dead worker stops the whole
pool (loky), so the healthy job stops too; the summary still says how each ended.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.test_sweeps import SUBMITIT_LOCAL, job_metrics, run_sweep
from vae_lab.records import sweep

LAUNCHER_STOPPED = "error: the sweep's launcher stopped: "
SUMMARY = re.compile(r"sweep \S+: (.+); report: python -m vae_lab.report")


def one_line_and_summary(result) -> str:
    """The counts of the sweep summary, after checking the exit status and the one line."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(LAUNCHER_STOPPED), result.stderr[-2000:]
    summary = SUMMARY.search(result.stdout)
    assert summary is not None, result.stdout[-2000:]
    return summary[1]


@pytest.mark.slow
def test_submitit_isolates_a_killed_job_and_summarises_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, "+fault=sigkill,none", *SUBMITIT_LOCAL)
    assert one_line_and_summary(result) == "1 completed, 1 killed"
    killed, healthy = job_metrics(sweep_dir)
    assert killed["status"] == "running"  # the record it could not finish: the summary reads it
    assert healthy["status"] == "completed"


@pytest.mark.slow
def test_joblib_stops_with_one_line_and_the_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, "+fault=sigkill,none", "hydra.launcher.n_jobs=2",
                       "hydra/launcher=joblib", threads=None)  # fmt: skip
    assert "1 killed" in one_line_and_summary(result) or "2 killed" in one_line_and_summary(result)


def test_the_line_starts_a_line_after_a_job_stopped_in_the_middle_of_its_bar(
    tmp_path, monkeypatch, capsys
):
    """joblib's jobs share the sweep's stderr: one stopped while it drew a progress bar leaves
    its line unended, and the error must not run on after it."""
    monkeypatch.setattr(sweep, "_sweep_dir", [tmp_path])
    sys.stderr.write("IW:   0%|          | 0/4 [00:00<?, ?batch/s]")
    assert sweep.launcher_stopped(RuntimeError("a worker died\nmore")) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"{LAUNCHER_STOPPED}RuntimeError: a worker died (HYDRA_FULL_ERROR=1 shows its traceback)"
    ]

"""One writer a run folder, with real processes: of two runs started together into one folder
exactly one trains and the other is refused with one line; a resume, and an evaluation, of a
run still training are refused before they write anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SHRINK
from vae_lab.records.outputs import RUN_LOCK, held_by_another, read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(*argv: str, module: str = "vae_lab.run") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv], cwd=REPO, env=ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_two_runs_started_together_into_one_folder_leave_one_run(tmp_path):
    folder = tmp_path / "run"
    runs = [start(*SHRINK, f"seed={seed}", f"hydra.run.dir={folder}") for seed in (0, 1)]
    ended = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    statuses = sorted(status for status, _ in ended)
    assert statuses == [0, 2], ended
    refused = next(err for status, err in ended if status == 2)
    assert refused.strip().splitlines()[-1].startswith(f"error: {folder}")
    record = read_metrics(folder)
    winner = [seed for (status, _), seed in zip(ended, (0, 1), strict=True) if status == 0]
    assert record["status"] == "completed" and record["seed"] == winner[0]


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_a_run_still_training_refuses_a_resume_and_an_evaluation(tmp_path):
    folder = tmp_path / "run"
    live = start(*SHRINK, "trainer.max_epochs=100000", f"hydra.run.dir={folder}")
    try:
        deadline = time.monotonic() + 120
        while not (folder / "checkpoints" / "last.ckpt").exists():
            assert live.poll() is None and time.monotonic() < deadline, live.stderr.read()
            time.sleep(0.2)
        assert held_by_another(folder)
        before = {p: p.read_bytes() for p in (folder / ".hydra").iterdir()}
        resumed = start(f"resume={folder}", "trainer.max_epochs=200000")
        assert resumed.wait(timeout=120) == 2
        assert f"holds {folder / RUN_LOCK}" in resumed.stderr.read()
        evaluated = start(f"run_dir={folder}", "eval.stages=[iw]", module="vae_lab.evaluate")
        assert evaluated.wait(timeout=120) == 2
        assert "is still training" in evaluated.stderr.read()
        assert {p: p.read_bytes() for p in (folder / ".hydra").iterdir()} == before
        assert not (folder / "eval.json").exists()
    finally:
        live.kill()
        live.wait()
    assert not held_by_another(folder)  # the lock went with the process


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_a_folder_whose_claim_was_made_is_refused(tmp_path):
    """The claim is the folder's ``.hydra/``: a folder that has one holds a run, even one that
    died before its first record."""
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *SHRINK, f"hydra.run.dir={folder}"], cwd=REPO,
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {folder} already holds")
    assert sorted(p.name for p in Path(folder).iterdir()) == [".hydra", RUN_LOCK, "run.log"]

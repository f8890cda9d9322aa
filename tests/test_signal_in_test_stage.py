"""SIGTERM is honoured within seconds in the test stage after training (SLURM's grace period
is short): the run records ``interrupted`` and exits with 128 + 15."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, SHRINK
from vae_lab.records.outputs import read_metrics


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_sigterm_during_a_long_test_stage_stops_it_at_once(tmp_path):
    folder = tmp_path / "run"
    argv = [*SHRINK, "eval.num_samples=2000000", f"hydra.run.dir={folder}"]  # minutes of IW
    run = subprocess.Popen(
        [sys.executable, "-m", "vae_lab.run", *argv], cwd=REPO, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for line in run.stdout:  # the test stage announces its IW estimate as it starts
            if "iw: K = 2000000" in line:
                break
        assert run.poll() is None, "the run ended before its test stage"
        time.sleep(1.0)
        sent = time.monotonic()
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 10
    finally:
        run.kill()
        run.wait()
    record = read_metrics(folder)
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]

"""The torch threads of a job: the cores this process may run on, OMP_NUM_THREADS first, and
one warning line when other processes already load the cores."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

import vae_lab
from vae_lab.training.threads import default_threads, oversubscribed, use_threads

WARNING = "oversubscribed"


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """Restore torch's threads, and start from no OMP_NUM_THREADS and a 3-core affinity mask."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    yield
    torch.set_num_threads(threads)


def test_the_default_is_the_affinity_mask_not_the_machine():
    assert default_threads() == 3


def test_without_an_affinity_mask_every_core(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert default_threads() == 7


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() == 2


def test_use_threads_without_a_number_takes_the_default(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    use_threads(None)
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize(
    ("load", "threads", "expected"),
    [(0.2, 3, False), (3.0, 3, False), (5.9, 3, False), (6.0, 3, True), (4.0, 1, True)],
)
def test_oversubscribed_when_the_load_exceeds_the_cores_by_a_job(load, threads, expected):
    """A load of the cores alone may be the previous job of a sequential sweep: no warning."""
    assert oversubscribed(load, cores=3, threads=threads) is expected


@pytest.mark.parametrize(("load", "warnings"), [(9.0, 1), (0.5, 0)])
def test_one_warning_line_when_the_machine_is_busy(monkeypatch, caplog, load, warnings):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    with caplog.at_level(logging.INFO, logger="vae_lab.training.threads"):
        use_threads(2)
    said = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == warnings
    assert all(WARNING in r.getMessage() and "num_threads=1" in r.getMessage() for r in said)
    assert "torch uses 2 threads" in caplog.text


def test_a_one_thread_job_is_not_told_to_use_one_thread(monkeypatch, caplog):
    """num_threads=1 already: the warning says only to run fewer jobs at once."""
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    with caplog.at_level(logging.INFO, logger="vae_lab.training.threads"):
        use_threads(1)
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert WARNING in message and "num_threads=1" not in message and "fewer jobs" in message
    assert "torch uses 1 thread" in caplog.text and "1 threads" not in caplog.text


def test_importing_vae_lab_shortens_openmp_spinning_unless_set():
    """Set before torch loads OpenMP; a value the user gave wins."""
    code = "import os, vae_lab; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert ours.stdout.strip() == vae_lab.OPENMP_SPIN_COUNT
    theirs = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "7"},
                            capture_output=True, text=True)  # fmt: skip
    assert theirs.stdout.strip() == "7"

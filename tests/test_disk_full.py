"""A record that cannot be written (a full disk, a file-size limit), a checkpoint included: one
line naming the file, exit status 2, and every file of the run as it was, with no temporary
file left beside it.

The full disk is a file system that takes the temporary file but none of its bytes
(``OSError(ENOSPC)`` on write, as Linux gives); the file-size limit is a real
``RLIMIT_FSIZE`` in a process of its own (``EFBIG``): 64 bytes, less than any record, or
200 kB, more than a small run's records and less than its checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_faults import EVAL_QUICK, invoke, snapshot
from tests.test_resume_transaction import one_line
from vae_lab.records import outputs
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
from vae_lab.records.outputs import EVAL_LOCK, WriteError, read_metrics, write_json

NAMED_TEMPORARY_FILE = tempfile.NamedTemporaryFile
EMPTY = hashlib.sha256(b"").hexdigest()


class FullDisk:
    """``tempfile.NamedTemporaryFile`` on a full disk: the file is made, a write fails."""

    def __init__(self, *args, **kwargs) -> None:
        self.file = NAMED_TEMPORARY_FILE(*args, **kwargs)
        self.name = self.file.name

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk(monkeypatch) -> None:
    monkeypatch.setattr(outputs.tempfile, "NamedTemporaryFile", FullDisk)


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    shutil.copytree(finished / "0", tmp_path / "run")
    return tmp_path / "run"


def test_a_record_not_written_is_as_it_was_and_names_its_file(tmp_path, full_disk):
    path = tmp_path / "metrics.json"
    path.write_text('{"status": "completed"}')
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        write_json(path, {"status": "running"})
    assert read_metrics(tmp_path) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no .tmp left


def test_a_resume_on_a_full_disk_changes_nothing(run_dir, full_disk, monkeypatch, capsys):
    before = snapshot(run_dir)
    argv = [f"resume={run_dir}", "trainer.max_epochs=2"]
    message = one_line(*invoke("run", argv, monkeypatch, capsys))
    assert "No space left on device" in message and str(run_dir) in message, message
    assert snapshot(run_dir) == before


def test_an_evaluation_on_a_full_disk_changes_nothing(run_dir, full_disk, monkeypatch, capsys):
    before = snapshot(run_dir)
    status, err = invoke("evaluate", [f"run_dir={run_dir}", *EVAL_QUICK], monkeypatch, capsys)
    assert status != 0
    assert "Traceback" not in err, err[-2000:]
    assert f"cannot write {run_dir}" in err and "No space left on device" in err, err
    after = snapshot(run_dir)
    assert after.pop(EVAL_LOCK) == EMPTY  # the lock it held: an empty file, no record
    assert after == before


def file_size_limit(nbytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: the process may grow no file beyond ``nbytes`` (``EFBIG``, which Python,
    ignoring ``SIGXFSZ``, raises as an ``OSError``)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_naming_the_file(run_dir):
    before = snapshot(run_dir)
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", f"resume={run_dir}", "trainer.max_epochs=2",
         "hydra.job_logging.root.handlers=[console]"],  # Hydra's log file could not grow either
        cwd=REPO, capture_output=True, text=True, timeout=300,
        preexec_fn=file_size_limit(64),  # no record fits
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    message = one_line(result.returncode, result.stderr)
    assert f"cannot write {run_dir}" in message and "File too large" in message, message
    assert snapshot(run_dir) == before


def test_a_checkpoint_not_written_is_as_it_was_and_names_its_file(tmp_path, full_disk):
    target = tmp_path / "best.ckpt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(WriteError, match=f"^cannot write {target}: No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # no .tmp left


def test_a_run_whose_checkpoint_cannot_be_written_fails_in_one_line(tmp_path):
    """A file-size limit that every record of the run fits under but its checkpoint does not
    (as on a full quota): exit status 2, one line naming the file, the run recorded as failed,
    no checkpoint and no temporary file left."""
    run_dir = tmp_path / "run"
    argv = ["debug=fast", "logger=none", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *argv], cwd=REPO, capture_output=True, text=True,
        timeout=300, preexec_fn=file_size_limit(200_000),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    best = run_dir / "checkpoints" / "best.ckpt"
    assert done.returncode == 2, done.stderr[-2000:]
    said = f"error: cannot write {best}: File too large; it is as it was"
    assert done.stderr.splitlines()[-1] == said
    record = read_metrics(run_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"WriteError: cannot write {best}")
    assert list((run_dir / "checkpoints").iterdir()) == []

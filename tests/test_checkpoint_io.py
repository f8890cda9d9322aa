"""Checkpoints are written whole or not at all (``vae_lab.records.checkpoint_io``): a kill
during the write, with the system's temporary folder on another file system than the run
folder, or a full disk, leaves the previous checkpoint as it was, and a run writes its
checkpoints so."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_disk_full import full_disk  # noqa: F401 (a fixture)
from tests.test_faults import invoke
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
from vae_lab.records.outputs import WriteError, read_metrics

#: floats in the checkpoint the killed process writes: 200 MB, a write long enough to kill into
LARGE = 50_000_000
SAVE = f"""
import sys, torch
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({{"step": 2, "w": torch.ones({LARGE})}}, sys.argv[1])
"""


def file_state(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@pytest.fixture
def other_file_system(tmp_path) -> Path:
    """A temporary folder on another file system than ``tmp_path`` where there is one (the
    tmpfs ``/dev/shm``), as a node's local /tmp is to a cluster's shared disk."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to stage a checkpoint on")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def test_a_kill_during_the_write_leaves_a_whole_checkpoint(tmp_path, other_file_system):
    """Killed as soon as the target changes at all: the target is the old checkpoint or the
    new one, whole. (Lightning's own writer, staged in TMPDIR and copied across file systems,
    truncates the target first: killed there, it leaves a file that does not load.)"""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.zeros(10)}, target)
    before = file_state(target)
    env = {**os.environ, "TMPDIR": str(other_file_system), "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([sys.executable, "-c", SAVE, str(target)], cwd=REPO, env=env)
    try:
        while writer.poll() is None and file_state(target) == before:
            time.sleep(0.0002)
    finally:
        writer.kill()
        writer.wait()
    checkpoint = torch.load(target, weights_only=True)
    whole = {1: 10, 2: LARGE}[checkpoint["step"]]
    assert checkpoint["w"].numel() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_is_one_line_and_leaves_the_checkpoint_as_it_was(tmp_path):
    target = tmp_path / "best.ckpt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(WriteError, match=f"^cannot write {target}: No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]


def test_a_run_writes_both_checkpoints_through_it(tmp_path, monkeypatch, capsys):
    written: list[str] = []
    save = AtomicCheckpointIO.save_checkpoint

    def recorded(self, checkpoint, path, storage_options=None):
        written.append(Path(path).name)
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recorded)
    run_dir = tmp_path / "run"
    argv = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    status, err = invoke("run", argv, monkeypatch, capsys)
    assert status == 0, err
    assert set(written) == {"best.ckpt", "last.ckpt"}
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_run_whose_checkpoint_cannot_be_written_fails_in_one_line(tmp_path):
    """A file-size limit that every record of the run fits under but its checkpoint does not
    (``RLIMIT_FSIZE``, ``EFBIG`` as on a full quota): exit status 2, one line naming the file,
    the run recorded as failed, no checkpoint and no temporary file left."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run_dir = tmp_path / "run"
    argv = ["debug=fast", "logger=none", f"hydra.run.dir={run_dir}"]
    done = subprocess.run([sys.executable, "-m", "vae_lab.run", *argv], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limited,
                          capture_output=True, text=True)  # fmt: skip
    best = run_dir / "checkpoints" / "best.ckpt"
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot write {best}: File too large; it is as it was"
    )
    record = read_metrics(run_dir)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"WriteError: cannot write {best}")
    assert list((run_dir / "checkpoints").iterdir()) == []


def test_a_resume_removes_what_a_killed_write_left(finished, tmp_path, monkeypatch, capsys):
    """A kill during a write leaves its temporary file beside the target; the resume, which
    holds the run's locks, removes it, and nothing else of the folder's."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished / "0", run_dir)
    orphans = [run_dir / "checkpoints" / ".last.ckpt.k1lled00.tmp",
               run_dir / ".metrics.json.k1lled00.tmp",
               run_dir / ".hydra" / ".overrides.yaml.k1lled00.tmp"]  # fmt: skip
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    mine = run_dir / "notes.tmp"
    mine.write_text("a file of the user's")
    argv = [f"resume={run_dir}", "trainer.max_epochs=2"]
    status, err = invoke("run", argv, monkeypatch, capsys)
    assert status == 0, err[-2000:]
    assert not any(orphan.exists() for orphan in orphans)
    assert mine.read_text() == "a file of the user's"
    assert not list(run_dir.rglob(".*.tmp"))

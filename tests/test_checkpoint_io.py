"""Checkpoints are written whole or not at all (``vae_lab.records.checkpoint_io``): a kill
during the write, with the system's temporary folder on another file system than the run
folder, leaves a whole checkpoint; a run writes its checkpoints so; a resume removes what a
killed write left. (A full disk and a file-size limit: ``test_disk_full``.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_faults import invoke
from vae_lab.records.checkpoint_io import AtomicCheckpointIO

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
    """Killed as soon as the target changes at all, which is when the new checkpoint is
    renamed over it: the target is the new checkpoint, whole. (Lightning's own writer, staged
    in TMPDIR and copied across file systems, truncates the target first: killed there, it
    leaves a file that does not load.)"""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.zeros(10)}, target)
    before = file_state(target)
    env = {**os.environ, "TMPDIR": str(other_file_system), "OMP_NUM_THREADS": "1"}
    writer = subprocess.Popen([sys.executable, "-c", SAVE, str(target)], cwd=REPO, env=env)
    try:
        while writer.poll() is None and file_state(target) == before:
            time.sleep(0.0002)
        ended = writer.poll()
    finally:
        writer.kill()
        writer.wait()
    assert ended in (None, 0), "the writer failed before it wrote"
    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["step"] == 2 and checkpoint["w"].numel() == LARGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


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

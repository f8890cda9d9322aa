"""A checkpoint records the version of each posterior family's parameterization; weights of
another version (a flow trained before its layers moved onto the standardised noise, or any
checkpoint written before checkpoints recorded it) are refused by evaluate, resume,
``vae_lab.load`` and ``VAE.load_from_checkpoint`` in one line, never read as another q."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vae_lab
from tests.conftest import REPO, SHRINK
from tests.test_faults import invoke, snapshot
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE

CHECKPOINTS = ("last.ckpt", "best.ckpt")


@pytest.fixture(scope="module")
def trained_flow(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flow") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *SHRINK, "posterior=flow", f"hydra.run.dir={folder}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture
def older(trained_flow, tmp_path) -> Path:
    """A copy of the run whose checkpoints predate the record (so: version 1)."""
    folder = tmp_path / "run"
    shutil.copytree(trained_flow, folder)
    for name in CHECKPOINTS:
        path = folder / "checkpoints" / name
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["vae_lab"]["parameterizations"]
        torch.save(checkpoint, path)
    return folder


def test_checkpoints_record_the_families_version(trained_flow):
    stamp = torch.load(trained_flow / "checkpoints" / "last.ckpt", weights_only=True)["vae_lab"]
    assert stamp["parameterizations"] == {"RealNVP": 3}
    assert VAE.load_from_checkpoint(trained_flow / "checkpoints" / "last.ckpt") is not None


@pytest.mark.parametrize("command", ["evaluate", "resume", "load", "load_from_checkpoint"])
def test_weights_of_an_older_parameterization_are_refused(command, older, monkeypatch, capsys):
    before = snapshot(older)
    if command in ("load", "load_from_checkpoint"):
        with pytest.raises(ConfigError) as err:
            if command == "load":
                vae_lab.load(older)
            else:
                VAE.load_from_checkpoint(older / "checkpoints" / "last.ckpt")
        message = str(err.value)
    else:
        argv = {"evaluate": [f"run_dir={older}", "eval.stages=[iw]"],
                "resume": [f"resume={older}", "trainer.max_epochs=2"]}[command]  # fmt: skip
        module = "evaluate" if command == "evaluate" else "run"
        status, stderr = invoke(module, argv, monkeypatch, capsys)
        assert status == 2 and "Traceback" not in stderr, stderr[-2000:]
        message = stderr.strip()
    assert "\n" not in message
    assert "version 1 of the RealNVP posterior's parameterization" in message, message
    assert "now version 3" in message, message
    assert snapshot(older) == before

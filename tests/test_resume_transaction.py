"""A refused run leaves its folder as it was: a resume checks everything (its config, its
last.ckpt, that it would train at all) before it writes, a run that would train nothing is
refused before it claims a folder, and what is refused is said in one line.

Each case runs ``python -m vae_lab.run`` or ``python -m vae_lab.evaluate`` in this process
beside a copy of a finished run (``tests.test_faults``) and checks the exit status, the one
line, and that no file of the run changed (Hydra's run.log may grow).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import SHRINK
from tests.test_faults import invoke, snapshot
from vae_lab.config.validation import ConfigError
from vae_lab.records.interrupts import resume_command
from vae_lab.records.outputs import read_metrics
from vae_lab.records.run_folder import RunFolder, load_model, saved_config


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    """A copy of a finished run: completed, one epoch of three steps (debug=fast)."""
    shutil.copytree(finished / "0", tmp_path / "run")
    return tmp_path / "run"


def one_line(status: int, err: str) -> str:
    """The message of a refusal: exit status 2, one line, no traceback."""
    assert status == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "override, says",
    [
        ("trainer.max_epochs=1", "trainer.max_epochs=1 is not beyond the 1 epochs the run has"),
        ("trainer.max_steps=3", "trainer.max_steps=3 is not beyond the 3 steps the run has"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is invalid"),
    ],
)
def test_a_resume_that_would_train_nothing_leaves_the_run_as_it_was(
    override, says, run_dir, monkeypatch, capsys
):
    before = snapshot(run_dir)
    message = one_line(*invoke("run", [f"resume={run_dir}", override], monkeypatch, capsys))
    assert says in message, message
    assert snapshot(run_dir) == before
    assert read_metrics(run_dir)["status"] == "completed"


def test_a_completed_run_resumed_as_it_is_is_refused(run_dir, monkeypatch, capsys):
    before = snapshot(run_dir)
    message = one_line(*invoke("run", [f"resume={run_dir}"], monkeypatch, capsys))
    assert f"resume={run_dir} is already completed" in message, message
    assert "extend it with trainer.max_epochs=N (N > 1)" in message, message
    assert snapshot(run_dir) == before


def test_a_requeued_job_of_a_completed_run_still_resumes(run_dir, monkeypatch, capsys):
    """SLURM requeues a job whatever its state: its folder resumes by itself, unrefused."""
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    status, err = invoke("run", [f"hydra.run.dir={run_dir}"], monkeypatch, capsys)
    assert status == 0, err[-2000:]
    assert read_metrics(run_dir)["status"] == "completed"


def test_a_truncated_last_checkpoint_is_refused_before_any_write(run_dir, monkeypatch, capsys):
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    before = snapshot(run_dir)
    argv = [f"resume={run_dir}", "trainer.max_epochs=2"]
    message = one_line(*invoke("run", argv, monkeypatch, capsys))
    assert f"{last} cannot be resumed from" in message, message
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_epochs=0",
        "trainer.max_steps=0",
        "trainer.limit_train_batches=0",
        "trainer.limit_train_batches=0.0",
    ],
)
def test_a_run_that_would_train_nothing_is_refused_before_it_claims_a_folder(
    override, tmp_path, monkeypatch, capsys
):
    new = tmp_path / "new"
    argv = [*SHRINK, override, f"hydra.run.dir={new}"]
    message = one_line(*invoke("run", argv, monkeypatch, capsys))
    assert f"{override} is invalid" in message, message
    assert not (new / ".hydra").exists()
    assert not (new / "metrics.json").exists()


@pytest.mark.parametrize("text", ["", "seed: [0\n", "- a list\n"])
@pytest.mark.parametrize("module", ["run", "evaluate"])
def test_a_spoilt_saved_config_is_one_line(module, text, run_dir, monkeypatch, capsys):
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(text)
    before = snapshot(run_dir)
    argv = {"run": [f"resume={run_dir}", "trainer.max_epochs=2"],
            "evaluate": [f"run_dir={run_dir}"]}[module]  # fmt: skip
    message = one_line(*invoke(module, argv, monkeypatch, capsys))
    assert f"{config} is not a run's config" in message, message
    assert snapshot(run_dir) == before


def test_the_resume_command_is_quoted_for_a_shell(tmp_path):
    folder = tmp_path / "a run's folder"
    command = resume_command(folder)
    assert shlex.split(command) == ["python", "-m", "vae_lab.run", f"resume={folder}"]


def test_a_state_dict_mismatch_is_one_line_with_its_counts(run_dir, tmp_path):
    best = run_dir / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    weights = checkpoint["state_dict"]
    weights.pop(next(iter(weights)))
    weights["bogus.weight"] = torch.zeros(1)
    spoilt = tmp_path / "spoilt.ckpt"
    torch.save(checkpoint, spoilt)
    with pytest.raises(ConfigError) as refused:
        load_model(
            saved_config(run_dir), RunFolder(run_dir, spoilt), checkpoint["vae_lab"]["data_dim"]
        )
    message = str(refused.value)
    assert "\n" not in message
    assert "Error(s) in loading state_dict" in message, message
    assert "(1 missing, 1 unexpected, 0 of another shape)" in message, message

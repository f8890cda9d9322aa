"""A run folder received from elsewhere runs none of its code.

A folder's checkpoints and ``.hydra/config.yaml`` are data: a pickle payload in a checkpoint
and a ``_target_`` naming anything but vae_lab's components are refused by ``vae_lab.evaluate``,
``python -m vae_lab.run resume=DIR``, ``vae_lab.load`` and ``VAE.load_from_checkpoint``, in
one line, with the payload never run (its marker file stays absent) and nothing in the folder
changed; a config edited after training is refused as another config than the checkpoint's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import vae_lab
from tests.test_faults import invoke, snapshot
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE

CHECKPOINTS = ("last.ckpt", "best.ckpt")


@pytest.fixture
def trained(finished) -> Path:
    """A finished run folder (the session's sweep's first job); each test works on a copy."""
    return finished / "0"


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


class Payload:
    """Unpickled, would create ``marker``: what a hostile checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def edit_config(run_dir: Path, edit) -> None:
    path = run_dir / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg))


def refused(command: str, run_dir: Path, monkeypatch, capsys) -> str:
    """The one line ``command`` (evaluate, resume or load) refuses ``run_dir`` with."""
    if command == "load":
        with pytest.raises(ConfigError) as err:
            vae_lab.load(run_dir)
        message = str(err.value)
    else:
        module, argv = {"evaluate": ("evaluate", [f"run_dir={run_dir}"]),
                        "resume": ("run", [f"resume={run_dir}"])}[command]  # fmt: skip
        status, err = invoke(module, argv, monkeypatch, capsys)
        assert status == 2, err[-2000:]
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        message = lines[0]
    assert "\n" not in message
    return message


def test_real_checkpoints_load_as_weights_only(trained):
    for name in CHECKPOINTS:
        checkpoint = torch.load(trained / "checkpoints" / name, weights_only=True)
        assert {"state_dict", "vae_lab"} <= checkpoint.keys()
        assert {"run_id", "config_hash", "config", "data_dim"} <= checkpoint["vae_lab"].keys()


@pytest.mark.parametrize("command", ["evaluate", "resume", "load_from_checkpoint"])
def test_a_pickle_payload_in_a_checkpoint_is_never_run(command, run_dir, monkeypatch, capsys):
    marker = run_dir.parent / "marker"
    for name in CHECKPOINTS:
        path = run_dir / "checkpoints" / name
        checkpoint = torch.load(path, weights_only=True)
        torch.save({**checkpoint, "payload": Payload(marker)}, path)
    before = snapshot(run_dir)
    if command == "load_from_checkpoint":
        with pytest.raises(ConfigError) as err:
            VAE.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        message = str(err.value)
        assert "\n" not in message
    else:
        message = refused(command, run_dir, monkeypatch, capsys)
    assert "ckpt" in message
    assert "refused: loading its pickle would call io.open" in message, message
    assert not marker.exists()
    assert snapshot(run_dir) == before


HOSTILE = {  # key -> _target_ and its arguments, which would create the marker file
    "prior": ("builtins.open", ["{marker}", "w"]),
    "prior.inner": ("vae_lab.records.outputs.write_text", ["{marker}", "x"]),
    "likelihood": ("vae_lab.records.run_folder.os.system", ["touch {marker}"]),
}


@pytest.mark.parametrize("key", HOSTILE)
@pytest.mark.parametrize("command", ["evaluate", "resume", "load"])
def test_a_config_naming_other_code_is_refused_before_any_is_run(
    command, key, run_dir, monkeypatch, capsys
):
    marker = run_dir.parent / "marker"
    target, args = HOSTILE[key]
    node = {"_target_": target, "_args_": [a.format(marker=marker) for a in args]}

    def plant(cfg):
        parent, _, leaf = key.rpartition(".")
        (cfg[parent] if parent else cfg)[leaf] = node

    edit_config(run_dir, plant)
    before = snapshot(run_dir)
    message = refused(command, run_dir, monkeypatch, capsys)
    assert f"{key}._target_={target} is not a component of vae_lab" in message
    assert not marker.exists()
    assert snapshot(run_dir) == before


def test_a_checkpoint_naming_other_code_is_refused(run_dir):
    marker = run_dir.parent / "marker"
    path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["vae_lab"]["config"]["prior"] = {"_target_": "builtins.open",
                                                "_args_": [str(marker), "w"]}  # fmt: skip
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=r"^prior\._target_=builtins\.open is not a component"):
        VAE.load_from_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "resume", "load"])
def test_a_config_edited_after_training_is_refused(command, run_dir, monkeypatch, capsys):
    edit_config(run_dir, lambda cfg: cfg["model"].update(activation="relu"))
    before = snapshot(run_dir)
    message = refused(command, run_dir, monkeypatch, capsys)
    config = run_dir / ".hydra" / "config.yaml"
    assert f"was trained under another config than {config} (config_hash " in message
    assert "model.activation=tanh there, relu here" in message
    assert snapshot(run_dir) == before


def test_a_run_extended_by_a_resume_is_its_own(run_dir):
    """A resume may raise trainer.max_epochs: the checkpoints of before are the run's still."""
    edit_config(run_dir, lambda cfg: cfg["trainer"].update(max_epochs=5))
    assert vae_lab.load(run_dir).config.trainer.max_epochs == 5

"""The Python API (docs/python_api.md): ``vae_lab.load(RUN_DIR)``, ``VAE.load_from_checkpoint``
and the model's ``sample``, ``encode`` and ``log_px``, on a run trained here."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import vae_lab
from tests.conftest import REPO, compose_config
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.estimate import Estimate
from vae_lab.model.module import VAE
from vae_lab.run import execute


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as ``python -m vae_lab.run`` leaves it (.hydra/config.yaml, checkpoints,
    metrics.json with its run_id, which the checkpoints are stamped with)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = compose_config()
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    fields = {"posterior": "gaussian", "data": "digits", "run_id": uuid.uuid4().hex}
    assert execute(cfg, folder, fields)["status"] == "completed"
    return folder


class RunsCode:
    """Unpickled, it creates the file ``marker``: a checkpoint holding it carries code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


def test_load_gives_the_model_of_the_checkpoint(run_dir):
    """The run folder's model and the one rebuilt from its checkpoint alone are one model:
    the same weights, the same log p(x) estimate from the same draws."""
    run = vae_lab.load(run_dir)
    assert run.run_dir == run_dir and run.metrics["status"] == "completed"
    assert run.config.posterior._target_.endswith("DiagonalGaussian")
    loaded = VAE.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert not run.model.training and not loaded.training
    assert run.model.state_dict().keys() == loaded.state_dict().keys()
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

    x = run.datamodule.splits[2][:5]
    torch.manual_seed(0)
    ours = run.model.log_px(x, num_samples=50)
    torch.manual_seed(0)
    theirs = loaded.log_px(x, num_samples=50)
    assert isinstance(ours, Estimate) and ours.value.shape == ours.variance.shape == (5,)
    assert torch.equal(ours.value, theirs.value) and torch.equal(ours.variance, theirs.variance)
    assert torch.isfinite(ours.value).all() and (ours.variance > 0).all()
    torch.manual_seed(0)
    assert torch.equal(run.model.iw_estimate(x, 50).log_px.value, ours.value)


def test_sample_and_encode(run_dir):
    run = vae_lab.load(run_dir, checkpoint="last")
    samples = run.model.sample(7)
    assert samples.shape == (7, run.datamodule.data_dim)
    assert ((samples >= 0) & (samples <= 1)).all()  # Bernoulli means, not binary draws
    q = run.model.encode(run.datamodule.splits[2][:3])
    assert isinstance(q, torch.distributions.Distribution)
    assert q.mean.shape == q.stddev.shape == (3, run.config.latent_dim)
    assert q.sample((4,)).shape == (4, 3, run.config.latent_dim)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_onto_a_gpu(run_dir):
    """A model loaded onto a GPU takes data from the CPU, as the datamodule holds it."""
    run = vae_lab.load(run_dir, device="cuda")
    loaded = VAE.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", map_location="cuda")
    assert run.model.device.type == loaded.device.type == "cuda"
    x = run.datamodule.splits[2][:5]
    assert x.device.type == "cpu"
    assert run.model.sample(3).device.type == "cuda"
    assert run.model.encode(x).sample().device.type == "cuda"
    assert torch.isfinite(loaded.log_px(x, num_samples=20).value).all()


def test_load_from_checkpoint_never_runs_code_in_the_file(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "vae_lab": {"data_dim": 1}, "x": RunsCode(marker)}, path)
    with pytest.raises(ConfigError, match="refused: loading its pickle would call") as err:
        VAE.load_from_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: a full unpickling runs it
    assert marker.exists()


def test_a_checkpoint_without_its_config_points_to_load(run_dir, tmp_path):
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["vae_lab"] = {k: v for k, v in checkpoint["vae_lab"].items() if k != "config"}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match=r"vae_lab\.load\(RUN_DIR\)") as err:
        VAE.load_from_checkpoint(tmp_path / "old.ckpt")
    assert "\n" not in str(err.value)


def test_load_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        vae_lab.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"is not a run folder \(no .hydra/config.yaml\)"):
        vae_lab.load(tmp_path)


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_import_vae_lab_leaves_torch_unloaded():
    """The API is imported on first use: the command lines start without it."""
    code = (
        "import sys, vae_lab; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert vae_lab.load.__module__ == 'vae_lab.records.loaded_run'; "
        "assert all(getattr(vae_lab, name) for name in vae_lab.__all__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow  # a whole run in a subprocess: make test-full
def test_example_trains_a_run_and_uses_its_model(tmp_path):
    """examples/load_run.py as a user runs it, with no run folder (a few-second run first)."""
    grid = tmp_path / "samples.png"
    done = subprocess.run(
        [sys.executable, "examples/load_run.py", "--grid", str(grid)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "samples: (16, 64)" in done.stdout
    assert done.stdout.count("log p(x) = ") == 5
    assert grid.stat().st_size > 0

"""DDP on 2 CPU processes: the test figures are its checkpoint's (resumed runs:
tests/test_records.py); the test stage computes in full precision."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.evaluation.test_stage import run_test_stage, stages_for_test
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute
from vae_lab.training.build import build_datamodule

TEST_METRICS = (
    "test/log_px",
    "test/elbo",
    "test/log_px_stderr",
    "test/kl",
    "test/ess",
    "test/active_units",
)


def _test_metrics(overrides: list[str], ckpt: str, run_dir) -> dict[str, float]:
    """The test stage's figures of the checkpoint, in this process."""
    cfg = compose_config(
        [*overrides, "data.eval_batch_size=50", "eval.num_samples=64", "eval.chunk_size=16"]
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    model = VAE.from_config(cfg, datamodule.data_dim)
    stages = stages_for_test(cfg, datamodule)
    metrics = run_test_stage(stages, cfg, model, datamodule, run_dir, ckpt)
    return {k: v for k, v in metrics.items() if k in TEST_METRICS}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A checkpoint of a shrunk digits run."""
    run_dir = tmp_path_factory.mktemp("train")
    assert execute(compose_config(), run_dir, {})["status"] == "completed"
    return str(run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_a_ddp_run_records_the_test_figures_of_its_checkpoint(tmp_path):
    """Two processes train; rank 0 tests the best checkpoint: its figures are those of the
    checkpoint tested in one process."""
    overrides = ["data.eval_batch_size=50", "eval.num_samples=64", "eval.chunk_size=16"]
    ddp = ["trainer=ddp_sim", "trainer.enable_progress_bar=false"]
    record = execute(compose_config([*overrides, *ddp]), tmp_path / "two", {})
    assert record["status"] == "completed"
    one = _test_metrics([], str(tmp_path / "two" / "checkpoints" / "best.ckpt"), tmp_path)
    assert set(one) == set(TEST_METRICS)
    for key in TEST_METRICS:
        assert record[key] == pytest.approx(one[key], rel=1e-6), key


@pytest.mark.slow
def test_ddp_sim_training_writes_one_metrics_file(tmp_path):
    cfg = compose_config(
        [
            "trainer=ddp_sim",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "logger=csv",
        ]
    )
    execute(cfg, tmp_path, {"posterior": "gaussian"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed"
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".png")
    assert names == ["checkpoints", "csv", "metrics.json"]


def test_evaluation_ignores_the_training_precision(ckpt, tmp_path):
    full = _test_metrics([], ckpt, tmp_path / "full")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _test_metrics([], ckpt, tmp_path / "mixed")
    for key in TEST_METRICS:
        assert mixed[key] == pytest.approx(full[key], rel=1e-6), key

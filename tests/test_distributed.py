"""DDP on 2 CPU processes gives the numbers of 1 process (resumed runs: tests/test_records.py)."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from vae_lab.build import build_datamodule, build_model, build_trainer
from vae_lab.outputs import read_metrics
from vae_lab.run import execute

TEST_METRICS = (
    "test/log_px",
    "test/elbo",
    "test/log_px_stderr",
    "test/kl",
    "test/ess",
    "test/active_units",
)


def _test_metrics(overrides: list[str], ckpt: str, run_dir) -> dict[str, float]:
    cfg = compose_config(
        [
            *overrides,
            "trainer.limit_test_batches=null",
            "data.eval_batch_size=50",
            "eval.num_samples=64",
            "eval.chunk_size=16",
        ]
    )
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule.data_dim)
    trainer = build_trainer(cfg, run_dir, None)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k in TEST_METRICS}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A checkpoint of a shrunk digits run."""
    run_dir = tmp_path_factory.mktemp("train")
    assert execute(compose_config(), run_dir, {})["status"] == "completed"
    return str(run_dir / "checkpoints" / "last.ckpt")


def test_two_processes_give_the_numbers_of_one(ckpt, tmp_path):
    # digits' test set has 359 images: 8 batches of 50 (the last of 9), split 4 + 4
    one = _test_metrics([], ckpt, tmp_path / "one")
    two = _test_metrics(
        ["trainer=ddp_sim", "trainer.enable_progress_bar=false"], ckpt, tmp_path / "two"
    )
    print("1 process:", one, "\n2 processes:", two)
    assert set(one) == set(TEST_METRICS)
    for key in TEST_METRICS:
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


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
    mixed = _test_metrics(["trainer.precision=bf16-mixed"], ckpt, tmp_path / "mixed")
    for key in TEST_METRICS:
        assert mixed[key] == pytest.approx(full[key], rel=1e-6), key

"""DDP on 2 CPU processes gives the numbers of 1 process; interrupted runs resume exactly."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl

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


class TerminateAt(pl.Callback):
    """Sends SIGTERM to this process at a given global step, as a scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    # 3 epochs of 3 steps; SIGTERM mid-way through the second epoch
    base = [
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "trainer.limit_test_batches=2",
        "logger=csv",
    ]  # the resumed run continues the interrupted one's metrics.csv
    straight = execute(compose_config(base), tmp_path / "straight", {})
    assert straight["status"] == "completed"

    interrupted = compose_config(
        [
            *base,
            "+callbacks.terminate._target_=tests.test_distributed.TerminateAt",
            "+callbacks.terminate.step=5",
        ]
    )
    with pytest.raises(SystemExit):
        execute(interrupted, tmp_path / "resumed", {})
    record = read_metrics(tmp_path / "resumed")
    assert record["status"] == "failed" and "resume=true" in record["error"]

    resumed = execute(compose_config([*base, "resume=true"]), tmp_path / "resumed", {})
    assert resumed["status"] == "completed"
    for key in ("test/log_px", "test/elbo", "test/kl", "val/elbo", "train/loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6, abs=1e-6), key


def test_evaluation_ignores_the_training_precision(ckpt, tmp_path):
    full = _test_metrics([], ckpt, tmp_path / "full")
    mixed = _test_metrics(["trainer.precision=bf16-mixed"], ckpt, tmp_path / "mixed")
    for key in TEST_METRICS:
        assert mixed[key] == pytest.approx(full[key], rel=1e-6), key

"""End-to-end: the real config, shrunk, trains, tests and writes metrics.json."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import REPO, checkpoint_model, compose_config
from vae_lab.estimators.elbo import kl_estimate
from vae_lab.estimators.estimate import ROUNDING
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute
from vae_lab.training.build import build_datamodule


def test_shrunk_run_writes_completed_metrics(tmp_path):
    cfg = compose_config()
    record = execute(
        cfg, tmp_path, {"posterior": "gaussian", "prior": "standard", "data": "digits"}
    )
    metrics = read_metrics(tmp_path)
    assert metrics == {k: v for k, v in record.items()}
    assert metrics["status"] == "completed"
    for key in (
        "test/elbo",
        "test/recon",
        "test/kl",
        "test/log_px",
        "test/log_px_stderr",
        "test/elbo_stderr",
        "test/inference_gap_stderr",
        "test/ess",
        "test/inference_gap",
        "test/active_units",
        "test/ess_fraction",
        "test/psis_khat",
        "test/psis_khat_bad",
        "val/elbo",
        "val/log_px",
        "train/loss",
    ):
        assert math.isfinite(metrics[key]), key
    assert metrics["test/inference_gap"] == pytest.approx(
        metrics["test/log_px"] - metrics["test/elbo"]
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    # timings: the steps alone are part of fit, which is part of the run
    assert metrics["fit_steps"] == 3  # SHRINK: one epoch of 3 batches
    assert 0 < metrics["steps_time_s"] < metrics["fit_time_s"]
    assert metrics["fit_time_s"] + metrics["test_time_s"] < metrics["wall_time_s"]


def test_validation_and_logging_settings_leave_the_trained_model_alone(tmp_path):
    """Validation draws from its own seeded stream: two runs that differ only in how much they
    validate (K, batches, the sanity check) and log train the same weights, step for step."""
    choices = {"posterior": "gaussian", "prior": "standard", "data": "digits"}
    common = ["trainer.max_epochs=2"]
    weights = []
    for name, val in {"light": ["eval.val_num_samples=2", "trainer.num_sanity_val_steps=0"],
                      "heavy": ["eval.val_num_samples=7", "trainer.limit_val_batches=2",
                                "trainer.num_sanity_val_steps=1",
                                "trainer.log_every_n_steps=1"]}.items():  # fmt: skip
        execute(compose_config(common + val), tmp_path / name, choices)
        ckpt = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        weights.append(ckpt["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    light, heavy = read_metrics(tmp_path / "light"), read_metrics(tmp_path / "heavy")
    assert light["train/loss"] == heavy["train/loss"]
    assert light["val/elbo"] != heavy["val/elbo"]  # the validations did differ


def test_test_elbo_is_the_elbo_of_the_iw_weights_within_its_stderr(tmp_path):
    """test/elbo is mean_k log w_k of test/log_px's K weights: within its stderr of a
    5,000-sample ELBO of the same points, and the inference gap is that of one set of draws."""
    cfg = compose_config(["eval.num_samples=200", "eval.chunk_size=200"])
    record = execute(cfg, tmp_path, {})
    model, datamodule = checkpoint_model(cfg, tmp_path / "checkpoints" / "best.ckpt")
    x = datamodule.splits[2]  # the test stage's points: the whole test split
    with torch.no_grad():
        reference = model.iw_estimate(x, 5000, 1000).elbo
    stderr = math.hypot(record["test/elbo_stderr"], reference.figure().stderr)
    assert abs(record["test/elbo"] - reference.figure().value) < 3 * stderr
    assert record["test/recon"] - record["test/kl"] == pytest.approx(record["test/elbo"])
    gap = record["test/log_px"] - record["test/elbo"]
    assert record["test/inference_gap"] == pytest.approx(gap) and gap > 0  # Jensen, per draw
    assert record["test/inference_gap_stderr"] == pytest.approx(
        math.hypot(record["test/log_px_stderr"], record["test/elbo_stderr"])
    )


def test_test_kl_of_a_flow_is_a_monte_carlo_figure_with_its_stderr(tmp_path):
    """A planar q has no analytic KL: test/kl is the mean over K draws, within 4 of its stderr
    of a 20,000-draw KL of the same points; test/recon = ELBO + KL carries both stderrs."""
    cfg = compose_config(["posterior=planar", "eval.num_samples=200", "eval.chunk_size=200"])
    record = execute(cfg, tmp_path, {})
    model, datamodule = checkpoint_model(cfg, tmp_path / "checkpoints" / "best.ckpt")
    x = datamodule.splits[2]  # the test stage's points: the whole test split
    with torch.no_grad():
        reference = kl_estimate(model.q(x), model.p_z(), 20000, 1000).figure()
    assert record["test/kl_stderr"] > 10 * ROUNDING * abs(record["test/kl"])  # noise, not rounding
    stderr = math.hypot(record["test/kl_stderr"], reference.stderr)
    assert abs(record["test/kl"] - reference.value) < 4 * stderr
    assert record["test/recon_stderr"] == pytest.approx(
        math.hypot(record["test/elbo_stderr"], record["test/kl_stderr"])
    )


def test_failed_run_is_recorded_with_its_error(tmp_path):
    cfg = compose_config(["optim.lr=-1"])
    record = execute(cfg, tmp_path, {}, isolate_failures=True)
    assert record["status"] == "failed"
    assert "optim.lr=-1" in read_metrics(tmp_path)["error"]


@pytest.mark.parametrize("every", [1, 10])
def test_a_nan_loss_is_reported_at_its_step_however_seldom_losses_are_read(every, tmp_path):
    """Losses are read on logging steps only; the error still names the first NaN's step."""
    cfg = compose_config(
        [
            "+fault=nan_loss",
            "callbacks.fault.at_step=4",
            "trainer.limit_train_batches=8",
            f"trainer.log_every_n_steps={every}",
        ]  # fmt: skip
    )
    record = execute(cfg, tmp_path, {}, isolate_failures=True)
    assert record["status"] == "failed"
    assert record["error"].startswith("FloatingPointError: training loss is nan at step 4:")


def _run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vae_lab.run", *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_unknown_option_lists_the_valid_ones(tmp_path):
    result = _run_cli("posterior=nope", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'posterior/nope'" in result.stderr
    assert "gaussian" in result.stderr and "full_cov" in result.stderr


class Rows(pl.loggers.Logger):
    """The rows a logger is given: step -> the names of the figures logged there."""

    name, version = "rows", 0
    experiment = None

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, set[str]] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.setdefault(step, set()).update(metrics)

    def log_hyperparams(self, params: object) -> None:
        pass


@pytest.mark.parametrize("every", [1, 4])
def test_training_figures_reach_the_logger_at_every_logging_step(every):
    """The module logs its training figures only on the steps whose figures the logger writes
    (and each epoch's last): the logger still gets them at every ``log_every_n_steps``-th step
    across epochs, and the record the last step's."""
    cfg = compose_config()
    datamodule = build_datamodule(cfg)
    model = VAE.from_config(cfg, datamodule.data_dim)
    logger = Rows()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=6, limit_val_batches=0,
                         log_every_n_steps=every, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    train = {"train/loss", "train/elbo", "train/recon", "train/kl"}
    logged = sorted(step for step, names in logger.rows.items() if train <= names)
    assert logged == [step for step in range(12) if (step + 1) % every == 0]
    assert "train/loss" in trainer.callback_metrics


def test_last_ckpt_is_the_latest_validation_whether_or_not_it_improved(tmp_path):
    """With a learning rate of 0 the seeded validation gives one val/elbo at every epoch, so only
    the first is an improvement: best.ckpt stays at epoch 0, last.ckpt follows every epoch
    (what a resumed or requeued job continues from). Either way last.ckpt holds the best's
    record of its own validation: at lr 0 epoch 0's, when training improves the last epoch's."""
    choices = {"posterior": "gaussian", "prior": "standard", "data": "digits"}

    def checkpoints(name: str, overrides: list[str]) -> tuple[dict, dict]:
        execute(compose_config(overrides), tmp_path / name, choices)
        folder = tmp_path / name / "checkpoints"
        return tuple(torch.load(folder / f"{n}.ckpt", weights_only=False) for n in ("last", "best"))

    def best_score(checkpoint: dict) -> torch.Tensor:
        (state,) = (s for key, s in checkpoint["callbacks"].items() if "val/elbo" in key)
        return state["best_model_score"]

    last, best = checkpoints("still", ["trainer.max_epochs=3", "optim.lr=0"])
    assert (best["epoch"], last["epoch"]) == (0, 2)
    assert last["global_step"] == 3 * best["global_step"]
    assert best_score(last) == best_score(best)
    last, best = checkpoints("learning", ["trainer.max_epochs=2"])
    assert (best["epoch"], last["epoch"]) == (1, 1)  # the second validation improved
    assert best_score(last) == best_score(best) > best_score(checkpoints("one", [])[1])

"""``python -m vae_lab.evaluate``: on a trained digits run, on a linear-Gaussian run with its
exact log p(x), and with bad input."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO, compose_config
from vae_lab.evaluate import main
from vae_lab.evaluation.stages.qstar import families as qstar_families
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

#: small enough for seconds, large enough for the checks
QUICK = [
    "eval.gap_points=60",
    "eval.num_samples=300",
    "eval.chunk_size=300",
    "eval.ais_steps=50",
    "eval.ais_chains=4",
    "eval.ais_leapfrog_steps=5",
    "eval.qstar_max_steps=300",
    "eval.stages=[iw,refined,exact,qstar,ais]",
]
CONTRACT = ("eval/log_px_ais", "eval/elbo_qstar", "eval/approximation_gap", "eval/amortization_gap")


def train(run_dir: Path, overrides: list[str]) -> Path:
    """A run folder as ``python -m vae_lab.run`` leaves it (.hydra/config.yaml, checkpoints)."""
    cfg = compose_config(overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    assert execute(cfg, run_dir, {"posterior": cfg.posterior._target_})["status"] == "completed"
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    overrides = ["trainer.max_epochs=3", "trainer.limit_train_batches=null"]
    return train(tmp_path_factory.mktemp("digits"), overrides)


def test_evaluate_writes_the_contract_metrics_and_gaps(digits_run):
    record = main([f"ckpt_path={digits_run}/checkpoints/best.ckpt", *QUICK])
    written = json.loads((digits_run / "eval.json").read_text())
    assert written == record and written["eval"]["num_samples"] == 300
    metrics = read_metrics(digits_run)
    assert metrics["status"] == "completed" and "test/log_px" in metrics  # merged, not replaced
    assert metrics["eval/split"] == written["split"] == "test"  # what the report reads them as
    for key in (*CONTRACT, "eval/log_px", "eval/elbo", "eval/log_px_best", "eval/time_iw_s",
                "eval/time_ais_s", "eval/time_qstar_s"):  # fmt: skip
        assert math.isfinite(metrics[key]) and metrics[key] == record[key], key
    for gap in ("approximation_gap", "amortization_gap"):  # q* must beat the encoder
        assert record[f"eval/{gap}"] > 3 * record[f"eval/{gap}_stderr"], gap
    for key in ("ess_fraction", "psis_khat", "psis_khat_bad", "qstar_residual", "log_px_ais_bias",
                "ais_ess_fraction", "ais_reliable"):  # fmt: skip
        assert math.isfinite(record[f"eval/{key}"]), key
    assert_best_is_the_largest_reliable(record, ("log_px", "log_px_ais", "log_px_qstar"))
    assert record["eval/num_points"] == 60 and "eval/log_px_exact" not in record
    # AIS starts from q*, whose ELBO beats the encoder's; it is reliable only where its stated
    # bias (its sandwich with reverse chains) is within eval.bdmc_max_width; no BDMC here
    assert record["ais_start"] == "qstar" and record["eval/elbo_qstar"] > record["eval/elbo"]
    assert record["ais_bias_from"] == "reverse"
    assert record["eval/ais_reliable"] == float(record["eval/log_px_ais_bias"] <= 0.5)

    others = main([f"run_dir={digits_run}", *QUICK, "eval.qstar_family=[full_cov,planar]"])
    assert others["qstar_init"] == "encoder"  # moment-matched to the encoder's q
    assert others["qstar_family"] == ["full_cov", "planar"]
    metrics = read_metrics(digits_run)
    # metrics.json holds one evaluation's figures: the earlier one's are kept in evals/1.json
    assert "eval/elbo_qstar" not in metrics
    assert json.loads((digits_run / "evals" / "1.json").read_text()) == record
    for family in ("full_cov", "planar"):
        for name in ("elbo_qstar", "approximation_gap", "log_px_qstar"):
            key = f"eval/{name}_{family}"
            assert math.isfinite(others[key]) and metrics[key] == others[key], key
        assert f"eval/time_qstar_{family}_s" in metrics


def test_a_savae_run_reports_the_refined_q_and_its_amortization_gap(tmp_path):
    run_dir = train(tmp_path / "run", ["objective=savae"])  # three steps: a poor encoder
    cheap = ["eval.gap_points=30", "eval.qstar_max_steps=100", "eval.ais_steps=10"]
    record = main([f"run_dir={run_dir}", *QUICK, *cheap])  # q* and AIS only take part here
    assert math.isfinite(record["eval/time_refined_s"])
    for name in ("elbo", "log_px"):  # refinement raises the encoder's ELBO; IW follows it
        gain = record[f"eval/{name}_refined"] - record[f"eval/{name}"]
        noise = math.hypot(record[f"eval/{name}_refined_stderr"], record[f"eval/{name}_stderr"])
        assert gain > (3 * noise if name == "elbo" else -3 * noise), name
    gap = record["eval/elbo_qstar"] - record["eval/elbo_refined"]
    assert record["eval/amortization_gap_refined"] == pytest.approx(gap)
    assert record["eval/amortization_gap_refined"] < record["eval/amortization_gap"]
    assert record["eval/inference_gap_refined"] == pytest.approx(
        record["eval/log_px_best"] - record["eval/elbo_refined"]
    )
    assert_best_is_the_largest_reliable(
        record, ("log_px", "log_px_ais", "log_px_qstar", "log_px_refined")
    )


def assert_best_is_the_largest_reliable(record: dict, names: tuple[str, ...]) -> None:
    """eval/log_px_best is the largest of the estimates not flagged (AIS by ais_reliable, the
    IW ones by their k-hat), the largest of all where every one is flagged."""
    flagged = {
        name: record["eval/ais_reliable"] == 0
        if name == "log_px_ais"
        else record[f"eval/psis_khat_bad{name.removeprefix('log_px')}"] > 0
        for name in names
    }
    reliable = [record[f"eval/{n}"] for n in names if not flagged[n]]
    assert record["eval/log_px_best"] == max(reliable or [record[f"eval/{n}"] for n in names])
    assert record["eval/log_px_best_reliable"] == float(bool(reliable))


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("eval.split=bogus", "eval.split=bogus is invalid: must be one of train, val, test"),
        ("eval.nope=1", "Could not override 'eval.nope'."),
        ("posterior=planar", "posterior=planar: evaluate keeps the run's trained model"),
        ("eval.qstar_family=nope", "eval.qstar_family=nope is invalid: must be one of ["),
        ("eval.qstar_family=[]", "eval.qstar_family=[] is invalid: must be a posterior option"),
        (
            "eval.qstar_family=[null,gaussian]",  # the run's own family twice
            "eval.qstar_family=[null,gaussian] is invalid: it names one family twice",
        ),
        ("eval.device=tpu", "eval.device=tpu is invalid: must be auto, cpu, cuda or cuda:N"),
        ("eval.bdmc=1", "eval.bdmc=1 is invalid: must be true or false"),  # a switch, not 1
        pytest.param(
            "eval.device=cuda",
            "eval.device=cuda, but torch sees no GPU here: use eval.device=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bad_option_is_one_line(digits_run, argument, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([f"run_dir={digits_run}", argument])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {expected}")


def test_bad_checkpoint_is_one_line(digits_run, tmp_path, capsys):
    corrupt = digits_run / "checkpoints" / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        main([f"ckpt_path={corrupt}"])
    err = capsys.readouterr().err
    assert err.startswith(f"error: ckpt_path={corrupt} is not a checkpoint of this run's model")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("ckpt_path={tmp}/nope.ckpt", "ckpt_path={tmp}/nope.ckpt is not a file"),
        ("run_dir={tmp}", "run_dir={tmp} is not a run or sweep folder"),
        ("eval.num_samples=10", "give ckpt_path=PATH (a run's checkpoint) or run_dir=DIR"),
    ],
)
def test_missing_run_is_one_line(argument, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([argument.format(tmp=tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {expected.format(tmp=tmp_path)}")


@pytest.mark.slow
def test_missing_checkpoint_is_one_line_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.evaluate", f"ckpt_path={tmp_path}/nope.ckpt"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: ckpt_path={tmp_path}/nope.ckpt is not a file"
    ]


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_linear_gaussian_run_matches_its_exact_log_px(tmp_path):
    """The acceptance check: a full-covariance q on probabilistic PCA has no approximation gap,
    and the run's IW test/log_px agrees with the exact log p(x) of the decoder as trained."""
    overrides = [
        "data=linear_gaussian", "likelihood=gaussian", "posterior=full_cov", "model=linear",
        "latent_dim=4", "data.num_train=2000", "data.num_test=300", "trainer.max_epochs=20",
        "optim.lr=0.01", "trainer.limit_train_batches=null",
        "eval.num_samples=5000", "eval.chunk_size=1000",
    ]  # fmt: skip
    run_dir = train(tmp_path / "run", overrides)
    # q* converges (no step cap); AIS from the encoder's q, which is near the posterior here
    record = main(
        [f"run_dir={run_dir}", "eval.gap_points=null", *QUICK[1:-1], "eval.ais_start=encoder"]
    )
    metrics = read_metrics(run_dir)
    assert record["eval/num_points"] == 300 and record["gap_reference"] == "exact"
    assert record["ais_start"] == "encoder"
    assert abs(record["eval/approximation_gap"]) < 0.003
    assert abs(record["eval/qstar_residual"]) < 0.003
    exact = metrics["eval/log_px_exact"]
    assert metrics["test/psis_khat"] < 0.7 and metrics["eval/psis_khat"] < 0.7
    for name in ("test/log_px", "eval/log_px", "eval/log_px_ais"):
        assert abs(metrics[name] - exact) < 3 * metrics[f"{name}_stderr"], name
    # No point is flagged at the test's K = 5000. Evaluate's IW at K = 300 may flag a point
    # where the trained encoder's q is narrower than the posterior (1 of 300 with one training
    # draw order, none with another); AIS from that q states its bias and is reliable
    assert metrics["test/psis_khat_bad"] == 0 and metrics["eval/psis_khat_bad"] <= 0.01
    assert metrics["eval/ais_reliable"] == 1.0
    ais_error = exact - metrics["eval/log_px_ais"]
    assert ais_error < 3 * (metrics["eval/log_px_ais_stderr"] + metrics["eval/log_px_ais_bias"])


def test_a_50d_run_with_a_poor_encoder_is_estimated_from_qstar(tmp_path):
    """A 50-D PPCA run trained 20 steps: its encoder's q is tens of nats from the posterior
    (IW's k-hat flags most points) and the data far from what the model expects. q* reaches the
    exact posterior all the same (before it could start at the encoder's mean, it stopped up to
    10 nats away at some points), AIS starts from it, and AIS and IW with q* as the proposal agree
    with the exact log p(x) within their stated errors, and AIS is reliable by its stated bias.
    (BDMC at this size: tests/test_ppca_sizes.py.)"""
    overrides = [
        "data=linear_gaussian", "likelihood=gaussian", "posterior=full_cov", "model=linear",
        "latent_dim=10", "data.data_dim=50", "data.num_train=1000", "data.num_test=50",
        "trainer.max_epochs=2", "optim.lr=0.01", "trainer.limit_train_batches=null",
    ]  # fmt: skip
    run_dir = train(tmp_path / "run", overrides)
    record = main([
        f"run_dir={run_dir}", "eval.gap_points=null", "eval.num_samples=1000",
        "eval.chunk_size=1000", "eval.ais_steps=50", "eval.ais_chains=8",
        "eval.ais_leapfrog_steps=5",
    ])  # fmt: skip
    exact = record["eval/log_px_exact"]
    assert record["eval/psis_khat_bad"] > 0.5  # the encoder's IW is flagged
    assert record["ais_start"] == "qstar" and record["eval/psis_khat_bad_qstar"] == 0
    for name in ("eval/log_px_qstar", "eval/log_px_ais"):
        assert abs(record[name] - exact) < 3 * record[f"{name}_stderr"], name
    assert record["eval/ais_reliable"] == 1.0  # its sandwich is narrow
    assert abs(record["eval/approximation_gap"]) < 0.003
    assert record["eval/amortization_gap"] > 1.0  # the encoder is far from q*


def test_a_cross_family_qstar_through_untrained_shared_networks_is_flagged(caplog):
    cfg = compose_config(["posterior=gaussian", "eval.qstar_family=[gaussian,planar,flow]"])
    model = VAE.from_config(cfg, data_dim=64)
    with caplog.at_level(logging.WARNING):
        families = qstar_families(cfg, model)
    assert [suffix for _, suffix in families] == ["", "_planar", "_flow"]
    assert families[0][0] is model.posterior
    flagged = [r.getMessage() for r in caplog.records if "never trained" in r.getMessage()]
    assert len(flagged) == 1 and flagged[0].startswith("eval.qstar_family=flow has networks")

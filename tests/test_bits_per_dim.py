"""Bits per dimension: the twin of every log p(x) figure of grey-level data, from the same
estimate, -log p(x) / (D ln 2) with its stderr alike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config
from tests.test_report import completed, make_run, rows
from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation import pipeline
from vae_lab.evaluation.bits_per_dim import bits_per_dim, twin_name
from vae_lab.evaluation.stage import Context
from vae_lab.model.module import VAE
from vae_lab.records.run_store import summary_line
from vae_lab.report.write import write_report

DIMS = 64


def test_bits_per_dim_is_minus_log_px_over_d_ln_2():
    figure = bits_per_dim(Figure(-1234.5, 0.8), 784)
    assert figure.value == pytest.approx(1234.5 / (784 * math.log(2)), rel=1e-15)
    assert figure.stderr == pytest.approx(0.8 / (784 * math.log(2)), rel=1e-15)


@pytest.mark.parametrize(
    ("name", "prefix", "twin"),
    [
        ("log_px", "test", "bits_per_dim"),
        ("log_px_refined", "test", "bits_per_dim_refined"),
        ("log_px_best", "eval", "bits_per_dim"),
        ("log_px", "eval", "bits_per_dim_iw"),
        ("log_px_ais", "eval", "bits_per_dim_ais"),
        ("log_px_bdmc_lower", "eval", "bits_per_dim_bdmc_lower"),
        ("log_px_ais_bias", "eval", None),
        ("elbo", "eval", None),
    ],
)
def test_twin_names(name, prefix, twin):
    assert twin_name(name, prefix) == twin


def figures_of(likelihood: str, prefix: str) -> dict[str, float]:
    """The IW stage's metrics (and the conclusion's) of an untrained model on 8-bit data."""
    cfg = compose_config([f"likelihood={likelihood}", "data.eval_batch_size=8"])
    torch.manual_seed(0)
    model = VAE.from_config(cfg, DIMS).eval()
    x = torch.randint(0, 256, (20, DIMS)) / 255.0
    ctx = Context(model, x, None, cfg, prefix, num_samples=10, seed=0)
    return pipeline.run(pipeline.select(["iw"]), ctx)


@pytest.mark.parametrize(("prefix", "log_px"), [("test", "log_px"), ("eval", "log_px_best")])
def test_the_stages_give_bits_per_dim_beside_log_px_from_the_same_estimate(prefix, log_px):
    metrics = figures_of("discretized_logistic", prefix)
    per_nat = DIMS * math.log(2.0)
    for name in ("", "_stderr"):
        bits, nats = metrics[f"{prefix}/bits_per_dim{name}"], metrics[f"{prefix}/{log_px}{name}"]
        assert bits == pytest.approx(abs(nats) / per_nat, rel=1e-15, abs=0)
    if prefix == "eval":
        assert metrics["eval/bits_per_dim_iw"] == metrics["eval/bits_per_dim"]
    assert pipeline.headline(metrics, {"log_px_best": "IW"}, []).count("bits/dim") == (
        prefix == "eval"
    )


def test_a_density_has_no_bits_per_dim():
    """A Gaussian log p(x) is a density of continuous values, not a code length of pixels."""
    assert not [name for name in figures_of("gaussian", "test") if "bits_per_dim" in name]


def test_the_report_shows_bits_per_dim_where_runs_have_it(tmp_path):
    make_run(tmp_path / "0", "gaussian", 0, **completed(-90.0, -93.0, **{"test/bits_per_dim": 1.5}))
    make_run(tmp_path / "1", "flow", 0, **completed(-89.0, -92.0, **{"test/bits_per_dim": 1.25}))
    write_report([tmp_path])
    report = (tmp_path / "report.md").read_text()
    assert "| bits/dim |" in report.split("\n\n")[2].splitlines()[0]
    assert "1.25 (n = 1)" in rows(report)["flow"]


def test_the_run_summary_line_gives_bits_per_dim_beside_log_px():
    record = {"status": "completed", "test/log_px": -900.0, "test/bits_per_dim": 1.6561}
    assert summary_line(record, Path("run")).startswith(
        "completed: test log p(x) -900.00, 1.656 bits/dim,"
    )

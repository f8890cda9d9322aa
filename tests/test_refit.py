"""Priors refitted to the aggregate posterior, and evaluate's sample-quality stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_config
from tests.test_evaluate import QUICK, train
from vae_lab.evaluate import main
from vae_lab.evaluation.refit import aggregate_posterior_codes, refit_prior
from vae_lab.records.outputs import read_metrics
from vae_lab.records.run_folder import RunFolder as Run
from vae_lab.records.run_folder import load_model
from vae_lab.training.build import build_datamodule

CACHE = ["sample_quality.classifier.epochs=1", "sample_quality.classifier.min_steps=400"]
REFIT_QUICK = [
    "refit.steps=400",
    "refit.diffusion.steps=300",
    "refit.diffusion.timesteps=50",
    "refit.diffusion.hidden=32",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    overrides = [
        "trainer.max_epochs=5",
        "trainer.limit_train_batches=null",
        f"sample_quality.classifier.cache_dir={cache}",
        *CACHE,
    ]
    return train(tmp_path_factory.mktemp("digits"), overrides)


@pytest.mark.parametrize("name", ["mixture", "flow"])
def test_refitted_prior_raises_the_likelihood_of_held_out_codes_over_the_standard_normal(
    trained_run, name
):
    cfg = compose_config(REFIT_QUICK)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    run = Run(trained_run, trained_run / "checkpoints" / "best.ckpt")
    model = load_model(cfg, run, datamodule.data_dim)
    torch.manual_seed(0)
    train_x, val_x, _ = datamodule.splits
    codes = aggregate_posterior_codes(model, torch.bernoulli(train_x), codes_per_point=4)
    held_out = aggregate_posterior_codes(model, val_x)
    refitted = refit_prior(name, codes, instantiate(cfg.refit), datamodule.data_dim)
    with torch.no_grad():
        gain = refitted.density.log_prob(held_out) - model.p_z().log_prob(held_out)
    stderr = float(gain.std()) / math.sqrt(len(gain))
    assert float(gain.mean()) > max(0.5, 4 * stderr)  # nats per code, on codes it never saw
    assert refitted.sample(7).shape == (7, cfg.latent_dim)


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_evaluate_reports_the_refitted_priors(trained_run):
    record = main(
        [f"run_dir={trained_run}", *QUICK, *REFIT_QUICK, "eval.refit_prior=[mixture,diffusion]"]
    )
    metrics = read_metrics(trained_run)
    for suffix in ("", "_refit_mixture", "_refit_diffusion"):
        for name in ("fid_samples", "kid_samples", "precision_samples", "recall_samples"):
            assert math.isfinite(metrics[f"eval/{name}{suffix}"]), name + suffix
    assert math.isfinite(metrics["eval/fid_recon"])
    assert math.isfinite(metrics["eval/log_px_refit_mixture"])
    assert "eval/log_px_refit_diffusion" not in metrics  # no exact density: samples only
    assert metrics["eval/sample_quality_images"] == 359  # the digits' whole test set
    written = json.loads((trained_run / "eval.json").read_text())
    assert written["sample_quality"]["rendering"] == "decoder means E[x|z]"
    assert written["sample_quality"]["classifier"] == "digits"
    assert any("diffusion" in note for note in written["sample_quality"]["notes"])
    assert record["eval/fid_samples"] == metrics["eval/fid_samples"]
    for name in ("mixture", "diffusion"):
        assert (trained_run / f"prior_samples_refit_{name}.png").is_file()


def test_unknown_refit_option_is_one_line(trained_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([f"run_dir={trained_run}", "eval.refit_prior=[vamp]"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: eval.refit_prior=vamp is invalid: must be among ['mixture', 'flow', 'diffusion']"
    )

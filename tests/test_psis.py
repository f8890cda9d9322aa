"""The Pareto k-hat of importance weights against ArviZ's PSIS, and its warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vae_lab.estimators.elbo import IWEstimate
from vae_lab.estimators.estimate import Estimate
from vae_lab.estimators.metrics import IWLogLikelihood
from vae_lab.estimators.psis import pareto_khat, tail_length, warn_if_unreliable

arviz = pytest.importorskip("arviz_stats.base.array", reason="arviz-stats is a dev dependency")


def reference_khat(log_w: torch.Tensor) -> np.ndarray:
    """ArviZ's k-hat per column of log-weights [K, B] (its psislw takes -log w)."""
    return np.array([arviz.array_stats.psislw(-col.numpy())[1] for col in log_w.double().T])


def log_weights(k: int) -> torch.Tensor:
    """[K, 6] log-weights: light-tailed (Gaussian log w), and Pareto tails of shape 0.3 to 1.5."""
    generator = torch.Generator().manual_seed(0)
    uniform = torch.rand(k, 4, generator=generator, dtype=torch.float64)
    shapes = torch.tensor([0.3, 0.7, 1.0, 1.5], dtype=torch.float64)
    pareto = -shapes * torch.log(uniform)  # log of a Pareto variable with tail index 1 / shape
    gaussian = 0.5 * torch.randn(k, 2, generator=generator, dtype=torch.float64)
    return torch.cat([gaussian, pareto], dim=1)


@pytest.mark.parametrize("k", [100, 1000, 5000])
def test_khat_equals_arviz_on_light_and_heavy_tails(k):
    log_w = log_weights(k)
    top = log_w.topk(tail_length(k) + 1, dim=0).values
    ours = pareto_khat(top).numpy()
    expected = reference_khat(log_w)
    np.testing.assert_allclose(ours, expected, atol=0.05, rtol=0)
    assert ours[:2].max() < 0.5 and ours[-1] > 0.7  # the tails are told apart


def test_tail_length_follows_vehtari_et_al():
    assert [tail_length(k) for k in (5, 20, 100, 226, 5000)] == [0, 5, 20, 45, 212]


def test_unreliable_weights_warn_in_one_line_naming_the_figure_and_the_fix(caplog):
    with caplog.at_level(logging.WARNING):
        assert not warn_if_unreliable("test", 0.0, "eval.num_samples")
        assert warn_if_unreliable("test", 0.25, "eval.num_samples")
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and message.startswith("test/psis_khat_bad = 0.250")
    assert "eval.num_samples" in message and "AIS" in message


def test_the_warning_names_the_figures_of_its_proposal(caplog):
    """IW from q* warns about eval/psis_khat_bad_qstar and eval/log_px_qstar, not about the
    encoder's figures."""
    with caplog.at_level(logging.WARNING):
        assert warn_if_unreliable("eval", 0.5, "eval.evaluate_num_samples", "_qstar")
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("eval/psis_khat_bad_qstar = 0.500")
    assert "eval/log_px_qstar lies below" in message


def test_equal_weights_have_no_tail_and_count_as_reliable():
    """q equal to its posterior to float precision makes every weight p(x): no tail to fit
    (ArviZ refuses it). k-hat is NaN there; the summary leaves it out of the mean k-hat and
    does not count it as unreliable."""
    log_w = log_weights(1000)
    log_w[:, 0] = -97.0
    with pytest.raises(ValueError, match="tail values are the same"):
        reference_khat(log_w[:, :1])
    khat = pareto_khat(log_w.topk(tail_length(1000) + 1, dim=0).values)
    assert khat[0].isnan() and not khat[1:].isnan().any()
    summary = IWLogLikelihood()
    estimate = Estimate(log_w.logsumexp(0), torch.zeros(6))
    z_mean = Estimate(torch.zeros(6, 1), torch.zeros(6, 1))
    summary.update(IWEstimate(estimate, estimate, torch.ones(6), khat, z_mean, 1000))
    figures = summary.compute()
    assert float(figures["psis_khat"]) == pytest.approx(float(khat[1:].mean()))
    assert float(figures["psis_khat_bad"]) == pytest.approx(float((khat[1:] > 0.7).sum()) / 6)

"""The evaluation's self-checks against float64 exact values on pPCA models at sizes no other
test uses, through the stages themselves: q* reaches the family optimum (the approximation gap
of the diagonal family is its closed form, 1/2 (sum log Lambda_ii - log det Lambda)) from a
poor encoder and from a collapsed one; ``qstar_residual`` lies between the exact ELBO still to
gain and that plus 0.05 nats; AIS lies within 3 x (stderr + stated bias) of exact, its stated
bias no more than 3 x its error + 3 stderr; a sandwich wider than ``eval.bdmc_max_width`` is
never certified, and then neither AIS nor a gap measured from it is the reliable headline."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from tests.test_gaps import elbo_of, exact_gap
from tests.test_linear_gaussian import known_ppca_vae
from tests.test_ppca_sizes import Size, ppca_config, ppca_vae
from vae_lab.estimators.estimate import Figure
from vae_lab.estimators.gaps import QStarSettings, fit_qstar
from vae_lab.estimators.residual import fit_released, qstar_residual
from vae_lab.evaluation import pipeline
from vae_lab.evaluation.stage import Context, StageResult
from vae_lab.model.module import VAE

#: the issue's size: a diagonal q on an 80-D model with 16 latents; and a full-covariance one
BIG = Size(80, 16, 0.5, "gaussian", 1.0)
MID = Size(30, 6, 0.8, "full_cov", 1.0)
#: the encoder's mean is this fraction of the posterior's: tens of nats of amortization gap
POOR_MEAN = 0.85
#: a collapsed encoder: scales this fraction of the posterior's (of the best diagonal's)
COLLAPSED = 1e-4

STAGES = ["iw", "exact", "qstar", "ais", "bdmc"]
CHEAP = ["eval.num_samples=500", "eval.chunk_size=500", "eval.ais_steps=50",
         "eval.ais_chains=8", "eval.ais_leapfrog_steps=5", "eval.bdmc_points=20"]  # fmt: skip


def poor_vae(size: Size, spread: float, num_points: int) -> tuple[VAE, object, torch.Tensor]:
    """``ppca_vae`` with its encoder spoiled: the mean shrunk by POOR_MEAN, the scales
    ``spread`` times the posterior's (they stop at the family's floor, MIN_SCALE)."""
    model, ppca, x = ppca_vae(replace(size, spread=spread), num_points)
    with torch.no_grad():
        head, d = model.posterior.head, size.latent_dim
        head.weight[:d] *= POOR_MEAN
        head.bias[:d] *= POOR_MEAN
    return model, ppca, x


def analytic_gap(size: Size, ppca) -> float:
    """The family optimum's KL to the posterior: 0 for full_cov, the closed form for diagonal."""
    if size.posterior != "gaussian":
        return 0.0
    precision = ppca.posterior_precision()
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


def evaluate(
    model: VAE, x: torch.Tensor, size: Size, *overrides: str, stages: list[str] = STAGES
) -> tuple[dict, Context]:
    """The stages' metrics (without the eval/ prefix) on the points x, and their context."""
    cfg = ppca_config(size, *CHEAP, *overrides)
    ctx = Context(model, x, None, cfg, "eval", cfg.eval.num_samples, seed=0)
    metrics = pipeline.run(pipeline.select(stages), ctx)
    return {k.removeprefix("eval/"): v for k, v in metrics.items()}, ctx


@pytest.mark.parametrize(
    ("size", "spread", "amortization_gap"),
    [(BIG, 0.5, 30), (BIG, COLLAPSED, 100), (MID, 2.0, 5), (MID, COLLAPSED, 30)],
    ids=["80d-diagonal-poor", "80d-diagonal-collapsed", "30d-full_cov-poor",
         "30d-full_cov-collapsed"],
)  # fmt: skip
def test_the_self_checks_hold_against_exact_values(size, spread, amortization_gap, seed=0):
    torch.manual_seed(seed)
    model, ppca, x = poor_vae(size, spread, num_points=40)
    m, ctx = evaluate(model, x, size)
    exact, analytic = m["log_px_exact"], analytic_gap(size, ppca)
    assert m["amortization_gap"] > amortization_gap  # the encoder is poor
    # q* at the family optimum: in closed form, and as the pipeline measures it
    fit = ctx.results["qstar"].state["fits"][""][1]
    remaining = exact_gap(model.posterior.distribution(fit.theta), ppca, x) - analytic
    assert 0 <= remaining < 0.01
    assert abs(m["approximation_gap"] - analytic) < 0.01 + 3 * m["approximation_gap_stderr"]
    residual = m["qstar_residual"]
    assert remaining - 3 * m["qstar_residual_stderr"] <= residual <= remaining + 0.05
    # AIS: within its stated error, which is not inflated to cover it
    error, bias = abs(m["log_px_ais"] - exact), m["log_px_ais_bias"]
    assert error <= 3 * (m["log_px_ais_stderr"] + bias)
    assert bias <= 3 * error + 3 * m["log_px_ais_stderr"]
    # BDMC: its sandwich brackets the exact log p(x) of the simulated points; certified only
    # where narrow in absolute nats
    lower, upper = m["log_px_bdmc_lower"], m["log_px_bdmc_upper"]
    assert lower - 3 * m["log_px_bdmc_lower_stderr"] < m["log_px_bdmc_exact"]
    assert m["log_px_bdmc_exact"] < upper + 3 * m["log_px_bdmc_upper_stderr"]
    narrow = upper - lower + 2 * m["log_px_bdmc_upper_stderr"] <= 0.5
    assert m["bdmc_certified"] == float(narrow) == 1.0
    assert m["log_px_best_reliable"] == 1.0 and m["gaps_reliable"] == 1.0


@pytest.mark.parametrize("bdmc", [True, False], ids=["bdmc", "no-bdmc"])
def test_a_far_ais_states_its_error_and_a_wide_sandwich_is_not_certified(bdmc):
    """AIS from the collapsed encoder with 3 annealing steps: hundreds of nats below log p(x).
    Its stated bias covers that (with BDMC, from BDMC's sandwich, which is not certified;
    without, from how far it lies below IW from q*), AIS is flagged and not the headline."""
    torch.manual_seed(0)
    model, ppca, x = poor_vae(BIG, COLLAPSED, num_points=20)
    stages = STAGES if bdmc else [s for s in STAGES if s != "bdmc"]
    m, ctx = evaluate(model, x, BIG, "eval.ais_start=encoder", "eval.ais_steps=3", stages=stages)
    error, bias = m["log_px_exact"] - m["log_px_ais"], m["log_px_ais_bias"]
    assert error > 100 and error <= 3 * (m["log_px_ais_stderr"] + bias)
    assert m["ais_reliable"] == 0 and ctx.results["conclusion"].chosen["log_px_best"] != "AIS"
    if bdmc:
        assert m["log_px_bdmc_upper"] - m["log_px_bdmc_lower"] > 0.5 and m["bdmc_certified"] == 0
    else:
        assert bias <= 3 * error + 3 * m["log_px_ais_stderr"]


def conclusion(estimates: dict[str, tuple[float, bool]], exact: bool) -> StageResult:
    """``pipeline.conclude`` of stages that gave these log p(x) estimates (label -> value,
    flagged), the gaps from one q*."""
    results = {
        "iw": StageResult(figures={"elbo": Figure(-110.0, 0.01)}),
        "qstar": StageResult(),
    }
    results["qstar"].state["families"] = {"": (Figure(-101.0, 0.01), Figure(0.0, 0.0))}
    for label, (value, flagged) in estimates.items():
        results[label] = StageResult(log_px={label: Figure(value, 0.01)})
        if flagged:
            results[label].unreliable.add(label)
    if exact:
        results["exact"] = StageResult()
        results["exact"].state["log_px"] = Figure(-100.0, 0.0)
    ctx = Context(None, torch.zeros(1), None, None, "eval", 10, seed=0, results=results)
    return pipeline.conclude(ctx)


def test_the_headline_is_the_largest_reliable_estimate_and_flags_gaps_from_a_flagged_one():
    found = conclusion({"IW": (-100.5, False), "AIS": (-100.2, True)}, exact=False)
    assert found.chosen["log_px_best"] == "IW" and found.values["log_px_best_reliable"] == 1.0
    assert found.values["gaps_reliable"] == 1.0 and not found.flags
    assert found.figures["approximation_gap"].value == pytest.approx(0.5)
    found = conclusion({"IW": (-100.5, True), "AIS": (-100.2, True)}, exact=False)
    assert found.chosen["log_px_best"] == "AIS" and found.values["log_px_best_reliable"] == 0.0
    assert found.values["gaps_reliable"] == 0.0 and "flagged log p(x) (AIS)" in found.flags[0]
    found = conclusion({"IW": (-100.5, True), "AIS": (-100.2, True)}, exact=True)
    assert found.values["gaps_reliable"] == 1.0  # measured from the exact log p(x)


@pytest.mark.parametrize("size", [BIG, MID], ids=["80d-diagonal", "30d-full_cov"])
def test_qstar_residual_of_a_q_stopped_short_is_the_elbo_left(size):
    """q* stopped after 30 Adam steps from the collapsed start, Newton's updates off: far from
    the optimum, and ``qstar_residual`` says how far, between the exact distance and that plus
    0.05 nats."""
    torch.manual_seed(0)
    model, ppca, x = poor_vae(size, COLLAPSED, num_points=20)
    settings = QStarSettings(max_steps=30, newton_steps=0)
    with torch.no_grad():
        theta0 = model.posterior(model.encoder(x))

    def rows(r):
        return model.log_likelihood(x[r])

    fit = fit_qstar(model.posterior, model.p_z(), rows, theta0, settings)
    remaining = exact_gap(model.posterior.distribution(fit.theta), ppca, x) - analytic_gap(
        size, ppca
    )
    residual = qstar_residual(model.posterior, model.p_z(), rows, fit, settings, 100, 100)
    figure = residual.figure()
    assert remaining > 10
    assert remaining - 3 * figure.stderr <= figure.value <= remaining + 0.05
    assert math.isfinite(figure.stderr)


def test_a_flow_qstar_frozen_short_by_its_step_size_is_released():
    """A flow's q* from a collapsed base scale, under a step-size rule that freezes it after
    one flat window: the continuation still gains, so ``fit_released`` releases it, and it ends
    far nearer the optimum than the frozen fit (measured by the ELBO on the same draws)."""
    torch.manual_seed(0)
    model, _, x = known_ppca_vae("planar", num_points=5)
    d = model.posterior.latent_dim
    with torch.no_grad():
        theta0 = model.posterior(model.encoder(x))
        theta0[:, d : 2 * d] = -7.0  # base scales 1e-3, far below the posterior's
    settings = QStarSettings(check_every=10, patience=1, num_decays=0, tol=1.0, max_steps=400,
                             residual_steps=50)  # fmt: skip

    def rows(r):
        return model.log_likelihood(x[r])

    frozen = fit_qstar(model.posterior, model.p_z(), rows, theta0, settings)
    released = fit_released(model.posterior, model.p_z(), rows, theta0, settings, 100, 100)
    assert frozen.converged.all() and frozen.steps < 100
    both = torch.cat([frozen.theta, released.theta])
    elbo = elbo_of(model, torch.cat([x, x]), model.posterior.distribution(both), 500)
    gain = (elbo.value[5:] - elbo.value[:5]).mean()
    assert gain > 5 and released.steps > frozen.steps
    assert released.steps <= settings.max_steps  # the probes' steps count against the cap

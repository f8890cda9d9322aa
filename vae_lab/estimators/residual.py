"""The ELBO q* still had to gain where it stopped (``eval/qstar_residual``), and the fit of q*
that stops on it rather than on its step size.

For a Gaussian family the ELBO still to gain is R of the quadratic model of
``vae_lab.estimators.newton``, exact where the model is Gaussian (pPCA). Elsewhere R is a smooth
function of Monte Carlo means (g and H), whose noise makes it high in expectation by a term in
1/n for n draws (E[g^T A g] = g^T A g + tr(A Cov g)): near the optimum, where g is small, that
term can be nearly all of R (docs/estimators.md). So R is computed from
``residual_sample_factor`` independent groups of draws and jackknifed over them (Quenouille
1956; Efron & Stein 1981),

    R_J = G R(all groups) - (G - 1) mean_j R(all groups but j),

which removes the 1/n term exactly, with the jackknife's variance (G - 1)/G sum_j (R_-j -
mean R_-j)^2 as its Monte Carlo variance. R_J is unbiased to that order, not positive: a value
below zero within its stderr is a q* at its optimum. H's eigenvalue floor is applied once, to
each pooled H: floored per group, its bias would be alike in every term and stay.

For any other family (the flows) the ELBO still to gain is measured: q* is continued for
``residual_steps`` more steps at each datapoint's final step size with ``residual_sample_factor``
times the samples, and the ELBOs before and after are compared on the same draws of the noise
(common random numbers), so that their difference is not drowned in the Monte Carlo noise of
either. That is a lower estimate of the distance to the optimum where progress slows, and is
labelled an estimate wherever it is reported.

``fit_released`` stops q* by it. The step-size rule of ``vae_lab.estimators.gaps.fit_qstar``
freezes a datapoint whose ELBO stopped improving by ``tol`` over a few checks at its smallest
step size; a start from which progress is slow but long (a collapsed scale, climbing at a
fixed rate per step) can read as such a plateau. So every frozen datapoint is probed: where
the continuation above still gains more than ``tol`` (by three of its stderrs), the datapoint
is released, from the continued theta at its full step size, while the step budget lasts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.estimators.elbo import chunks, log_importance_weights
from vae_lab.estimators.estimate import Estimate, StreamedMean
from vae_lab.estimators.gaps import QStarFit, QStarSettings, fit_qstar
from vae_lab.estimators.newton import Curvature, Gaussian, RowsLogLikelihood, curvature, joint


def qstar_residual(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    fit: QStarFit,
    settings: QStarSettings,
    num_samples: int,
    chunk_size: int,
    seed: int = 0,
) -> Estimate:
    """The ELBO still to gain from q* per datapoint (module docstring): for a Gaussian family
    R jackknifed over ``residual_sample_factor`` groups of ``settings.num_samples`` antithetic
    pairs each; for any other the continuation's gain on ``num_samples`` draws (``chunk_size``
    at a time). Each with its Monte Carlo variance."""
    if family.gaussian:
        return newton_residual(family, prior, log_likelihood, fit.theta, settings)
    return continuation(
        family, prior, log_likelihood, fit, settings, num_samples, chunk_size, seed
    )[1]


def newton_residual(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    theta: Tensor,
    settings: QStarSettings,
) -> Estimate:
    """``qstar_residual`` of a Gaussian family: the quadratic model's R at theta [N, P],
    jackknifed over the groups of draws (module docstring)."""
    num_groups = settings.residual_sample_factor
    if num_groups < 2:
        raise ValueError(f"residual_sample_factor={num_groups}: the jackknife needs 2 groups")
    rows = torch.arange(theta.shape[0], device=theta.device)
    q, ll = Gaussian.of(family.distribution(theta)), log_likelihood(rows)
    groups = [curvature(joint(prior, ll), q, settings.num_samples, theta.dtype)
              for _ in range(num_groups)]  # fmt: skip
    grads = torch.stack([group.grad for group in groups])
    hessians = torch.stack([group.hessian for group in groups])
    whole = Curvature(grads.mean(0), hessians.mean(0)).floored().remaining(q)
    left_out = torch.stack([
        Curvature((grads.sum(0) - grads[j]) / (num_groups - 1),
                  (hessians.sum(0) - hessians[j]) / (num_groups - 1)).floored().remaining(q)
        for j in range(num_groups)
    ])  # fmt: skip
    value = num_groups * whole - (num_groups - 1) * left_out.mean(0)
    variance = (num_groups - 1) / num_groups * (left_out - left_out.mean(0)).square().sum(0)
    return Estimate(value, variance)


def continuation(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    fit: QStarFit,
    settings: QStarSettings,
    num_samples: int,
    chunk_size: int,
    seed: int = 0,
) -> tuple[Tensor, Estimate]:
    """theta' = theta* continued (module docstring), and ELBO(theta') - ELBO(theta*) per
    datapoint, both from the same ``num_samples`` draws of the noise, with the Monte Carlo
    variance of that paired difference."""
    more = replace(
        settings,
        num_samples=settings.num_samples * settings.residual_sample_factor,
        max_steps=settings.residual_steps,
        tol=-math.inf,  # every window improves: no datapoint freezes
        newton_steps=0,  # the continuation is the stochastic ascent's, where it stopped
    )
    continued = fit_qstar(family, prior, log_likelihood, fit.theta, more, rate0=fit.rate).theta
    rows = torch.arange(fit.theta.shape[0], device=fit.theta.device)
    gain = StreamedMean()
    for start, n in chunks(num_samples, chunk_size):
        log_w = []
        for theta in (fit.theta, continued):
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.manual_seed(seed + start)
                q = family.distribution(theta)
                log_w.append(log_importance_weights(q, prior, log_likelihood(rows), n)[0])
        gain.update(log_w[1] - log_w[0])
    return continued, gain.estimate()


def fit_released(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    theta0: Tensor,
    settings: QStarSettings,
    num_samples: int,
    chunk_size: int,
    progress: bool = False,
) -> QStarFit:
    """``fit_qstar``, each frozen datapoint probed by the continuation and released where it
    still gains more than ``settings.tol`` (module docstring), round after round until no
    probe gains or ``settings.max_steps`` steps (probes included) are spent: a probe is run
    only when steps are left after it for the refit."""
    fit = fit_qstar(family, prior, log_likelihood, theta0, settings, progress=progress)
    while (budget := settings.max_steps - fit.steps - settings.residual_steps) > 0:
        frozen = fit.converged.nonzero().squeeze(1)
        if len(frozen) == 0:
            break
        probed = QStarFit(fit.theta[frozen], 0, fit.converged[frozen], fit.rate[frozen])
        continued, gain = continuation(
            family, prior, rows_of(log_likelihood, frozen), probed, settings, num_samples,
            chunk_size,
        )  # fmt: skip
        short = gain.value > settings.tol + 3 * gain.variance.sqrt()
        if not short.any():
            break
        released = frozen[short]
        refit = fit_qstar(
            family, prior, rows_of(log_likelihood, released), continued[short],
            replace(settings, max_steps=budget, newton_steps=0), progress=progress,
        )  # fmt: skip
        theta, converged, rate = fit.theta.clone(), fit.converged.clone(), fit.rate.clone()
        theta[released], converged[released], rate[released] = (
            refit.theta, refit.converged, refit.rate,
        )  # fmt: skip
        fit = QStarFit(theta, fit.steps + settings.residual_steps + refit.steps, converged, rate)
    return fit


def rows_of(log_likelihood: RowsLogLikelihood, rows: Tensor) -> RowsLogLikelihood:
    """The rows ``rows`` [A] of a batch's log-likelihood, as a batch of their own."""
    return lambda r: log_likelihood(rows[r])

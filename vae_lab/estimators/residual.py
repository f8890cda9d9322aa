"""The ELBO q* still had to gain where it stopped (``eval/qstar_residual``), and the fit of q*
that stops on it rather than on its step size.

For a Gaussian family the ELBO still to gain is R of the quadratic model of
``vae_lab.estimators.newton``: exact where the model is Gaussian (pPCA), an upper estimate in
expectation elsewhere. For any other family (the flows) it is measured: q* is continued for
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
from vae_lab.estimators.newton import Gaussian, RowsLogLikelihood, curvature, joint


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
    the mean of ``residual_sample_factor`` estimates of R from ``settings.num_samples``
    antithetic pairs each, with the variance of that mean; for any other the continuation's
    gain on ``num_samples`` draws (``chunk_size`` at a time), with its Monte Carlo variance."""
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
    """``qstar_residual`` of a Gaussian family: the quadratic model's R at theta [N, P]."""
    rows = torch.arange(theta.shape[0], device=theta.device)
    q, ll = Gaussian.of(family.distribution(theta)), log_likelihood(rows)
    draws = torch.stack([
        curvature(joint(prior, ll), q, settings.num_samples, theta.dtype).remaining(q)
        for _ in range(settings.residual_sample_factor)
    ])  # fmt: skip
    return Estimate(draws.mean(0), draws.var(0) / len(draws))


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

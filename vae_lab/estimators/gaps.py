"""The inference-gap split of Cremer, Li & Duvenaud (2018), "Inference Suboptimality in
Variational Autoencoders":

    log p(x) - ELBO(q) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q)]
                          approximation gap      amortization gap

q = q(z|x; theta(x)) is the encoder's posterior and q* = q(z|x; theta*_x) the best member of
the same family for this x: theta*_x = argmax_theta ELBO(x; theta) with the decoder and the
prior frozen. Every family builds q from a flat vector theta (``PosteriorFamily.distribution``),
flows included, so q* is found by optimising free per-datapoint parameters theta [N, P]. All
datapoints are optimised at once: the objective is the sum of the per-datapoint ELBOs, so each
row of theta receives the gradient of its own ELBO only, and Adam's update is elementwise, so
the batch is N independent optimisations run side by side.

Convergence is tested per datapoint: every ``check_every`` steps the ELBO is evaluated on the
same draws of the noise each time (common random numbers: ``residual_sample_factor`` x
``num_samples`` draws fixed at the start, the same for every datapoint), a deterministic
function of theta, and compared with the best so far; after ``patience`` checks without an
improvement of ``tol`` nats the datapoint's step size is halved, and at the first such plateau
after ``num_decays`` halvings the datapoint is frozen (converged). The loop ends when all are
frozen or after ``max_steps``. Each step evaluates the datapoints not yet frozen only, so a fit
costs in proportion to how long each datapoint takes to converge, not the slowest one.
The shrinking step size lets Adam settle closer to the optimum than its noise floor at the
initial step size. An earlier rule compared the mean of the steps' own noisy ELBOs over a
window with the best such mean: the record of a noisy series is a high outlier, so progress
slower than the noise (0.06 nats per window at a 1-nat gap) read as a plateau, and on a 50-D
PPCA model two epochs into training q* froze 0.5 to 1.3 nats from the exact posterior with every
datapoint "converged" and a residual of 0.01.

For the Gaussian families the gradient is the "sticking the landing" one (Roeder, Wu &
Duvenaud 2017, ``gradient=stl``): the score term of log q is dropped (log q evaluated with its
parameters detached), which leaves the gradient unbiased and makes its variance vanish when
q equals the posterior, so q* can reach the optimum instead of a noise floor; flows keep the
plain reparameterised gradient (their log q at a given z needs an inverse).

``eval/qstar_residual``, the ELBO still to gain when q* stopped, and the probe that releases a
datapoint the step-size rule froze short of its optimum: ``vae_lab.estimators.residual``.

theta starts from the encoder (``qstar_init=encoder``) or from the prior (``prior``). From the
prior it is the one theta_0 = argmax_theta -KL(q_theta || p(z)) found by the same optimiser (an
ELBO without a likelihood term), from the family's head bias. From the encoder it is the
encoder's theta(x) for the run's own family; for another family (Cremer et al.'s L[q*_FFG] of
a flow-trained model, say) it is theta_0 with its Gaussian part moved to the mean and the
per-coordinate standard deviation of samples of the encoder's q(z|x), so that every q*
starts near the amortised posterior rather than at the prior. Each datapoint then starts at
the best by the ELBO (``qstar_start``) of that start, theta_0, and theta_0 moved to the
encoder's mean (``mean_moved_theta``): an encoder left degenerate by a short training run (a
full-covariance factor with cond(L) ~ 1e15, diagonal entries of 1e-4 beside off-diagonal ones
of 10) is a start from which Adam does not recover in thousands of steps, and theta_0 is far
from a posterior whose mean is far from the prior's; the encoder's mean with theta_0's
well-conditioned spread is near the one and safe from the other. On a 50-D PPCA model two
epochs into training, where the first two alone left q* 0.26 nats from the exact posterior on
average after 5,000 steps (up to 10.7 nats at one point, 4% of the points unconverged), the
third brings every point within 0.001 (0.00004 on average) in 2,100 steps.

ELBOs are reported as the mean of log w = log p(x, z) - log q(z|x) over S samples with Monte
Carlo variance Var[log w] / S (the ``elbo`` of the ELBO core's ``iw_log_px``), as figures of
``vae_lab.estimators.estimate``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal
from tqdm import trange

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.components.posteriors.gaussian import raw_scale
from vae_lab.estimators.elbo import (
    LogLikelihood,
    elbo_terms,
    log_importance_weights,
    log_weights_of_noise,
    reparameterize,
    rsample_with_log_prob,
)
from vae_lab.estimators.estimate import Figure
from vae_lab.estimators.newton import (
    RowsLogLikelihood,
    fit_newton,
)

log = logging.getLogger(__name__)


def gap_split(log_px: Figure, elbo_qstar: Figure, elbo_q: Figure) -> dict[str, Figure]:
    return {
        "approximation_gap": log_px - elbo_qstar,
        "amortization_gap": elbo_qstar - elbo_q,
        "inference_gap": log_px - elbo_q,
    }


@dataclass
class QStarSettings:
    lr: float = 1e-2  # Adam's initial step size
    num_samples: int = 10  # samples of z per datapoint per step
    max_steps: int = 5000
    check_every: int = 50  # steps between convergence checks
    patience: int = 2  # checks without improvement before the step size is halved
    num_decays: int = 8  # halvings before a datapoint is frozen
    tol: float = 1e-3  # nats: the improvement that counts
    gradient: str = "stl"  # stl (for the Gaussian families) or reparam
    residual_steps: int = 200  # steps of the continuation that measures qstar_residual
    residual_sample_factor: int = 4  # its samples per step, as a multiple of num_samples
    newton_steps: int = 20  # Newton updates of a Gaussian family before Adam (0: none)


@dataclass
class QStarFit:
    theta: Tensor  # theta*, [N, P]
    steps: int  # iterations run
    converged: Tensor  # which datapoints met the convergence test, [N] bool
    rate: Tensor  # each datapoint's final step size as a fraction of settings.lr, [N]


def fit_qstar(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    theta0: Tensor,
    settings: QStarSettings,
    progress: bool = False,
    rate0: Tensor | None = None,
) -> QStarFit:
    """theta* = argmax_theta ELBO(x; theta) for every datapoint of the batch, from theta0 [N, P].

    ``log_likelihood(rows)`` is the likelihood of the datapoints ``rows``, e.g.
    ``lambda rows: model.log_likelihood(x[rows])``; only theta is differentiated. ``rate0``
    [N] starts each datapoint's step size at that fraction of ``settings.lr`` (default 1).
    """
    num_points = theta0.shape[0]
    rate = torch.ones(num_points, dtype=theta0.dtype, device=theta0.device)  # 0 once frozen
    if rate0 is not None:
        rate = rate0.to(theta0).clone()
    with torch.no_grad():  # the noise of the convergence checks: fixed, and alike for every
        # datapoint, so that a datapoint's fit does not depend on the batch it is in
        shape = reparameterize(family.distribution(theta0[:1])).noise.event_shape
        generator = torch.Generator(theta0.device).manual_seed(CHECK_SEED)
        half = settings.num_samples * settings.residual_sample_factor // 2
        noise = torch.randn(
            half, 1, *shape, generator=generator, dtype=theta0.dtype, device=theta0.device
        )
        noise = torch.cat([noise, -noise])  # antithetic: exact for a quadratic log p(x, z)
    newton_steps = 0
    if family.gaussian and settings.newton_steps:
        newton = fit_newton(
            family, prior, log_likelihood, theta0,
            min(settings.newton_steps, settings.max_steps), settings.num_samples,
            noise, settings.tol, progress,
        )  # fmt: skip
        theta0, newton_steps = newton.theta, newton.steps
        rate = torch.where(newton.converged, 0.0, rate)
    theta = theta0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=settings.lr)
    last_rate = torch.where(rate > 0, rate, 1.0)
    best = torch.full((num_points,), -math.inf, dtype=torch.float64, device=theta.device)
    stalls = torch.zeros(num_points, dtype=torch.long, device=theta.device)
    decays = torch.zeros_like(stalls)
    active = (rate > 0).nonzero().squeeze(1)
    step = -1
    adam_steps = max(settings.max_steps - newton_steps, 0) if len(active) else 0
    bar = trange(adam_steps, desc="q*", disable=not progress, leave=False)
    for step in bar:
        with torch.enable_grad():
            elbo = objective(
                family, theta[active], prior, log_likelihood(active), settings.num_samples,
                settings.gradient,
            )  # fmt: skip
            (grad,) = torch.autograd.grad(-elbo.sum(), theta)
        before = theta.detach().clone()
        theta.grad = grad
        optimizer.step()
        with torch.no_grad():
            theta.copy_(before + rate[:, None] * (theta - before))
        if (step + 1) % settings.check_every:
            continue
        current = best.clone()
        current[active] = fixed_noise_elbo(
            family.distribution(theta[active].detach()), prior, log_likelihood(active),
            noise.expand(-1, len(active), *shape),
        )  # fmt: skip
        improved = current > best + settings.tol
        best = torch.where(improved, current, best)
        stalls = torch.where(improved, 0, stalls + 1)
        plateau = (stalls >= settings.patience) & (rate > 0)
        freeze = plateau & (decays >= settings.num_decays)
        halve = plateau & ~freeze
        rate = torch.where(freeze, 0.0, torch.where(halve, rate / 2, rate))
        last_rate = torch.where(rate > 0, rate, last_rate)
        decays += halve
        stalls[plateau] = 0
        active = (rate > 0).nonzero().squeeze(1)
        bar.set_postfix(converged=f"{num_points - len(active)}/{num_points}")
        if len(active) == 0:
            break
    return QStarFit(theta.detach(), newton_steps + step + 1, rate == 0, last_rate)


def fixed_noise_elbo(
    q: Distribution, prior: Distribution, log_likelihood: LogLikelihood, noise: Tensor
) -> Tensor:
    """mean_s log p(x, z_s) - log q(z_s|x), z_s = T(noise_s) (``elbo.reparameterize``): the
    ELBO on given draws [S, N, D] of q's noise (N(0, I) for every family), float64 [N]."""
    with torch.no_grad():
        log_w, _ = log_weights_of_noise(q, prior, log_likelihood, noise)
        return log_w.double().mean(0)


def objective(
    family: PosteriorFamily,
    theta: Tensor,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    num_samples: int,
    gradient: str,
) -> Tensor:
    """The per-datapoint ELBO whose gradient q* follows: with ``gradient=stl`` and a Gaussian
    q, mean_s log p(x, z_s) - log q_{stop(theta)}(z_s), the sticking-the-landing estimator;
    else the ELBO core's reparameterised ELBO (analytic KL where known)."""
    q = family.distribution(theta)
    if gradient == "stl" and isinstance(q, (Independent, MultivariateNormal)):
        z, log_q = rsample_with_log_prob(q, num_samples)  # the value, exact from the noise
        stopped = family.distribution(theta.detach()).log_prob(z)  # the gradient, through z
        log_q = log_q.detach() + stopped - stopped.detach()
        return (log_likelihood(z) + prior.log_prob(z) - log_q).mean(0)
    return elbo_terms(q, prior, log_likelihood, num_samples).elbo


def warn_if_residual_matters(residual: Figure, gap_stderr: float) -> bool:
    """Log one line when q* stopped further from its optimum than the gaps' stderr says."""
    if not residual.value > max(3 * residual.stderr, gap_stderr):
        return False
    log.warning(
        "eval/qstar_residual = %.4f nats, above the approximation gap's stderr %.4f: q* "
        "stopped short of its optimum, so the approximation gap is overestimated and the "
        "amortization gap underestimated by about that much; raise eval.qstar_max_steps or "
        "eval.qstar_decays",
        residual.value, gap_stderr,
    )  # fmt: skip
    return True


#: seeds the noise of fit_qstar's convergence checks (its own generator: the global stream is
#: left as it was)
CHECK_SEED = 0

#: std of the perturbation of the head bias that q* from the prior starts at
SADDLE_NOISE = 1e-2


def prior_theta(
    family: PosteriorFamily, prior: Distribution, num_points: int, settings: QStarSettings
) -> Tensor:
    """theta_0 = argmax_theta -KL(q_theta || p(z)), the family member closest to the prior,
    repeated for ``num_points`` datapoints, [N, P].

    The search starts at the head bias plus N(0, SADDLE_NOISE^2) noise: a planar or Sylvester
    layer with all-zero parameters (u = w = b = 0; R = R~ = b = 0) is the identity at a saddle
    where no gradient reaches any of them, and the head's biases start at zero.
    """
    bias = family.head.bias.detach()[None]
    start = bias + SADDLE_NOISE * torch.randn_like(bias)

    def no_likelihood(z: Tensor) -> Tensor:
        return z.new_zeros(z.shape[:-1])

    fit = fit_qstar(family, prior, lambda rows: no_likelihood, start, settings)
    return fit.theta.expand(num_points, -1)


#: steps of the fit to the prior that is the run's own family's fallback start (``qstar_start``):
#: a sane start, not an optimum, at a fifth of a full fit's cost
FALLBACK_START_STEPS = 200


def qstar_start(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    candidates: list[Tensor],
    num_samples: int = 20,
) -> Tensor:
    """Per datapoint, the candidate theta [N, P] with the highest ELBO, each estimated from
    ``num_samples`` draws (module docstring: the encoder's start, or theta_0 where the
    encoder's is worse). Which start wins does not bias the ELBO of q*, estimated afresh."""
    with torch.inference_mode():
        elbos = torch.stack(
            [
                log_importance_weights(family.distribution(theta), prior, log_likelihood,
                                       num_samples)[0].double().mean(0)
                for theta in candidates
            ]
        )  # fmt: skip
    best = torch.nan_to_num(elbos, nan=-math.inf).argmax(0)
    return torch.stack(candidates)[best, torch.arange(best.numel(), device=best.device)]


def mean_moved_theta(theta: Tensor, near: Tensor, latent_dim: int) -> Tensor:
    """theta [N, P] with its Gaussian mean mu (the first ``latent_dim`` entries, as every
    family lays theta out) taken from ``near`` [N, P]; its spread and flow layers kept."""
    return torch.cat([near[:, :latent_dim], theta[:, latent_dim:]], dim=1)


def moment_matched_theta(
    family: PosteriorFamily, q: Distribution, theta: Tensor, num_samples: int = 100
) -> Tensor:
    """theta [N, P] with the family's Gaussian part set to N(m, diag s^2), m and s the mean
    and standard deviation of ``num_samples`` samples of q (batch shape [N]).

    Every family lays theta out as [mu | r | ...], its Gaussian (or a flow's Gaussian base)
    having mean mu and diagonal scale softplus(r) + MIN_SCALE (``PosteriorFamily``); the
    other entries (off-diagonal factors, flow layers) are kept.
    """
    d = family.latent_dim
    z = q.sample((num_samples,))
    matched = theta.clone()
    matched[:, :d] = z.mean(0)
    matched[:, d : 2 * d] = raw_scale(z.std(0))
    return matched

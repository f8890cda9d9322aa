"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal
likelihood using bidirectional Monte Carlo"), as used on VAEs by Wu et al. (2017) and Cremer
et al. (2018): a certificate for the AIS schedule on the model at hand.

On data simulated from the model itself, z* ~ p(z) and x ~ p(x|z*), the generating z* is an
exact sample of the posterior p(z|x). Then

* forward AIS from q(z|x) to p(x, z) (``vae_lab.ais``) gives weights with E[w] = p(x), and
  log (1/C) sum_c w_c is a stochastic lower bound on log p(x);
* reverse AIS, started at z* and annealed back from p(z|x) to q(z|x) along the same path
  (betas reversed, the same frozen step sizes), gives weights with E[w'] = 1/p(x), and
  -log (1/C) sum_c w'_c is a stochastic upper bound.

The width of the sandwich bounds the error of either estimate on such data: a narrow one
certifies the schedule (``eval.ais_steps``, chains, leapfrog steps) for this model; real data,
not drawn from the model, may need more. Both passes run in the noise coordinates of q
(``vae_lab.ais``), reverse chains starting at eps* = T^-1(z*).

Standard errors: the lower bound's is the chains' delta-method one, as for AIS. The reverse
chains of a datapoint share their start z*, so the spread among them misses the start's
share of the variance; the upper bound's stderr is therefore taken from the spread over
datapoints of the per-datapoint width u_i - l_i, std_i(u_i - l_i) / sqrt(N). By the law of
total variance this is at least the conditional spread of u_i - l_i, so at least the standard
error of either bound: conservative. Neither stderr covers the bias that the width measures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.ais import AnnealingPath, ais_log_px, anneal, sigmoid_schedule
from vae_lab.data.linear_gaussian import ppca_of
from vae_lab.elbo import LogLikelihood, log_mean_weight, reparameterize
from vae_lab.estimate import Estimate, Figure

if TYPE_CHECKING:
    from vae_lab.module import VAE

log = logging.getLogger(__name__)


@dataclass
class BDMCEstimate:
    """The sandwich lower <= log p(x) <= upper (in expectation), per simulated datapoint."""

    lower: Estimate  # forward AIS
    upper: Estimate  # reverse AIS, with the conservative variance of the module docstring
    accept_rate: Tensor  # the forward pass's mean HMC acceptance probability, [N]


def simulate(
    prior: Distribution, decode: Callable[[Tensor], Distribution], num_points: int
) -> tuple[Tensor, Tensor]:
    """z* ~ p(z) and x ~ p(x|z*) = decode(z*), [N, D] and [N, X]."""
    with torch.no_grad():
        z = prior.sample((num_points,))
        return z, decode(z).sample()


def bdmc(
    q: Distribution,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    z_true: Tensor,
    num_steps: int,
    num_chains: int,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    pilot_chains: int = 4,
    progress: bool = False,
) -> BDMCEstimate:
    """Forward and reverse AIS for N simulated datapoints x (``log_likelihood`` is theirs, q
    has batch shape [N]) generated from ``z_true`` [N, D]; the step sizes are frozen from a
    pilot forward pass and replayed, reversed, by the reverse pass."""
    forward = ais_log_px(
        q, prior, log_likelihood, num_steps, num_chains, leapfrog_steps, step_size,
        pilot_chains=pilot_chains, progress=progress,
    )  # fmt: skip
    reparam = reparameterize(q)
    with torch.no_grad():
        start = reparam.pull_back(z_true).expand(num_chains, *z_true.shape)
    path = AnnealingPath.of(q, prior, log_likelihood)
    betas = sigmoid_schedule(num_steps).flip(0)
    reverse, _, _ = anneal(
        path, start, betas, forward.step_sizes.flip(0), leapfrog_steps, progress=progress
    )
    lower = forward.log_px
    upper = -log_mean_weight(reverse).value
    width = upper - lower.value
    spread = width.var() if width.numel() > 1 else torch.zeros_like(width[0])
    return BDMCEstimate(lower, Estimate(upper, spread.expand_as(upper)), forward.accept_rate)


def bdmc_metrics(
    model: VAE,
    ev: DictConfig,
    start: Callable[[Tensor], Distribution],
    ais_stderr: float = 0.0,
) -> dict[str, float]:
    """The eval/ figures of BDMC on ``ev.bdmc_points`` datapoints simulated from the model
    (seeded by ``ev.seed``), with the AIS settings of ``ev`` from the start q = ``start(x)``
    that the reported AIS used (the encoder's ``model.q``, or q* fitted to x), and, for a PPCA
    model, the exact mean log p(x) of the simulated data; ``eval/bdmc_certified`` is 0 when
    the sandwich is wider than its noise and than ``ais_stderr``, the stated error of AIS."""
    torch.manual_seed(ev.seed)
    prior = model.p_z()
    z, x = simulate(prior, lambda z: model.likelihood(model.decoder(z)), ev.bdmc_points)
    q = start(x)
    estimate = bdmc(
        q, prior, model.log_likelihood(x), z, ev.ais_steps, ev.ais_chains,
        leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains, progress=True,
    )  # fmt: skip
    metrics = {
        "eval/bdmc_points": ev.bdmc_points,
        "eval/bdmc_ais_steps": ev.ais_steps,
        "eval/bdmc_ais_chains": ev.ais_chains,
        "eval/bdmc_accept_rate": float(estimate.accept_rate.mean()),
    }
    width = estimate.upper.figure().value - estimate.lower.figure().value
    for name, figure in (
        ("log_px_bdmc_lower", estimate.lower.figure()),
        ("log_px_bdmc_upper", estimate.upper.figure()),
        ("bdmc_gap", Figure(width, estimate.upper.figure().stderr)),
    ):
        metrics.update(figure.named(f"eval/{name}"))
    uncertified = warn_if_uncertified(Figure(width, estimate.upper.figure().stderr), ais_stderr)
    metrics["eval/bdmc_certified"] = float(not uncertified)
    ppca = ppca_of(model)
    if ppca is not None:
        metrics["eval/log_px_bdmc_exact"] = float(ppca.marginal().log_prob(x.double()).mean())
    return metrics


def warn_if_uncertified(width: Figure, ais_stderr: float = 0.0) -> bool:
    """Log one line when the sandwich is wider than twice its noise (about 95% one-sided)
    and than ``ais_stderr``, the stated error of the AIS figure: AIS may then be below
    log p(x) by more than it says. A sandwich whose width is not distinguishable from 0 does
    not raise this, though it certifies AIS only to within its own stderr."""
    if not width.value > max(2 * width.stderr, ais_stderr):
        return False
    log.warning(
        "eval/bdmc_gap = %.3f +- %.3f nats: AIS with these settings may be that far below "
        "log p(x), beyond its stderr %.3f; raise eval.ais_steps (and eval.ais_chains)",
        width.value, width.stderr, ais_stderr,
    )  # fmt: skip
    return True

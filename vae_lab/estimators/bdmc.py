"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal
likelihood using bidirectional Monte Carlo"), as used on VAEs by Wu et al. (2017) and Cremer
et al. (2018): a certificate for the AIS schedule on the model at hand.

On data simulated from the model itself, z* ~ p(z) and x ~ p(x|z*), the generating z* is an
exact sample of the posterior p(z|x). Then

* forward AIS from q(z|x) to p(x, z) (``vae_lab.estimators.ais``) gives weights with E[w] = p(x),
and
  log (1/C) sum_c w_c is a stochastic lower bound on log p(x);
* reverse AIS, started at z* and annealed back from p(z|x) to q(z|x) along the same path
  (betas reversed, the same frozen step sizes), gives weights with E[w'] = 1/p(x), and
  -log (1/C) sum_c w'_c is a stochastic upper bound.

The width of the sandwich bounds the error of either estimate on such data: a narrow one
certifies the schedule (``eval.ais_steps``, chains, leapfrog steps) for this model; real data,
not drawn from the model, may need more. Both passes run in the noise coordinates of q
(``vae_lab.estimators.ais``), reverse chains starting at eps* = T^-1(z*).

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

import torch
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.estimators.ais import AnnealingPath, ais_log_px, anneal, sigmoid_schedule
from vae_lab.estimators.elbo import LogLikelihood, log_mean_weight, reparameterize
from vae_lab.estimators.estimate import Estimate, Figure

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
    progress: str | None = None,
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
        path,
        start,
        betas,
        forward.step_sizes.flip(0),
        leapfrog_steps,
        progress=progress and f"{progress}: reverse",
    )
    lower = forward.log_px
    upper = -log_mean_weight(reverse).value
    width = upper - lower.value
    spread = width.var() if width.numel() > 1 else torch.zeros_like(width[0])
    return BDMCEstimate(lower, Estimate(upper, spread.expand_as(upper)), forward.accept_rate)


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

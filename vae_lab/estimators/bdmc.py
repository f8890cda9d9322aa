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

The width of the sandwich bounds the error of either estimate on such data: a narrow one (in
absolute nats, ``certified``: a width comparable with its own stderr is no certificate where
that stderr is itself large, as it is where a few reverse chains carry enormous weights)
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
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.estimators.ais import (
    AnnealingPath,
    ais_log_px,
    reverse_log_weights,
    sigmoid_schedule,
)
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
    reverse = reverse_log_weights(
        path, start, sigmoid_schedule(num_steps), forward.step_sizes, leapfrog_steps, progress
    )
    lower = forward.log_px
    upper = -log_mean_weight(reverse).value
    width = upper - lower.value
    spread = width.var() if width.numel() > 1 else torch.zeros_like(width[0])
    return BDMCEstimate(lower, Estimate(upper, spread.expand_as(upper)), forward.accept_rate)


def certified(lower: Figure, upper: Figure, max_width: float, ais_steps: int) -> bool:
    """Whether the sandwich certifies AIS: both bounds finite, and the width upper - lower
    no more than ``max_width`` nats in size with two of its stderrs added (``upper.stderr`` is
    the width's, conservative: module docstring; bounds crossed by more than that are no
    sandwich either), the lower bound's stderr within it too. Else one line that says how wide
    it is and what to change."""
    width = upper.value - lower.value
    narrow = math.isfinite(width) and abs(width) + 2 * upper.stderr <= max_width
    if narrow and lower.stderr <= max_width:
        return True
    if not math.isfinite(upper.value):
        what = "the upper bound is not finite (every reverse chain's weight underflowed)"
    elif not math.isfinite(lower.value):
        what = "the lower bound is not finite (every forward chain's weight underflowed)"
    else:
        what = (f"the sandwich is {width:.4g} +- {upper.stderr:.2g} nats wide (lower bound's "
                f"stderr {lower.stderr:.2g})")  # fmt: skip
    log.warning(
        "eval/log_px_bdmc_lower = %.4g, upper = %.4g: %s; BDMC certifies AIS only where the width "
        "with two stderrs is within eval.bdmc_max_width = %g nats, so it does not; raise "
        "eval.ais_steps (now %d), or eval.ais_leapfrog_steps where "
        "eval/bdmc_accept_rate is low",
        lower.value, upper.value, what, max_width, ais_steps,
    )  # fmt: skip
    return False

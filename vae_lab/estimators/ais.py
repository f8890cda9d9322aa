"""Annealed importance sampling of log p(x) (Neal 2001), as used for VAEs by Wu et al. (2017).

AIS moves C chains per datapoint from a normalised initial distribution q0(z|x) (the
posterior, or the base of a flow posterior: see below) to the unnormalised posterior p(x, z)
through the geometric path

    f_t(z) = q0(z|x)^(1 - beta_t) p(x, z)^beta_t,     0 = beta_0 < beta_1 < ... < beta_T = 1,

drawing z_0 ~ q0 and z_t from an HMC transition that leaves f_t invariant, started at z_{t-1}.
Each chain's weight

    log w = sum_{t=1}^T log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})
          = sum_{t=1}^T (beta_t - beta_{t-1}) (log p(x, z_{t-1}) - log q0(z_{t-1}|x))

is unbiased, E[w] = p(x), so log p^(x) = logsumexp_c log w_c - log C is a stochastic lower
bound, like the IW estimate; its Monte Carlo variance is estimated by the same delta method,
1/ESS - 1/C.

The initial distribution is a posterior q(z|x) (``vae_lab.evaluate`` passes q*, the best member
of the family per datapoint, or the encoder's q: the nearer the posterior it starts, the less
AIS has to anneal and the smaller its bias), annealed in the coordinates of its noise: every
reparameterisable q is z = T(eps), eps ~ q0 = N(0, I) (``elbo.reparameterize``: mu + L eps for
the Gaussians, a flow's layers after its base's), and there the path

    g_t(eps) = q0(eps)^(1 - beta_t) [p(x, T(eps)) |det dT/deps|]^beta_t
             = q(z|x)^(1 - beta_t) p(x, z)^beta_t |det dT/deps|

is the path above from q to p(x, z), carried to eps by the change of variables, with the same
normalising constants (q0's is 1, the last is p(x)). It needs only T's forward pass, never
q.log_prob (whose round trip through L^-1 loses all precision for an ill-conditioned L), and
the HMC moves in eps are moves in z preconditioned by q.

The betas follow the sigmoid schedule (Grosse et al. 2013, used by Wu et al. 2017). Each HMC
transition resamples the momentum, takes L leapfrog steps and accepts by Metropolis-Hastings.

Step sizes are frozen before the reported chains start. A pilot pass (``pilot_chains`` chains
per datapoint) adapts each datapoint's step size, multiplying it by 1.1 when its chains' mean
acceptance probability is above the target (0.65) and by 0.9 otherwise, and records the step
size used at every beta_t; its weights are discarded, so it may adapt this fast (a 50-step
annealing reaches a useful step size from 0.05, where 1.02 left the chains nearly still). The
reported pass replays that schedule on fresh chains. Adapting within the reported pass would
make the step size at t depend on the chains' own past acceptances, and so on their positions;
the transitions would still leave each f_t invariant one by one, but the chain would no longer
be the fixed sequence of kernels the unbiasedness proof (Neal 2001) needs, and E[w] = p(x)
fails: measured on a 20-D PPCA model, the adaptive estimate was 4 standard errors *above* the
exact log p(x). With a schedule that depends only on the pilot's independent chains, each
reported weight is unbiased given the schedule, and log p^(x) is a stochastic lower bound
again. Datapoints and chains are one batch, eps of shape [C, N, D]; the model is only
differentiated with respect to eps. Weights are accumulated in float64.

What the stderr does not cover. E[w] = p(x) makes the log of the mean of C weights low by the
Jensen gap log p(x) - E[log p^(x)] > 0, which does not shrink as datapoints are averaged while
the stderr does. The jackknife over chains (Quenouille 1956; Nowozin 2018, "Debiasing evidence
approximations") estimates its O(1/C) term, (C - 1) (log p^(x) - mean_c log p^_(-c)(x)), but
like the stderr it sees only the chains drawn: where the annealing is too short for the
posterior, a few chains carry the weight and both understate the error. The error is measured
instead by a sandwich on the points themselves (``reverse=True``; Grosse, Ghahramani & Adams
2015 bound it so on simulated data, ``vae_lab.estimators.bdmc``; Grosse et al. 2016 start the
reverse chains from approximate posterior samples on real data): the forward chains' end
states, resampled by their weights, start reverse AIS along the same path (betas and step
sizes reversed), whose weights w' have E[w'] = 1/p(x) where the starts are exact posterior
samples, so that -log mean_c w'_c is a stochastic upper bound. The width of the sandwich,
upper - lower, bounds the forward estimate's error where the end states are near the
posterior, and the stated bias is the larger of its mean and the jackknife's. Where the
forward chains end far from the posterior the reverse chains start there too, and the width
is an estimate, not a bound; BDMC on data simulated from the model bounds it.
With one chain the jackknife is NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm import trange

from vae_lab.estimators.elbo import LogLikelihood, log_mean_weight, reparameterize
from vae_lab.estimators.estimate import Estimate, Figure

log = logging.getLogger(__name__)

LogDensity = Callable[[Tensor], Tensor]
#: the pilot's step-size factor: x ADAPT above the target acceptance, x (2 - ADAPT) below
ADAPT = 1.1


@dataclass
class AISEstimate:
    """The AIS estimate of log p(x), per datapoint."""

    # logsumexp_c log w_c - log C, [N], float64, with its delta-method variance 1/ESS - 1/C:
    # the chains' Monte Carlo noise, not the bias of a stochastic lower bound
    log_px: Estimate
    accept_rate: Tensor  # mean HMC acceptance probability over steps and chains, [N]
    step_sizes: Tensor  # the frozen schedule: the step size at beta_1..beta_{T-1}, [T - 1, N]
    shortfall: Tensor  # the jackknife estimate of log p(x) - E[log p^(x)] >= 0, [N], float64
    ess_fraction: Tensor  # (sum_c w_c)^2 / (C sum_c w_c^2), [N]
    upper: Tensor | None = None  # reverse AIS's -log mean_c w'_c (``reverse=True``), [N]

    def width(self) -> Figure | None:
        """The sandwich's mean width, upper - lower, with the spread of the widths over
        datapoints as its stderr (as BDMC's, ``vae_lab.estimators.bdmc``); None without the
        reverse pass."""
        if self.upper is None:
            return None
        width = self.upper - self.log_px.value
        spread = width.var() if width.numel() > 1 else torch.zeros_like(width[0])
        return Estimate(width, spread.expand_as(width)).figure()

    def bias(self) -> Figure:
        """The stated bias of the dataset figure: the larger of the sandwich's mean width and
        the jackknife's mean (module docstring)."""
        jackknife = Figure(float(self.shortfall.mean()), 0.0)
        width = self.width()
        return width if width is not None and not width.value < jackknife.value else jackknife


def jackknife_shortfall(log_w: Tensor) -> Tensor:
    """(C - 1) (log mean_c w_c - mean_c log mean_{c' != c} w_c') per datapoint, from the
    log-weights [C, N]: the jackknife estimate of how far below log p(x) the log of the mean
    of C unbiased weights lies in expectation (module docstring); >= 0 by Jensen, [N]."""
    num_chains = log_w.shape[0]
    if num_chains < 2:
        return torch.full(log_w.shape[1:], math.nan, dtype=torch.float64, device=log_w.device)
    log_w = log_w.double()
    total = torch.logsumexp(log_w, 0)
    # log sum_{c' != c} w_c' = total + log(1 - w_c / sum); a chain carrying all the weight
    # leaves the others' sum at the floor of float64, and the estimate says so by its size
    leave_out = total + torch.log1p(-torch.exp(log_w - total)).clamp_min(-745.0)
    full = total - math.log(num_chains)
    return (num_chains - 1) * (full - (leave_out - math.log(num_chains - 1)).mean(0))


def ess_fraction(log_w: Tensor) -> Tensor:
    """The effective sample size of the weights over dim 0 as a fraction of their number."""
    log_w = log_w.double()
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / len(log_w)


def warn_if_biased(log_px: Figure, bias: Figure, max_bias: float, suggest_bdmc: bool) -> bool:
    """Log one line when AIS's stated bias (``AISEstimate.bias``) is above ``max_bias`` nats
    or not finite; True if it was."""
    if bias.value <= max_bias:
        return False
    log.warning(
        "eval/log_px_ais = %.3f +- %.3f may lie below log p(x) by up to %.3g nats (the width of "
        "the sandwich of its chains with reverse chains from their end states), above "
        "eval.bdmc_max_width = %g; raise eval.ais_steps and eval.ais_chains%s",
        log_px.value, log_px.stderr, bias.value, max_bias,
        ", or certify it with eval.bdmc=true" if suggest_bdmc else "",
    )  # fmt: skip
    return True


def sigmoid_schedule(num_steps: int, delta: float = 4.0) -> Tensor:
    """beta_0..beta_T: sigmoid(delta (2t/T - 1)) rescaled to run from exactly 0 to exactly 1."""
    s = torch.sigmoid(delta * torch.linspace(-1.0, 1.0, num_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class ChainState:
    """Chain positions z [C, N, D] with log q0(z|x), log p(x, z) [C, N] and their z-gradients."""

    z: Tensor
    log_q0: Tensor
    log_joint: Tensor
    grad_q0: Tensor
    grad_joint: Tensor

    @classmethod
    def at(cls, z: Tensor, log_q0: LogDensity, log_joint: LogDensity) -> ChainState:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lq, lj = log_q0(z), log_joint(z)
            (gq,) = torch.autograd.grad(lq.sum(), z)
            (gj,) = torch.autograd.grad(lj.sum(), z)
        return cls(z.detach(), lq.detach(), lj.detach(), gq, gj)

    def potential(self, beta: float) -> Tensor:
        """U_t(z) = -log f_t(z), [C, N]."""
        return -((1 - beta) * self.log_q0 + beta * self.log_joint)

    def grad_potential(self, beta: float) -> Tensor:
        return -((1 - beta) * self.grad_q0 + beta * self.grad_joint)

    def where(self, take: Tensor, other: ChainState) -> ChainState:
        """Each chain's state from ``other`` where ``take`` [C, N] holds, else from self."""

        def pick(mine: Tensor, new: Tensor) -> Tensor:
            return torch.where(take if mine.dim() == take.dim() else take[..., None], new, mine)

        return ChainState(
            *(pick(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))
        )


def hmc_transition(
    state: ChainState,
    beta: float,
    step_size: Tensor,
    leapfrog_steps: int,
    log_q0: LogDensity,
    log_joint: LogDensity,
) -> tuple[ChainState, Tensor]:
    """One HMC transition leaving f_beta invariant; the new state and the acceptance
    probabilities [C, N]. ``step_size`` broadcasts against z (e.g. [1, N, 1])."""
    momentum = torch.randn_like(state.z)
    start_energy = state.potential(beta) + 0.5 * (momentum**2).sum(-1)
    proposal = state
    momentum = momentum - 0.5 * step_size * proposal.grad_potential(beta)
    for step in range(leapfrog_steps):
        proposal = ChainState.at(proposal.z + step_size * momentum, log_q0, log_joint)
        kick = 0.5 if step == leapfrog_steps - 1 else 1.0
        momentum = momentum - kick * step_size * proposal.grad_potential(beta)
    end_energy = proposal.potential(beta) + 0.5 * (momentum**2).sum(-1)
    log_accept = (start_energy - end_energy).clamp(max=0.0)
    log_accept = torch.where(torch.isnan(log_accept), -math.inf, log_accept)
    accept = torch.rand_like(log_accept).log() < log_accept
    return state.where(accept, proposal), log_accept.exp()


@dataclass
class AnnealingPath:
    """The annealing path in the noise coordinates eps of q (see the module docstring)."""

    log_q0: LogDensity
    log_joint: LogDensity  # log p(x, T(eps)) + log |det dT/deps|

    @classmethod
    def of(
        cls, q: Distribution, prior: Distribution, log_likelihood: LogLikelihood
    ) -> AnnealingPath:
        reparam = reparameterize(q)

        def log_joint(eps: Tensor) -> Tensor:
            z, log_det = reparam.push_forward(eps)
            return log_likelihood(z) + prior.log_prob(z) + log_det

        return cls(reparam.noise.log_prob, log_joint)


def anneal(
    path: AnnealingPath,
    start: Tensor,
    betas: Tensor,
    step_sizes: Tensor | float,
    leapfrog_steps: int,
    target_accept: float = 0.65,
    progress: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run chains from ``start`` [C, N, D] along ``betas`` (beta_0..beta_T); the log-weights
    sum_t (beta_t - beta_{t-1}) (log p(x, eps_{t-1}) - log q0(eps_{t-1})), [C, N], the mean
    acceptance probability [N], the step sizes used at beta_1..beta_{T-1}, [T - 1, N], and
    the chains' end states [C, N, D].

    ``step_sizes`` [T - 1, N] is replayed as given; a float is a starting step size adapted
    towards ``target_accept`` (a pilot pass: its weights are not unbiased). No transition
    follows the last weight increment, which would not change the weight. ``progress``: the
    label of a progress bar, None for none.
    """
    state = ChainState.at(start, path.log_q0, path.log_joint)
    num_steps, num_points = len(betas) - 1, start.shape[1]
    adapt = not isinstance(step_sizes, Tensor)
    if adapt:
        step = torch.full((1, num_points, 1), step_sizes, dtype=start.dtype, device=start.device)
    used = torch.empty(max(num_steps - 1, 0), num_points, dtype=start.dtype, device=start.device)
    log_w = torch.zeros(state.log_q0.shape, dtype=torch.float64, device=start.device)
    accept_sum = torch.zeros(num_points, dtype=torch.float64, device=start.device)
    for t in trange(1, num_steps + 1, desc=progress, disable=progress is None, leave=False):
        beta, previous = float(betas[t]), float(betas[t - 1])
        log_w += (beta - previous) * (state.log_joint - state.log_q0).double()
        if t == num_steps:
            break
        if not adapt:
            step = step_sizes[t - 1][None, :, None]
        used[t - 1] = step[0, :, 0]
        state, accept_prob = hmc_transition(
            state, beta, step, leapfrog_steps, path.log_q0, path.log_joint
        )
        mean_accept = accept_prob.mean(0)
        if adapt:
            step = step * torch.where(mean_accept > target_accept, ADAPT, 2 - ADAPT)[None, :, None]
        accept_sum += mean_accept.double()
    return log_w, accept_sum / max(num_steps - 1, 1), used, state.z


def ais_log_px(
    q: Distribution,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    num_steps: int,
    num_chains: int,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    pilot_chains: int = 4,
    progress: str | None = None,
    reverse: bool = False,
) -> AISEstimate:
    """log p^(x) for a batch of N datapoints by AIS from q(z|x) (batch shape [N]) to
    p(x, z) = p(x|z) p(z), with ``num_chains`` chains each and ``num_steps`` intermediate
    distributions, the step sizes frozen from a pilot pass of ``pilot_chains`` chains;
    ``reverse``: with the reverse pass from the end states that measures the bias (module
    docstring), as many chains again.

    Needs autograd: do not call it under ``torch.inference_mode``. ``progress``: the label of
    the progress bars (the pilot's and the reported chains'), None for none.
    """
    path = AnnealingPath.of(q, prior, log_likelihood)
    noise = reparameterize(q).noise
    betas = sigmoid_schedule(num_steps)
    _, _, schedule, _ = anneal(
        path, noise.sample((pilot_chains,)), betas, step_size, leapfrog_steps, target_accept,
        progress and f"{progress}: step-size pilot",
    )  # fmt: skip
    log_w, accept_rate, _, end = anneal(
        path, noise.sample((num_chains,)), betas, schedule, leapfrog_steps,
        progress=progress and f"{progress}: {num_chains} chains x {num_steps} steps",
    )  # fmt: skip
    estimate = AISEstimate(
        log_mean_weight(log_w), accept_rate, schedule, jackknife_shortfall(log_w),
        ess_fraction(log_w),
    )  # fmt: skip
    if reverse:
        picks = torch.multinomial(torch.softmax(log_w.double(), 0).T, num_chains, True).T
        start = end.gather(0, picks[..., None].expand_as(end))
        log_w_back = reverse_log_weights(path, start, betas, schedule, leapfrog_steps, progress)
        estimate.upper = -log_mean_weight(log_w_back).value
    return estimate


def reverse_log_weights(
    path: AnnealingPath,
    start: Tensor,
    betas: Tensor,
    step_sizes: Tensor,
    leapfrog_steps: int,
    progress: str | None = None,
) -> Tensor:
    """The log-weights [C, N] of chains from ``start`` [C, N, D] (posterior samples, or near
    them) annealed back from p(z|x) to q0 along the forward pass's betas and step sizes,
    reversed: E[w'] = 1/p(x) where the starts are exact (Grosse et al. 2015)."""
    log_w, _, _, _ = anneal(
        path, start, betas.flip(0), step_sizes.flip(0), leapfrog_steps,
        progress=progress and f"{progress}: reverse",
    )  # fmt: skip
    return log_w

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

The initial distribution is the posterior q(z|x) itself. A flow posterior, q = T#q0 with
z = T(z0) and a Gaussian base q0, is annealed in the coordinates z0 of its base: there the path

    g_t(z0) = q0(z0|x)^(1 - beta_t) [p(x, T(z0)) |det dT/dz0|]^beta_t
            = q(z|x)^(1 - beta_t) p(x, z)^beta_t |det dT/dz0|

is the path above from q to p(x, z), carried to z0 by the change of variables, with the same
normalising constants (q0's is 1, the last is p(x)). It needs only the flow's forward pass,
never an inverse, and the HMC moves in z0 are moves in z preconditioned by the flow.

The betas follow the sigmoid schedule (Grosse et al. 2013, used by Wu et al. 2017). Each HMC
transition resamples the momentum, takes L leapfrog steps and accepts by Metropolis-Hastings;
each datapoint's step size is multiplied by 1.02 when its chains' mean acceptance probability
is above the target (0.65) and by 0.98 otherwise, which uses only the past, so each transition
still leaves its f_t invariant. Datapoints and chains are one batch, z of shape [C, N, D]; the
model is only differentiated with respect to z. Weights are accumulated in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm import trange

from vae_lab.elbo import LogLikelihood, log_mean_weight

LogDensity = Callable[[Tensor], Tensor]
#: z0 [..., B, D] -> (z = T(z0), log |det dT/dz0| [..., B])
PushForward = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class AISEstimate:
    """The AIS estimate of log p(x), per datapoint."""

    log_px: Tensor  # logsumexp_c log w_c - log C, [N], float64
    variance: Tensor  # Monte Carlo variance of log_px (delta method): 1/ESS - 1/C, [N]
    accept_rate: Tensor  # mean HMC acceptance probability over steps and chains, [N]


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


def base_coordinates(q: Distribution) -> tuple[Distribution, PushForward]:
    """q as its base q0 and the map z0 -> (z, log |det dz/dz0|) with q = T#q0: a flow's
    Gaussian base and forward pass (``push_forward``), else q itself and the identity."""
    if hasattr(q, "push_forward"):
        return q.base_dist, q.push_forward
    return q, lambda z: (z, z.new_zeros(z.shape[:-1]))


def ais_log_px(
    q: Distribution,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    num_steps: int,
    num_chains: int,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    progress: bool = False,
) -> AISEstimate:
    """log p^(x) for a batch of N datapoints by AIS from q(z|x) (batch shape [N]) to
    p(x, z) = p(x|z) p(z), with ``num_chains`` chains each and ``num_steps`` transitions.

    Needs autograd: do not call it under ``torch.inference_mode``.
    """
    q0, push_forward = base_coordinates(q)

    def log_joint(z0: Tensor) -> Tensor:
        z, log_det = push_forward(z0)
        return log_likelihood(z) + prior.log_prob(z) + log_det

    betas = sigmoid_schedule(num_steps).tolist()
    state = ChainState.at(q0.sample((num_chains,)), q0.log_prob, log_joint)
    num_points = state.z.shape[1]
    step = torch.full((1, num_points, 1), step_size, dtype=state.z.dtype, device=state.z.device)
    log_w = torch.zeros(state.log_q0.shape, dtype=torch.float64, device=state.z.device)
    accept_sum = torch.zeros(num_points, dtype=torch.float64, device=state.z.device)
    for t in trange(1, num_steps + 1, desc="AIS", disable=not progress, leave=False):
        log_w += (betas[t] - betas[t - 1]) * (state.log_joint - state.log_q0).double()
        state, accept_prob = hmc_transition(
            state, betas[t], step, leapfrog_steps, q0.log_prob, log_joint
        )
        mean_accept = accept_prob.mean(0)
        step = step * torch.where(mean_accept > target_accept, 1.02, 0.98)[None, :, None]
        accept_sum += mean_accept.double()
    log_px, variance = log_mean_weight(log_w)
    return AISEstimate(log_px=log_px, variance=variance, accept_rate=accept_sum / num_steps)

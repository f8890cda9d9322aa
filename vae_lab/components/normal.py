"""Diagonal normal distributions, N(mu, diag sigma^2) over the last dimension: the Gaussian
posterior, the N(0, I) prior, the noise of reparameterised samples and the Gaussian
likelihood, and the closed-form KL from the first to the second (Kingma & Welling 2014, app. B):

    KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1) - sum_i log sigma_i,
    dKL/dmu = mu,  dKL/dsigma = sigma - 1/sigma.

Both classes are torch's ``Independent(Normal(loc, scale), 1)``, so everything that handles
that pair (sampling, log_prob, the other KLs, ``vae_lab.estimators.elbo.reparameterize``) handles
them. They are built without argument validation: their parameters are valid by construction, and
the checks run on every training step and every chunk of the IW estimate (there, checking the
support of the [S, B, D] noise would cost a pass over it and a sync).

The KL is one autograd node, registered with ``torch.distributions.kl``: torch's own path
(``Independent`` over ``_kl_normal_normal``) broadcasts the prior's zeros and ones and runs
about ten small kernels each way; on the MNIST training step this node saves about a quarter
of what the distributions layer costs over a hand-written loop (docs/speed.md, "Where the time
goes").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, register_kl


class DiagonalNormal(Independent):
    """N(loc, diag scale^2), scale > 0, the event the last dimension."""

    def __init__(self, loc: Tensor, scale: Tensor | float) -> None:
        super().__init__(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class StandardNormal(DiagonalNormal):
    """N(0, I) of the shape of ``zeros``."""

    def __init__(self, zeros: Tensor) -> None:
        super().__init__(zeros, torch.ones_like(zeros))


class KLToStandardNormal(torch.autograd.Function):
    """KL(N(loc, diag scale^2) || N(0, I)) over the last dimension, loc and scale of one
    shape; its gradient by the formulas of the module docstring."""

    @staticmethod
    def forward(ctx: Any, loc: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(loc, scale)
        quadratic = (loc.square() + scale.square()).sub_(1.0).mul_(0.5)
        return quadratic.sub_(scale.log()).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Out of place and differentiable: semi-amortized inference differentiates through
        gradient steps on the KL (``vae_lab.model.objectives.savae``)."""
        loc, scale = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_loc = grad * loc if ctx.needs_input_grad[0] else None
        grad_scale = grad * (scale - scale.reciprocal()) if ctx.needs_input_grad[1] else None
        return grad_loc, grad_scale


@register_kl(DiagonalNormal, StandardNormal)
def kl_to_standard_normal(q: DiagonalNormal, p: StandardNormal) -> Tensor:
    return KLToStandardNormal.apply(q.base_dist.loc, q.base_dist.scale)

"""Planar flows (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows").

Each layer is f(z) = z + u_hat h(w^T z + b), h = tanh, with u, w in R^D and b in R per datapoint
(from the encoder). Its Jacobian is I + h'(.) u_hat w^T, so by the matrix determinant lemma

    log |det df/dz| = log |1 + h'(w^T z + b) w^T u_hat|.

f is invertible iff w^T u_hat >= -1 (Appendix A), which the reparameterisation

    u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,   so that   w^T u_hat = m(w^T u) > -1,

guarantees for any raw u, w. Rezende & Mohamed take m(a) = -1 + softplus(a). We use

    m(a) = -1 + delta + softplus(a + c),  c = log(e^(1 - delta) - 1),  delta = ``MIN_SLOPE``,

which differs in two small ways: m(0) = 0, so u = 0 gives the identity layer (the layer starts
near it) and w = 0 a pure shift instead of 0/0; and m > -1 + delta, so that w^T u_hat stays
above -1 in floating point too (with delta = 0, m rounds to -1 for w^T u below about -37),
every layer is strictly monotone along w and log |det| >= log delta.

The inverse has no closed form: s = w^T z + b solves s + m tanh(s) = w^T y + b (strictly
increasing in s), found numerically (``residual.solve_tanh_residual``), then
z = y - u_hat tanh(s).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.components.posteriors.flow import (
    FlowLayer,
    FlowPosterior,
    FlowTransform,
    near_identity_,
)
from vae_lab.components.posteriors.residual import MIN_SLOPE, solve_tanh_residual
from vae_lab.config.validation import POSITIVE_INT, require

_M_SHIFT = math.log(math.exp(1.0 - MIN_SLOPE) - 1.0)  # softplus(_M_SHIFT) = 1 - delta: m(0) = 0


class PlanarTransform(FlowTransform):
    """f(z) = z + u_hat tanh(w^T z + b) with u, w [B, D] and b [B]."""

    def __init__(self, u: Tensor, w: Tensor, b: Tensor) -> None:
        super().__init__()
        wu = (w * u).sum(-1)
        self.w_u_hat = F.softplus(wu + _M_SHIFT) - (1.0 - MIN_SLOPE)  # = m(w^T u) = w^T u_hat
        w_norm_sq = (w * w).sum(-1).clamp_min(torch.finfo(w.dtype).tiny)
        self.u_hat = u + ((self.w_u_hat - wu) / w_norm_sq).unsqueeze(-1) * w
        self.w = w
        self.b = b

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.tanh((z * self.w).sum(-1) + self.b)
        log_det = torch.log1p((1.0 - t**2) * self.w_u_hat)
        return z + self.u_hat * t.unsqueeze(-1), log_det

    def _inverse(self, y: Tensor) -> Tensor:
        target = (y * self.w).sum(-1) + self.b
        s = solve_tanh_residual(target, self.w_u_hat)
        return y - self.u_hat * torch.tanh(s).unsqueeze(-1)


class PlanarLayer(FlowLayer):
    """Raw parameters per datapoint: [u (D) | w (D) | b (1)]; no shared weights."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_params = 2 * latent_dim + 1

    def forward(self, params: Tensor) -> PlanarTransform:
        u, w, b = params.split([self.latent_dim, self.latent_dim, 1], dim=-1)
        return PlanarTransform(u, w, b.squeeze(-1))

    def init_head(self, weight: Tensor, bias: Tensor) -> None:
        near_identity_(weight[: self.latent_dim], bias[: self.latent_dim])  # u ~ 0


class Planar(FlowPosterior):
    """q0(z|x) pushed through ``num_flows`` amortised planar layers."""

    exact_log_prob = False  # log_prob inverts the layers numerically

    def __init__(self, feature_dim: int, latent_dim: int, num_flows: int) -> None:
        require("num_flows", num_flows, POSITIVE_INT)
        super().__init__(
            feature_dim, latent_dim, [PlanarLayer(latent_dim) for _ in range(num_flows)]
        )

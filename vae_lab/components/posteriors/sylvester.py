"""Householder Sylvester flows (van den Berg, Hasenclever, Tomczak & Welling 2018, "Sylvester
Normalizing Flows for Variational Inference"), amortised.

Each layer is f(z) = z + Q R h(R~ Q^T z + b), h = tanh, with per-datapoint Q orthogonal and
R, R~ upper triangular. By Sylvester's determinant identity the Jacobian determinant is that
of a triangular matrix:

    log |det df/dz| = sum_i log |1 + h'((R~ Q^T z + b)_i) R_ii R~_ii|.

Q is a product of ``num_householder`` Householder reflections I - 2 v v^T / ||v||^2 (the paper's
H-SNF), exactly orthogonal for any raw v. The diagonals are R~_ii = tanh(.) as in the paper
and R_ii = (1 - delta) tanh(.), delta = ``MIN_SLOPE``, so R_ii R~_ii > -(1 - delta): above the
paper's bound -1 / sup h' = -1 by a margin that keeps f strictly invertible in floating point
too (tanh rounds to +-1 from |x| ~ 9 in float32) and each log |det| term >= log delta.
The entries off the diagonals are bounded too, R_ij = tanh(.) / sqrt(D) and likewise R~_ij, so
that |(R h)_i| < 1 + sqrt(D): the layer acts on the standardised noise
(``vae_lab.components.posteriors.flow``), which it then moves by less than 1 + sqrt(D) of the
base's standard deviations in each coordinate of Q^T z. Unbounded, the off-diagonal entries
shear the noise without changing the log-determinant the entropy sees; amortised through a
linear head at a learning rate the diagonal family trains at, they drifted to tens, the
layers' tanh saturated (constant shifts), and the base scale collapsed to its floor to undo
the stretch, leaving a far worse model. Every entry of Q, R, R~ and b comes from the encoder
(theta); the layer has no shared weights. R starts near 0, so the layer starts near the
identity.

The inverse has no closed form: with v = Q^T z, Q^T y = v + R h(R~ v + b) is upper triangular
in v, solved by back substitution from the last coordinate, each step a scalar
v_i + R_ii h(R~_ii v_i + e_i) = r_i (strictly increasing) solved numerically
(``residual.solve_tanh_residual``); then z = Q v.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_lab.components.posteriors.flow import (
    FlowLayer,
    FlowPosterior,
    FlowTransform,
    near_identity_,
)
from vae_lab.components.posteriors.residual import MIN_SLOPE, solve_tanh_residual
from vae_lab.components.posteriors.triangular import Triangular
from vae_lab.config.validation import POSITIVE_INT, require


def _matvec(matrix: Tensor, x: Tensor) -> Tensor:
    """matrix [B, D, D] times x [..., B, D], per datapoint."""
    return torch.einsum("bij,...bj->...bi", matrix, x)


def householder_product(v: Tensor) -> Tensor:
    """Q = H_1 ... H_K from vectors v [..., K, D], H_k = I - 2 v_k v_k^T / ||v_k||^2 (v = 0: I)."""
    dim = v.shape[-1]
    v = v / (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny).sqrt()
    q = torch.eye(dim, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], dim, dim)
    for k in range(v.shape[-2]):
        vk = v[..., k, :]
        q = q - 2.0 * (q @ vk.unsqueeze(-1)) * vk.unsqueeze(-2)
    return q


class SylvesterTransform(FlowTransform):
    """f(z) = z + Q R tanh(R~ Q^T z + b); Q, R, R~ [B, D, D], b [B, D]."""

    def __init__(self, q: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor) -> None:
        super().__init__()
        self.q, self.r, self.r_tilde, self.b = q, r, r_tilde, b
        self.qr = q @ r
        self.r_tilde_qt = r_tilde @ q.mT
        self.diag = r.diagonal(dim1=-2, dim2=-1) * r_tilde.diagonal(dim1=-2, dim2=-1)

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.tanh(_matvec(self.r_tilde_qt, z) + self.b)
        log_det = torch.log1p((1.0 - t**2) * self.diag).sum(-1)
        return z + _matvec(self.qr, t), log_det

    def _inverse(self, y: Tensor) -> Tensor:
        u = _matvec(self.q.mT, y)
        v = h = u[..., :0]  # the solved coordinates i+1..D-1 of v and of h(R~ v + b)
        for i in reversed(range(u.shape[-1])):
            r_ii, rt_ii = self.r[:, i, i], self.r_tilde[:, i, i]
            offset = self.b[:, i] + (self.r_tilde[:, i, i + 1 :] * v).sum(-1)
            target = u[..., i] - (self.r[:, i, i + 1 :] * h).sum(-1)
            v_i = solve_tanh_residual(target, r_ii, rt_ii, offset)
            v = torch.cat([v_i.unsqueeze(-1), v], dim=-1)
            h = torch.cat([torch.tanh(rt_ii * v_i + offset).unsqueeze(-1), h], dim=-1)
        return _matvec(self.q, v)


class SylvesterLayer(FlowLayer):
    """Raw parameters per datapoint: [diag R | upper R | diag R~ | upper R~ | b | v_1..v_K]."""

    def __init__(self, latent_dim: int, num_householder: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_householder = num_householder
        upper = latent_dim * (latent_dim - 1) // 2
        self.sizes = [
            latent_dim,
            upper,
            latent_dim,
            upper,
            latent_dim,
            num_householder * latent_dim,
        ]
        self.num_params = sum(self.sizes)
        self.triangular = Triangular(latent_dim, upper=True)

    def forward(self, params: Tensor) -> SylvesterTransform:
        r_diag, r_upper, rt_diag, rt_upper, b, v = params.split(self.sizes, dim=-1)
        q = householder_product(v.unflatten(-1, (self.num_householder, self.latent_dim)))
        bound = self.latent_dim**-0.5  # off the diagonal (module docstring)
        r_upper, rt_upper = bound * torch.tanh(r_upper), bound * torch.tanh(rt_upper)
        r = self.triangular((1.0 - MIN_SLOPE) * torch.tanh(r_diag), r_upper)
        r_tilde = self.triangular(torch.tanh(rt_diag), rt_upper)
        return SylvesterTransform(q, r, r_tilde, b)

    def init_head(self, weight: Tensor, bias: Tensor) -> None:
        rows = slice(0, self.sizes[0] + self.sizes[1])  # R ~ 0
        near_identity_(weight[rows], bias[rows])


class Sylvester(FlowPosterior):
    """q0(z|x) pushed through ``num_flows`` amortised Householder Sylvester layers."""

    exact_log_prob = False  # log_prob inverts the layers numerically

    def __init__(
        self, feature_dim: int, latent_dim: int, num_flows: int, num_householder: int
    ) -> None:
        require("num_flows", num_flows, POSITIVE_INT)
        require("num_householder", num_householder, POSITIVE_INT)
        layers = [SylvesterLayer(latent_dim, num_householder) for _ in range(num_flows)]
        super().__init__(feature_dim, latent_dim, layers)

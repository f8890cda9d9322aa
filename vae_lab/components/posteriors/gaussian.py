"""Diagonal Gaussian posterior, q(z|x) = N(mu(x), diag sigma(x)^2) (Kingma & Welling 2014).

Sampling is reparameterised, z = mu + sigma * eps with eps ~ N(0, I); the KL to N(0, I) is
analytic: KL = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.components.normal import DiagonalNormal
from vae_lab.components.posteriors.base import PosteriorFamily

MIN_SCALE = 1e-5


def diagonal_gaussian(params: Tensor) -> DiagonalNormal:
    """N(mu, diag sigma^2) from raw parameters [mu | s] with sigma = softplus(s) + 1e-5."""
    loc, raw_scale = params.chunk(2, dim=-1)
    return DiagonalNormal(loc, F.softplus(raw_scale) + MIN_SCALE)


def raw_scale(scale: Tensor) -> Tensor:
    """s with softplus(s) + MIN_SCALE = scale (scales below MIN_SCALE: as at it)."""
    y = (scale - MIN_SCALE).clamp_min(torch.finfo(scale.dtype).tiny)
    return y + torch.log(-torch.expm1(-y))


class DiagonalGaussian(PosteriorFamily):
    gaussian = True

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__(feature_dim, latent_dim, 2 * latent_dim)

    def distribution(self, params: Tensor) -> Distribution:
        return diagonal_gaussian(params)

    def gaussian_params(self, loc: Tensor, scale_tril: Tensor) -> Tensor:
        return torch.cat([loc, raw_scale(scale_tril.diagonal(dim1=-2, dim2=-1))], dim=-1)

"""Full-covariance Gaussian posterior, q(z|x) = N(mu(x), L(x) L(x)^T).

L is lower triangular with a positive diagonal (softplus), so L L^T is a valid covariance
and the Cholesky factor is unique. Samples are z = mu + L eps; the KL to N(0, I) is analytic:
KL = 1/2 (tr(L L^T) + mu^T mu - D - 2 sum_i log L_ii).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal

from vae_lab.posteriors.base import PosteriorFamily
from vae_lab.posteriors.gaussian import MIN_SCALE


class FullCovGaussian(PosteriorFamily):
    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        num_offdiag = latent_dim * (latent_dim - 1) // 2
        super().__init__(feature_dim, latent_dim, 2 * latent_dim + num_offdiag)
        self.register_buffer("tril_index", torch.tril_indices(latent_dim, latent_dim, -1))

    def distribution(self, params: Tensor) -> Distribution:
        d = self.latent_dim
        loc, raw_diag, offdiag = params.split([d, d, params.shape[-1] - 2 * d], dim=-1)
        scale_tril = torch.diag_embed(F.softplus(raw_diag) + MIN_SCALE)
        scale_tril[..., self.tril_index[0], self.tril_index[1]] = offdiag
        return MultivariateNormal(loc, scale_tril=scale_tril)

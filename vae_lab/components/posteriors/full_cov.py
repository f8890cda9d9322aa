"""Full-covariance Gaussian posterior, q(z|x) = N(mu(x), L(x) L(x)^T).

L is lower triangular with a positive diagonal (softplus), so L L^T is a valid covariance
and the Cholesky factor is unique. Samples are z = mu + L eps, and the ELBO core takes their
log-density from eps, log N(eps; 0, I) - sum_i log L_ii
(``vae_lab.estimators.elbo.reparameterize``): ``log_prob(z)`` solves L^-1 (z - mu) on a rounded z
and is off by cond(L) x rounding, which training can push past 1e12. The KL to a diagonal Gaussian
prior N(m, diag s^2) (such as N(0, I)) is analytic,

    KL = 1/2 (sum_i ((L L^T)_ii + (mu_i - m_i)^2) / s_i^2 - D + 2 sum_i log s_i - 2 sum_i log L_ii),

and registered with ``torch.distributions.kl_divergence`` for (MultivariateNormal,
Independent(Normal)), so the ELBO core uses it instead of a Monte Carlo estimate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)

from vae_lab.components.posteriors.base import PosteriorFamily
from vae_lab.components.posteriors.gaussian import MIN_SCALE, raw_scale
from vae_lab.components.posteriors.triangular import Triangular


class FullCovGaussian(PosteriorFamily):
    gaussian = True

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        num_offdiag = latent_dim * (latent_dim - 1) // 2
        super().__init__(feature_dim, latent_dim, 2 * latent_dim + num_offdiag)
        self.lower = Triangular(latent_dim, upper=False)

    def distribution(self, params: Tensor) -> Distribution:
        d = self.latent_dim
        loc, raw_diag, offdiag = params.split([d, d, params.shape[-1] - 2 * d], dim=-1)
        scale_tril = self.lower(F.softplus(raw_diag) + MIN_SCALE, offdiag)
        return MultivariateNormal(loc, scale_tril=scale_tril)

    def gaussian_params(self, loc: Tensor, scale_tril: Tensor) -> Tensor:
        rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim, -1)
        diag = raw_scale(scale_tril.diagonal(dim1=-2, dim2=-1))
        return torch.cat([loc, diag, scale_tril[..., rows, cols]], dim=-1)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(p: MultivariateNormal, q: Independent) -> Tensor:
    """KL(p || q) for a diagonal Gaussian q: torch's Gaussian-Gaussian KL with q as an MVN."""
    if not isinstance(q.base_dist, Normal) or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    diagonal = MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
    return kl_divergence(p, diagonal)

"""Full-covariance Gaussian posterior, q(z|x) = N(mu(x), L(x) L(x)^T).

L is parameterised by the standard deviations s_i = softplus(r_i) + MIN_SCALE of the
coordinates of z and a unit lower-triangular V (ones on the diagonal, free entries M below):
row i of L is s_i v_i / ||v_i||, so that

    Var(z_i) = (L L^T)_ii = s_i^2,   the correlations those of the unit rows v_i / ||v_i||

(the Cholesky factor of the correlation matrix, as in the LKJ construction; Lewandowski,
Kurowicka & Joe 2009). Every covariance has exactly one such (s, M), and M = 0 is the diagonal
family. The head's rows for M start near zero (``flow.near_identity_``), so the family starts
as the diagonal one does. Parameterised by L's entries directly, the off-diagonal ones add to
the variances in absolute terms: the noise of a training step (Adam's jitter of the amortised
entries) then puts a floor under q's spread that a narrow posterior cannot train past, and an
outlying x, through the linear head, a variance that spikes the loss; on pPCA at a learning
rate the diagonal family trains at, both left a far worse model. With s set apart, an entry of
M can change only how z's coordinates correlate, never how far they spread. M is also
``CORRELATION_RATE`` times its entries of theta: Adam moves every raw parameter by about its
learning rate a step whatever the gradient's size, and the correlations, whose gradient is
weak against its Monte Carlo noise, tolerate a tenth of the step the mean and the scales take
(the jitter the optimiser leaves in them, and its cost to the ELBO, shrink with the step).

Samples are z = mu + L eps, and the ELBO core takes their
log-density from eps, log N(eps; 0, I) - sum_i log L_ii
(``vae_lab.estimators.elbo.reparameterize``): ``log_prob(z)`` solves L^-1 (z - mu) on a rounded z
and is off by cond(L) x rounding, which training can push past 1e12. The KL to a diagonal Gaussian
prior N(m, diag t^2) (such as N(0, I)) is analytic,

    KL = 1/2 (sum_i ((L L^T)_ii + (mu_i - m_i)^2) / t_i^2 - D + 2 sum_i log t_i - 2 sum_i log L_ii),

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
from vae_lab.components.posteriors.flow import near_identity_
from vae_lab.components.posteriors.gaussian import MIN_SCALE, raw_scale
from vae_lab.components.posteriors.triangular import Triangular

#: M = CORRELATION_RATE x its entries of theta (module docstring)
CORRELATION_RATE = 0.1


class FullCovGaussian(PosteriorFamily):
    gaussian = True
    # 1: L's entries themselves, not scales and a correlation factor; 2: M not scaled by
    # CORRELATION_RATE
    parameterization = 3

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        num_offdiag = latent_dim * (latent_dim - 1) // 2
        super().__init__(feature_dim, latent_dim, 2 * latent_dim + num_offdiag)
        self.lower = Triangular(latent_dim, upper=False)
        near_identity_(
            self.head.weight.data[2 * latent_dim :], self.head.bias.data[2 * latent_dim :]
        )

    def distribution(self, params: Tensor) -> Distribution:
        d = self.latent_dim
        loc, raw_diag, offdiag = params.split([d, d, params.shape[-1] - 2 * d], dim=-1)
        scale = F.softplus(raw_diag) + MIN_SCALE
        unit = self.lower(torch.ones_like(scale), CORRELATION_RATE * offdiag)  # (M_i, 1, 0...)
        scale_tril = unit * (scale / torch.linalg.vector_norm(unit, dim=-1)).unsqueeze(-1)
        return MultivariateNormal(loc, scale_tril=scale_tril)

    def gaussian_params(self, loc: Tensor, scale_tril: Tensor) -> Tensor:
        rows, cols = torch.tril_indices(self.latent_dim, self.latent_dim, -1)
        scale = torch.linalg.vector_norm(scale_tril, dim=-1)
        offdiag = scale_tril[..., rows, cols] / scale_tril.diagonal(dim1=-2, dim2=-1)[..., rows]
        return torch.cat([loc, raw_scale(scale), offdiag / CORRELATION_RATE], dim=-1)


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal(p: MultivariateNormal, q: Independent) -> Tensor:
    """KL(p || q) for a diagonal Gaussian q: torch's Gaussian-Gaussian KL with q as an MVN."""
    if not isinstance(q.base_dist, Normal) or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    diagonal = MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
    return kl_divergence(p, diagonal)

"""The interface every posterior family implements.

A family is amortised in two steps: a linear head maps the encoder's features h(x) to a flat
vector of raw parameters theta(x), and ``distribution(theta)`` builds q(z|x) from it. Keeping
theta explicit lets the inference-gap analysis replace the encoder's theta(x) by free
per-datapoint parameters (q*, Cremer et al. 2018) with the same family code. Every family
starts theta with [mu | r], the mean and the softplus-inverse diagonal scale of its Gaussian
(a flow's base), which lets q* of one family start from the moments of another's q. The head starts
from the encoder's Glorot initialisation (``vae_lab.components.networks``), so q's means spread
over about the prior's unit scale from the first step.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution

from vae_lab.components.networks import glorot_linear


class PosteriorFamily(nn.Module):
    """Maps encoder features [B, F] to raw parameters [B, num_params], then to q(z|x)."""

    num_params: int
    #: whether every member is a Gaussian, N(mu, L L^T), with ``gaussian_params``
    gaussian: bool = False
    #: whether ``log_prob(params, z)`` is exact at any z (False where the layers have no
    #: closed-form inverse): the STL and DReG gradients need it
    exact_log_prob: bool = True
    #: the version of what the family's weights mean, raised by a change after which a
    #: checkpoint's weights would give another q (checkpoints record it: ``parameterizations``)
    parameterization: int = 1

    def __init__(self, feature_dim: int, latent_dim: int, num_params: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_params = num_params
        self.head = glorot_linear(feature_dim, num_params, gain=1.0)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(features)

    def distribution(self, params: Tensor) -> Distribution:
        """q(z|x) with batch shape [B] and event shape [latent_dim]."""
        raise NotImplementedError

    def base_distribution(self, params: Tensor) -> Distribution:
        """The Gaussian part of q (the flow's base q0(z|x)); q itself for Gaussian families."""
        return self.distribution(params)

    def gaussian_params(self, loc: Tensor, scale_tril: Tensor) -> Tensor:
        """theta [B, num_params] of the member N(loc, scale_tril scale_tril^T), for the
        Gaussian families (q*'s Newton updates, ``vae_lab.estimators.newton``); a diagonal
        family keeps the diagonal of ``scale_tril``. Other families have no such member."""
        raise NotImplementedError(f"{type(self).__name__} is not a Gaussian family")

    def log_prob(self, params: Tensor, z: Tensor) -> Tensor:
        """log q(z|x) of z [..., B, D] under ``distribution(params)``, shape [..., B]."""
        return self.distribution(params).log_prob(z)

"""Probabilistic PCA (Tipping & Bishop 1999): a linear-Gaussian latent-variable model whose
log p(x) and posterior are known exactly, the ground truth of the inference-gap analysis.

    p(z) = N(0, I_D),   p(x|z) = N(Wz + b, sigma^2 I_X)
    p(x) = N(x; b, W W^T + sigma^2 I)
    p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1),   M = W^T W + sigma^2 I

The posterior's precision is Lambda = M / sigma^2; the best diagonal Gaussian q (in
KL(q || p(z|x))) has variances 1 / Lambda_ii, and that KL is 1/2 (sum_i log Lambda_ii -
log det Lambda) (Cremer et al. 2018 measure its analogue as the approximation gap).

A VAE with an affine decoder (``model=linear``), a Gaussian likelihood with one scalar sigma
and the N(0, I) prior *is* such a model, so its exact log p(x) is known for the decoder as
trained (``ppca_of``). The ``LinearGaussian`` datamodule draws its data from a seeded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vae_lab.components.likelihoods import GaussianLikelihood
from vae_lab.components.priors import StandardNormal


class GenerativeModel(Protocol):
    """p(z) p(x|z): a decoder, the likelihood it parameterises, and the prior."""

    decoder: nn.Module
    likelihood: nn.Module
    prior: nn.Module


@dataclass
class PPCA:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I), held in float64."""

    weight: Tensor  # W, [X, D]
    bias: Tensor  # b, [X]
    sigma: Tensor  # scalar

    def __post_init__(self) -> None:
        self.weight, self.bias, self.sigma = (
            t.detach().double() for t in (self.weight, self.bias, self.sigma)
        )

    def _m(self) -> Tensor:
        """M = W^T W + sigma^2 I, [D, D]."""
        d = self.weight.shape[1]
        return self.weight.T @ self.weight + self.sigma**2 * torch.eye(d, dtype=torch.float64)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        x_dim = self.weight.shape[0]
        cov = self.weight @ self.weight.T + self.sigma**2 * torch.eye(x_dim, dtype=torch.float64)
        return MultivariateNormal(self.bias, covariance_matrix=cov)

    def posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1), batch shape [B] for x [B, X]."""
        m = self._m()
        mean = torch.linalg.solve(m, self.weight.T @ (x.double() - self.bias).T).T
        return MultivariateNormal(mean, covariance_matrix=self.sigma**2 * torch.linalg.inv(m))

    def posterior_precision(self) -> Tensor:
        """Lambda = (W^T W + sigma^2 I) / sigma^2, the same for every x."""
        return self._m() / self.sigma**2

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n datapoints x = Wz + b + sigma eps, [n, X]."""
        x_dim, d = self.weight.shape
        z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        eps = torch.randn(n, x_dim, generator=generator, dtype=torch.float64)
        return z @ self.weight.T + self.bias + self.sigma * eps


def ppca_of(model: GenerativeModel) -> PPCA | None:
    """The VAE as a PPCA model when it is one (a single affine decoder layer, a Gaussian
    likelihood, the N(0, I) prior), else None."""
    layers = [m for m in model.decoder.modules() if not isinstance(m, nn.Sequential)]
    if not (
        len(layers) == 1
        and isinstance(layers[0], nn.Linear)
        and isinstance(model.likelihood, GaussianLikelihood)
        and isinstance(model.prior, StandardNormal)
    ):
        return None
    return PPCA(layers[0].weight, layers[0].bias, model.likelihood.scale)

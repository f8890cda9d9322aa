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
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vae_lab.data.datamodules import InMemoryDataModule, Splits
from vae_lab.likelihoods import GaussianLikelihood
from vae_lab.priors import StandardNormal
from vae_lab.validation import POSITIVE_INT, POSITIVE_NUMBER, ConfigError, require, require_all

if TYPE_CHECKING:
    from vae_lab.module import VAE


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


def ppca_of(model: VAE) -> PPCA | None:
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


class LinearGaussian(InMemoryDataModule):
    """Data drawn from a seeded PPCA model: W and b with standard-normal entries, sigma =
    ``noise_std``; ``num_train`` / ``num_val`` / ``num_test`` points, all from ``data_seed``.

    The data are real-valued: they need ``likelihood=gaussian``.
    """

    def __init__(
        self,
        data_dim: int = 8,
        latent_dim: int = 4,
        noise_std: float = 1.0,
        num_train: int = 5000,
        num_val: int = 1000,
        num_test: int = 1000,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_all(POSITIVE_INT, data_dim=data_dim, latent_dim=latent_dim, num_train=num_train,
                    num_val=num_val, num_test=num_test)  # fmt: skip
        require("noise_std", noise_std, POSITIVE_NUMBER)
        self.image_shape = (data_dim,)
        self.sizes = (num_train, num_val, num_test)
        self.data_seed = data_seed
        params = torch.Generator().manual_seed(2 * data_seed)  # samples use 2 * data_seed + 1
        self.ppca = PPCA(
            weight=torch.randn(data_dim, latent_dim, generator=params),
            bias=torch.randn(data_dim, generator=params),
            sigma=torch.tensor(noise_std),
        )

    def load_splits(self) -> Splits:
        if self.binarize:  # checked here, not in __init__, so that it reaches the user as one line
            raise ConfigError(
                "data=linear_gaussian holds real-valued data: use likelihood=gaussian"
            )
        generator = torch.Generator().manual_seed(2 * self.data_seed + 1)
        data = self.ppca.sample(sum(self.sizes), generator).float()
        return tuple(data.split(self.sizes))

    def exact_log_px(self, x: Tensor) -> Tensor:
        """log p(x) under the generating model, [B], float64."""
        return self.ppca.marginal().log_prob(x.double())

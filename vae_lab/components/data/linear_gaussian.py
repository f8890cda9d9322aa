"""Data drawn from a seeded probabilistic PCA model (``vae_lab.components.ppca``), whose
exact log p(x) is known: the ground truth of the inference-gap analysis."""

from __future__ import annotations

import torch
from torch import Tensor

from vae_lab.components.data.datamodules import InMemoryDataModule, Splits
from vae_lab.components.ppca import PPCA
from vae_lab.config.validation import (
    POSITIVE_INT,
    POSITIVE_NUMBER,
    ConfigError,
    require,
    require_all,
)


class LinearGaussian(InMemoryDataModule):
    """Data drawn from a seeded PPCA model: W and b with standard-normal entries, sigma =
    ``noise_std``; ``num_train`` / ``num_val`` / ``num_test`` points, all from ``data_seed``.

    The data are real-valued: they need ``likelihood=gaussian``.
    """

    name = "linear_gaussian"

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

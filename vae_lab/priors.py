"""Priors p(z) over the latent space, as torch distributions with event shape [latent_dim].

A prior module is called with the encoder's map from inputs to the posterior's Gaussian base
(needed by priors built from the encoder, such as the VampPrior) and returns p(z).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

#: inputs u of shape [K, X] -> the posterior's Gaussian base q0(z|u), batch shape [K].
BaseEncoder = Callable[[Tensor], Distribution]


class StandardNormal(nn.Module):
    """p(z) = N(0, I): the classic VAE prior (Kingma & Welling 2014)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, encode_base: BaseEncoder | None = None) -> Distribution:
        return Independent(Normal(self.loc, torch.ones_like(self.loc)), 1)

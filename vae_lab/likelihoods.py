"""Observation models p(x|z): the decoder's output parameterises a torch distribution.

Both return an ``Independent`` distribution whose event is one flattened datapoint, so
``log_prob(x)`` sums over pixels and broadcasts over leading sample dimensions of z.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)), l = decoder(z): logits. For binary data."""

    binary_data = True

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = data_dim

    def forward(self, decoded: Tensor) -> Distribution:
        return Independent(Bernoulli(logits=decoded), 1)

    def mean(self, decoded: Tensor) -> Tensor:
        """E[x|z], the image shown as a reconstruction or a sample."""
        return torch.sigmoid(decoded)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; mu(z), sigma^2 I), mu = decoder(z), for grey-level data.

    sigma is one scalar, fixed at ``scale`` or learned from it (``learn_scale``), kept above
    ``min_scale`` so that the density stays bounded on near-constant pixels.
    """

    binary_data = False

    def __init__(
        self, data_dim: int, scale: float = 1.0, learn_scale: bool = True, min_scale: float = 1e-3
    ) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.min_scale = min_scale
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp_min(self.min_scale)

    def forward(self, decoded: Tensor) -> Distribution:
        return Independent(Normal(decoded, self.scale), 1)

    def mean(self, decoded: Tensor) -> Tensor:
        return decoded

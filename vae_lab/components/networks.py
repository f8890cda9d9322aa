"""Encoder and decoder networks: multilayer perceptrons.

The encoder maps a flattened datapoint to features h; the posterior family maps h to the
parameters of q(z|x). The decoder maps z to the likelihood's parameters. With no hidden layers
the encoder is the identity and the decoder is affine, z -> Wz + b, which is the
probabilistic-PCA model whose log p(x) is known exactly.

Weights start from Glorot & Bengio's (2010) normal initialisation, std = gain * sqrt(2 /
(fan_in + fan_out)), with the activation's gain (5/3 for tanh) on hidden layers, and biases at
zero; the posterior's linear head starts the same way (gain 1). PyTorch's default,
U(+-1/sqrt(fan_in)), is about 3x smaller for tanh layers: q's means then barely depend on x
(their variance over MNIST images is ~0.003 per latent, against ~0.3 here), training starts on the
plateau where the decoder outputs the mean image, and a VampPrior, whose components are the
encoder's own outputs, holds it there (every q(z|x) equals the prior, KL = 0, no active units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

#: name -> (module, Glorot gain of the linear layer feeding it)
ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    "tanh": (nn.Tanh, 5 / 3),
    "relu": (nn.ReLU, math.sqrt(2)),
    "elu": (nn.ELU, math.sqrt(2)),
    "softplus": (nn.Softplus, 1.0),
}


def glorot_linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A linear layer with Glorot-normal weights of the given gain and zero biases."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_normal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: list[int], out_dim: int | None, activation: str = "tanh") -> nn.Module:
    """Linear-activation blocks through ``hidden``, then a linear output layer if ``out_dim``."""
    module, gain = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [glorot_linear(in_dim, width, gain), module()]
        in_dim = width
    if out_dim is not None:
        layers.append(glorot_linear(in_dim, out_dim, 1.0))
    return nn.Sequential(*layers)


@dataclass
class Networks:
    encoder: nn.Module
    decoder: nn.Module
    feature_dim: int  # size of the encoder's output h


def mlp_networks(
    data_dim: int,
    latent_dim: int,
    hidden: list[int],
    activation: str = "tanh",
) -> Networks:
    """Encoder data_dim -> hidden; decoder latent_dim -> reversed(hidden) -> data_dim."""
    hidden = list(hidden)
    return Networks(
        encoder=mlp(data_dim, hidden, None, activation),
        decoder=mlp(latent_dim, hidden[::-1], data_dim, activation),
        feature_dim=hidden[-1] if hidden else data_dim,
    )

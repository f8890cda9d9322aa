"""Encoder and decoder networks: multilayer perceptrons.

The encoder maps a flattened datapoint to features h; the posterior family maps h to the
parameters of q(z|x). The decoder maps z to the likelihood's parameters. With no hidden layers
the encoder is the identity and the decoder is affine, z -> Wz + b, which is the
probabilistic-PCA model whose log p(x) is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}


def mlp(in_dim: int, hidden: list[int], out_dim: int | None, activation: str = "tanh") -> nn.Module:
    """Linear-activation blocks through ``hidden``, then a linear output layer if ``out_dim``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), ACTIVATIONS[activation]()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
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

"""Encoder and decoder networks: multilayer perceptrons, and what every model option builds.

A ``model`` option (``conf/model/``) names a factory called with ``data_shape`` (the shape of
one datapoint: ``(H, W)`` or ``(C, H, W)`` for images, ``(D,)`` for flat data; the data stay
flattened, [N, prod(data_shape)]) and ``latent_dim``, which returns ``Networks``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

#: name -> (module, Glorot gain of the linear layer feeding it)
ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    "tanh": (nn.Tanh, 5 / 3),
    "relu": (nn.ReLU, math.sqrt(2)),
    "elu": (nn.ELU, math.sqrt(2)),
    "softplus": (nn.Softplus, 1.0),
}

Layer = TypeVar("Layer", nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def glorot(layer: Layer, gain: float) -> Layer:
    """``layer`` with Glorot-normal weights of the given gain and zero biases (in place); a
    convolution's fans count its kernel's positions."""
    nn.init.xavier_normal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def glorot_linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A linear layer with Glorot-normal weights of the given gain and zero biases."""
    return glorot(nn.Linear(in_dim, out_dim), gain)


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


#: (feature_dim, latent_dim) -> a posterior family: the ``posterior`` group's option
FamilyFactory = Callable[..., nn.Module]
#: (latent_dim) -> a prior: the ``prior`` group's option
PriorFactory = Callable[..., nn.Module]


@dataclass
class Networks:
    """A model's networks over one latent z of ``latent_dim``: the encoder's features h
    [..., feature_dim] are the posterior family's context, and the prior is over all of z.

    A model with latent layers (``vae_lab.components.hierarchical``) overrides ``posterior``
    and ``prior`` to lay the groups' options over its layers."""

    encoder: nn.Module
    decoder: nn.Module
    feature_dim: int  # size of the encoder's output h
    latent_dim: int

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """The sizes of the latent's layers, which z lists in order: one layer here."""
        return (self.latent_dim,)

    def posterior(self, family: FamilyFactory) -> nn.Module:
        """q(z|x): the family on the encoder's features."""
        return family(feature_dim=self.feature_dim, latent_dim=self.latent_dim)

    def prior(self, prior: PriorFactory) -> nn.Module:
        """p(z): the prior over the whole latent."""
        return prior(latent_dim=self.latent_dim)


def mlp_networks(
    data_shape: Sequence[int],
    latent_dim: int,
    hidden: list[int],
    activation: str = "tanh",
) -> Networks:
    """Encoder data_dim -> hidden; decoder latent_dim -> reversed(hidden) -> data_dim, with
    data_dim = prod(data_shape)."""
    data_dim, hidden = math.prod(data_shape), list(hidden)
    return Networks(
        encoder=mlp(data_dim, hidden, None, activation),
        decoder=mlp(latent_dim, hidden[::-1], data_dim, activation),
        feature_dim=hidden[-1] if hidden else data_dim,
        latent_dim=latent_dim,
    )

"""Amortised normalizing-flow posteriors: a diagonal Gaussian pushed through K invertible layers.

With z0 ~ q0(z|x) = N(mu(x), diag sigma(x)^2) and zk = f_k(z_{k-1}), the change of variables
gives (Rezende & Mohamed 2015)

    log q(zK|x) = log q0(z0|x) - sum_k log |det df_k/dz_{k-1}|.

Every layer f_k takes per-datapoint parameters from the posterior's raw parameter vector
theta(x) (planar u, w, b; Sylvester matrices; for coupling and autoregressive layers a context
vector fed to networks whose weights are shared across datapoints), so ``distribution(theta)``
is a pure function of theta and the family's shared weights. Layers are torch ``Transform``s
that also return their log |det| from the forward pass; sampling with its log-density never
needs an inverse. ``log_prob`` of an arbitrary z inverts the layers, numerically for those
without a closed-form inverse (planar, Sylvester).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Transform, TransformedDistribution, constraints

from vae_lab.components.posteriors.base import PosteriorFamily
from vae_lab.components.posteriors.gaussian import diagonal_gaussian

#: factor applied at initialisation to the outputs that move a layer away from the identity
NEAR_IDENTITY = 1e-2


class FlowTransform(Transform):
    """An invertible map of R^D (event dim 1) whose forward pass also yields log |det J|.

    ``forward_and_log_det(x)`` maps x [..., B, D] to (y [..., B, D], log |det dy/dx| [..., B]),
    its per-datapoint parameters of shape [B, ...] broadcasting over the leading sample dims.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[1]  # a second forward pass; sampling needs none


class FlowDistribution(TransformedDistribution):
    """q(zK|x): a base distribution pushed through ``FlowTransform``s (``transforms``)."""

    def push_forward(self, z0: Tensor) -> tuple[Tensor, Tensor]:
        """zK = f_K o ... o f_1(z0) and sum_k log |det df_k/dz_{k-1}|, for z0 [..., B, D]."""
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for transform in self.transforms:
            z, layer_log_det = transform.forward_and_log_det(z)
            log_det = log_det + layer_log_det
        return z, log_det


class FlowLayer(nn.Module):
    """One amortised layer: its slice of theta, [B, num_params], -> a ``FlowTransform``.

    The module holds the layer's shared weights (if any); the slice holds everything that
    varies with the datapoint.
    """

    num_params: int

    def forward(self, params: Tensor) -> FlowTransform:
        raise NotImplementedError

    def init_head(self, weight: Tensor, bias: Tensor) -> None:
        """Initialise this layer's rows of the posterior's head (in place); default: as is."""


def near_identity_(weight: Tensor, bias: Tensor) -> None:
    """Shrink (in place) a linear map's outputs so that the layer they drive starts near the
    identity while every parameter still gets a gradient."""
    with torch.no_grad():
        weight.mul_(NEAR_IDENTITY)
        bias.mul_(NEAR_IDENTITY)


class FlowPosterior(PosteriorFamily):
    """theta = [mu | s | layer_1 params | ... | layer_K params]; q0 = N(mu, softplus(s)^2)."""

    def __init__(self, feature_dim: int, latent_dim: int, layers: list[FlowLayer]) -> None:
        self.layer_sizes = [layer.num_params for layer in layers]
        super().__init__(feature_dim, latent_dim, 2 * latent_dim + sum(self.layer_sizes))
        self.layers = nn.ModuleList(layers)
        start = 2 * latent_dim
        for layer, size in zip(layers, self.layer_sizes, strict=True):
            rows = slice(start, start + size)
            layer.init_head(self.head.weight.data[rows], self.head.bias.data[rows])
            start += size

    def base_distribution(self, params: Tensor) -> Independent:
        return diagonal_gaussian(params[..., : 2 * self.latent_dim])

    def distribution(self, params: Tensor) -> FlowDistribution:
        layer_params = params[..., 2 * self.latent_dim :].split(self.layer_sizes, dim=-1)
        transforms = [layer(p) for layer, p in zip(self.layers, layer_params, strict=True)]
        return FlowDistribution(self.base_distribution(params), transforms)

"""Amortised normalizing-flow posteriors: a diagonal Gaussian's noise pushed through K
invertible layers, then through the Gaussian's affine map.

With eps ~ N(0, I), u_k = f_k(u_{k-1}) from u_0 = eps, and z = mu(x) + sigma(x) * u_K, the
change of variables gives (Rezende & Mohamed 2015)

    log q(z|x) = log N(eps; 0, I) - sum_k log |det df_k/du_{k-1}| - sum_i log sigma_i.

With the layers the identity, q is the diagonal Gaussian q0(z|x) = N(mu, diag sigma^2). The
layers act on the standardised coordinates u, not on z (the order of Rezende & Mohamed, and
of Kingma et al.'s IAF, z_k = f_k(z_{k-1}) from z_0 ~ q0): so a layer's shift is in units of
the posterior's scale sigma, and its networks see inputs of unit scale whatever mu and sigma
are. Acting on z, a shift is absolute: the optimiser's jitter of its outputs (a step of
Adam at lr 1e-2 moves a layer's shift by about lr |x| sqrt(F) through an encoder head with F
inputs) is then a floor under q's spread that a posterior narrower than it cannot train past,
and coupling networks meet inputs whose scale shrinks as sigma does; on pPCA both left flow
families training worse models than the diagonal Gaussian they contain.

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

from vae_lab.components.normal import StandardNormal
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
    """theta = [mu | s | layer_1 params | ... | layer_K params]; q0 = N(mu, softplus(s)^2),
    sigma = softplus(s) + MIN_SCALE."""

    parameterization = 2  # 1: the layers acted on z, not on the standardised noise

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
        """N(0, I) through the layers, then through q0's affine map (module docstring)."""
        layer_params = params[..., 2 * self.latent_dim :].split(self.layer_sizes, dim=-1)
        transforms = [layer(p) for layer, p in zip(self.layers, layer_params, strict=True)]
        base = self.base_distribution(params).base_dist
        transforms.append(ElementwiseAffine(base.loc, base.scale))
        return FlowDistribution(StandardNormal(torch.zeros_like(base.loc)), transforms)


class ElementwiseAffine(FlowTransform):
    """y = loc + scale * x, loc and scale [B, D], scale > 0."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.loc, self.scale = loc, scale

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = self.scale.log().sum(-1).expand(x.shape[:-1])
        return self.loc + self.scale * x, log_det

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.loc) / self.scale

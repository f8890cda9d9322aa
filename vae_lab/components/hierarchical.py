"""Two stochastic layers (``model=hierarchical``; Burda, Grosse & Salakhutdinov 2016, "Importance
Weighted Autoencoders", section 5): z1 of ``z1_dim`` units below z2 of ``latent_dim``,

    q(z1, z2 | x) = q(z1 | x) q(z2 | z1)      x -> 200-200 -> z1 -> 100-100 -> z2
    p(x, z1, z2)  = p(z2) p(z1 | z2) p(x | z1)   z2 -> 100-100 -> z1 -> 200-200 -> x

where each q is the ``posterior`` group's family (amortised by the encoder's features for z1, by
the features of z1 for z2), p(z2) is the ``prior`` group's prior and p(z1 | z2) a diagonal
Gaussian whose mean and softplus scale an MLP of z2 gives (Burda et al.'s layers).

To the rest of vae_lab the joint latent z = (z1, z2), one vector of z1_dim + latent_dim
entries, is the latent: q(z|x) and p(z) are distributions over it with exact log-densities,

    log q(z|x) = log q(z1|x) + log q(z2|z1),   log p(z) = log p(z2) + log p(z1|z2),

so the ELBO (with a Monte Carlo KL), the IW estimate, AIS, q* and the gap split work over the
joint latent unchanged, and the decoder reads z1 alone. q's raw parameters theta(x) are those
of q(z1|x): q(z2|z1)'s come from z1 through weights shared across datapoints, so q* fits
theta per datapoint with q(z2|z1) the trained one (a q* family of its own, e.g.
``eval.qstar_family=gaussian``, is free over the whole joint latent).

The VampPrior's components over z2 are the base of q(z2|z1) at z1 = the mean of q(z1|u)'s
base for each pseudo-input u (``HierarchicalPosterior.base_distribution``): q(z2|u) itself, an
integral over z1, has no closed form. Any such mixture is a normalised p(z2), so log p(x)
stays exact in its estimates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from vae_lab.components.networks import FamilyFactory, Networks, PriorFactory, mlp, mlp_networks
from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.components.posteriors.gaussian import diagonal_gaussian
from vae_lab.components.priors import BaseEncoder, Prior
from vae_lab.config.validation import POSITIVE_INT, require


def sample_with_log_prob(q: Distribution, sample_shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Reparameterised z ~ q and log q(z); a flow's (a distribution with ``push_forward``)
    from its base sample and log-determinant, which needs no inverse of its layers."""
    if hasattr(q, "push_forward"):
        z0 = q.base_dist.rsample(torch.Size(sample_shape))
        z, log_det = q.push_forward(z0)
        return z, q.base_dist.log_prob(z0) - log_det
    z = q.rsample(torch.Size(sample_shape))
    return z, q.log_prob(z)


class LayeredPosterior(Distribution):
    """q(z1, z2 | x) = q(z1|x) q(z2|z1) over z = (z1, z2): batch shape [B], event [D1 + D2].

    ``upper`` maps z1 [N, D1] to q(z2|z1) with batch shape [N]."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self, lower: Distribution, upper: Callable[[Tensor], Distribution], upper_dim: int
    ) -> None:
        self.lower, self.upper = lower, upper
        self.lower_dim = lower.event_shape[0]
        event = torch.Size([self.lower_dim + upper_dim])
        super().__init__(lower.batch_shape, event, validate_args=False)

    def _upper_at(self, z1: Tensor) -> Distribution:
        return self.upper(z1.reshape(-1, self.lower_dim))

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """z [*sample_shape, B, D] and log q(z|x) [*sample_shape, B]."""
        z1, log_q1 = sample_with_log_prob(self.lower, sample_shape)
        z2, log_q2 = sample_with_log_prob(self._upper_at(z1), ())
        z = torch.cat([z1, z2.reshape(*z1.shape[:-1], -1)], dim=-1)
        return z, log_q1 + log_q2.reshape(log_q1.shape)

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z[..., : self.lower_dim], z[..., self.lower_dim :]
        log_q2 = self._upper_at(z1).log_prob(z2.reshape(-1, z2.shape[-1]))
        return self.lower.log_prob(z1) + log_q2.reshape(z.shape[:-1])


class HierarchicalPosterior(PosteriorFamily):
    """q(z1|x) q(z2|z1) of two families: ``lower`` on the encoder's features, ``upper`` on the
    features ``upward`` computes from z1. theta is ``lower``'s, and the head is its head (the
    base class's own head is not built)."""

    def __init__(self, lower: PosteriorFamily, upward: nn.Module, upper: PosteriorFamily) -> None:
        nn.Module.__init__(self)
        self.lower, self.upward, self.upper = lower, upward, upper
        self.latent_dim = lower.latent_dim + upper.latent_dim
        self.num_params = lower.num_params
        self.exact_log_prob = lower.exact_log_prob and upper.exact_log_prob

    @property
    def head(self) -> nn.Linear:
        return self.lower.head

    def upper_params(self, z1: Tensor) -> Tensor:
        """The raw parameters [N, P2] of q(z2|z1) at z1 [N, D1]."""
        return self.upper(self.upward(z1))

    def distribution(self, params: Tensor) -> Distribution:
        def upper(z1: Tensor) -> Distribution:
            return self.upper.distribution(self.upper_params(z1))

        return LayeredPosterior(self.lower.distribution(params), upper, self.upper.latent_dim)

    def base_distribution(self, params: Tensor) -> Distribution:
        """The Gaussian base of q(z2|z1) at z1 = the mean of q(z1|x)'s base, over z2 alone:
        the components of a VampPrior over z2 (module docstring)."""
        z1 = self.lower.base_distribution(params).mean
        return self.upper.base_distribution(self.upper_params(z1))


class LayeredPrior(Distribution):
    """p(z1, z2) = p(z2) p(z1|z2) over z = (z1, z2): batch shape [], event [D1 + D2]."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(
        self, top: Distribution, conditional: Callable[[Tensor], Distribution], lower_dim: int
    ) -> None:
        self.top, self.conditional, self.lower_dim = top, conditional, lower_dim
        self.has_rsample = top.has_rsample
        event = torch.Size([lower_dim + top.event_shape[0]])
        super().__init__(torch.Size(), event, validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z[..., : self.lower_dim], z[..., self.lower_dim :]
        return self.top.log_prob(z2) + self.conditional(z2).log_prob(z1)

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        z2 = self.top.rsample(torch.Size(sample_shape))
        return torch.cat([self.conditional(z2).rsample(), z2], dim=-1)

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            z2 = self.top.sample(torch.Size(sample_shape))
            return torch.cat([self.conditional(z2).sample(), z2], dim=-1)


class HierarchicalPrior(Prior):
    """p(z2) p(z1|z2): ``top`` is the prior group's p(z2); ``downward`` maps z2 to the mean
    and softplus-inverse scale [mu | s] of the diagonal Gaussian p(z1|z2)."""

    def __init__(self, top: Prior, downward: nn.Module, lower_dim: int) -> None:
        super().__init__(lower_dim + top.latent_dim, top.data_dim)
        self.top, self.downward, self.lower_dim = top, downward, lower_dim

    def conditional(self, z2: Tensor) -> Distribution:
        """p(z1|z2), batch shape z2's leading dimensions."""
        return diagonal_gaussian(self.downward(z2))

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        return LayeredPrior(self.top(encode_base), self.conditional, self.lower_dim)

    def init_from_data(self, train: Tensor) -> None:
        self.top.init_from_data(train)

    def init_from_codes(self, z: Tensor) -> None:
        self.top.init_from_codes(z[..., self.lower_dim :])


class LowerLayerDecoder(nn.Module):
    """p(x|z1): ``net`` reads z1, the first ``lower_dim`` entries of z = (z1, z2)."""

    def __init__(self, lower_dim: int, net: nn.Module) -> None:
        super().__init__()
        self.lower_dim, self.net = lower_dim, net

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[..., : self.lower_dim])


@dataclass
class HierarchicalNetworks(Networks):
    """The networks of x <-> z1 (encoder, decoder) and the layers of z1 <-> z2 that lay the
    posterior and prior groups over both latents (module docstring)."""

    z1_dim: int
    z1_hidden: Sequence[int]
    activation: str

    @property
    def z2_dim(self) -> int:
        return self.latent_dim - self.z1_dim

    @property
    def layer_dims(self) -> tuple[int, ...]:
        return (self.z1_dim, self.z2_dim)

    def posterior(self, family: FamilyFactory) -> nn.Module:
        """q(z1|x) q(z2|z1), each of the family."""
        lower = family(feature_dim=self.feature_dim, latent_dim=self.z1_dim)
        upward = mlp(self.z1_dim, list(self.z1_hidden), None, self.activation)
        upper_features = self.z1_hidden[-1] if self.z1_hidden else self.z1_dim
        upper = family(feature_dim=upper_features, latent_dim=self.z2_dim)
        return HierarchicalPosterior(lower, upward, upper)

    def prior(self, prior: PriorFactory) -> nn.Module:
        """p(z2) of the prior group, p(z1|z2) a Gaussian."""
        hidden = list(self.z1_hidden)[::-1]
        downward = mlp(self.z2_dim, hidden, 2 * self.z1_dim, self.activation)
        return HierarchicalPrior(prior(latent_dim=self.z2_dim), downward, self.z1_dim)


def hierarchical_networks(
    data_shape: Sequence[int],
    latent_dim: int,
    hidden: Sequence[int] = (200, 200),
    z1_dim: int = 100,
    z1_hidden: Sequence[int] = (100, 100),
    activation: str = "tanh",
) -> HierarchicalNetworks:
    """Burda et al.'s two-layer model: x <-> ``hidden`` <-> z1 of ``z1_dim`` <-> ``z1_hidden``
    <-> z2 of ``latent_dim`` (the prior group's latent); the joint latent has
    z1_dim + latent_dim entries."""
    require("z1_dim", z1_dim, POSITIVE_INT)
    lower = mlp_networks(data_shape, z1_dim, hidden, activation)
    return HierarchicalNetworks(
        encoder=lower.encoder,
        decoder=LowerLayerDecoder(z1_dim, lower.decoder),
        feature_dim=lower.feature_dim,
        latent_dim=z1_dim + latent_dim,
        z1_dim=z1_dim,
        z1_hidden=list(z1_hidden),
        activation=activation,
    )

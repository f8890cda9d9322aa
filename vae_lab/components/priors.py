"""Priors p(z) over the latent space, as torch distributions with event shape [latent_dim].

A prior module is called with the encoder's map from inputs to the posterior's Gaussian base
(needed by priors built from the encoder, such as the VampPrior) and returns p(z). Every prior
pairs with every posterior family: the ELBO core takes the KL analytically where torch knows
the (q, p) pair and by Monte Carlo otherwise, and the IW estimate uses ``p.log_prob`` as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    constraints,
)

from vae_lab.components import normal
from vae_lab.components.posteriors.flow import FlowTransform
from vae_lab.components.posteriors.realnvp import CouplingLayer
from vae_lab.config.validation import POSITIVE_INT, ConfigError, one_of, require

#: inputs u of shape [K, X] -> the posterior's Gaussian base q0(z|u), batch shape [K].
BaseEncoder = Callable[[Tensor], Distribution]


class Prior(nn.Module):
    """A prior over z in R^latent_dim for a VAE of data in R^data_dim.

    ``init_from_data`` is called once before training with the training set [N, X] (by the
    ``vae_lab.training.callbacks.PriorDataInit`` callback, before a checkpoint is restored); priors
    that start from data override it, the others ignore it.
    """

    def __init__(self, latent_dim: int, data_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.data_dim = data_dim

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        raise NotImplementedError

    def init_from_data(self, train: Tensor) -> None:
        """Start from the training set [N, X]; nothing to do by default."""

    def init_from_codes(self, z: Tensor) -> None:
        """Start from latent codes [N, D] before being fitted to them
        (``vae_lab.evaluation.refit``); nothing to do by default."""


class StandardNormal(Prior):
    """p(z) = N(0, I): the classic VAE prior (Kingma & Welling 2014)."""

    def __init__(self, latent_dim: int, data_dim: int) -> None:
        super().__init__(latent_dim, data_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        return normal.StandardNormal(self.loc)


def diagonal_mixture_log_prob(z: Tensor, logits: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """log sum_k pi_k N(z; mu_k, diag sigma_k^2) for z [N, D], pi = softmax(logits), by matmuls.

    With precisions P_k = sigma_k^-2 the squared Mahalanobis distance expands to
    sum_d z_d^2 P_kd - 2 z_d mu_kd P_kd + mu_kd^2 P_kd, i.e. z^2 P^T - 2 z (mu P)^T + c_k: two
    [N, D] x [D, K] matmuls instead of an elementwise [N, K, D] tensor and its backward. The
    expansion cancels when P is large, so it runs in float64.
    """
    z, loc, scale = z.double(), loc.double(), scale.double()
    precision = scale.pow(-2)
    mahalanobis = (
        (z**2) @ precision.T - 2 * z @ (loc * precision).T + (loc**2 * precision).sum(-1)
    ).clamp_min(0.0)
    log_norm = -scale.log().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
    log_weights = torch.log_softmax(logits.double(), -1)
    return torch.logsumexp(log_weights + log_norm - 0.5 * mahalanobis, dim=-1)


class LatentMixture(MixtureSameFamily):
    """p(z) = sum_k pi_k p_k(z): torch's ``MixtureSameFamily``, with a log_prob that scales.

    ``MixtureSameFamily.log_prob`` compares every z with every component at once, an
    [N, K, D] tensor; the IW estimate evaluates N = S x B samples (e.g. 500 x 100 per chunk,
    with K = 500 components: 1.6 GB per intermediate). Here the values are flattened to [N, D]
    and taken ``rows`` at a time with rows x K x D <= ``max_elements``, which bounds memory.
    Diagonal Gaussian components (the mixture prior; the VampPrior of the diagonal and flow
    families) go through ``diagonal_mixture_log_prob``'s matrix products, about ten times
    faster; others (full-covariance bases) through torch's log_prob. The mixture itself has
    batch shape [] and event shape [D].
    """

    max_elements = 2**22

    def log_prob(self, value: Tensor) -> Tensor:
        event = self.event_shape
        flat = value.reshape(-1, *event)
        per_row = self.component_distribution.batch_shape[-1] * event.numel()
        rows = max(1, self.max_elements // per_row)
        log_p = torch.cat([self._log_prob_rows(v) for v in flat.split(rows)])
        return log_p.reshape(value.shape[: value.dim() - len(event)]).to(value.dtype)

    def _log_prob_rows(self, z: Tensor) -> Tensor:
        """log p(z) for z of shape [N, D]."""
        components = self.component_distribution
        if isinstance(components, Independent) and isinstance(components.base_dist, Normal):
            normal = components.base_dist
            logits = self.mixture_distribution.logits
            return diagonal_mixture_log_prob(z, logits, normal.loc, normal.scale)
        return super().log_prob(z)


class MixtureOfGaussians(Prior):
    """A learnable mixture of diagonal Gaussians,

        p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2),   pi = softmax(a),

    with the weights' logits a, the means mu_k and the log-scales log sigma_k all learned with
    the VAE (as in the GMM priors of Dilokthanakul et al. 2016 and Tomczak & Welling 2018,
    section 2). The components start at mu_k ~ N(0, I), sigma_k = 1, pi uniform: random means
    break the symmetry between components, which would otherwise receive equal gradients.
    """

    def __init__(self, latent_dim: int, data_dim: int, num_components: int = 50) -> None:
        require("num_components", num_components, POSITIVE_INT)
        super().__init__(latent_dim, data_dim)
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, latent_dim))

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        components = Independent(Normal(self.loc, self.log_scale.exp()), 1)
        return LatentMixture(Categorical(logits=self.logits), components)

    def init_from_codes(self, z: Tensor) -> None:
        """Means at distinct random codes, scales at the codes' spread (as k-means++ seeds
        EM): components placed where the codes are, rather than at N(0, I) draws."""
        chosen = z[torch.randperm(len(z), device=z.device)[: len(self.loc)]]
        with torch.no_grad():
            self.loc[: len(chosen)].copy_(chosen)
            self.log_scale.copy_(z.std(0).log().expand_as(self.log_scale))


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"),

        p(z) = (1/K) sum_k q0(z | u_k),

    the aggregated posterior of K learnable pseudo-inputs u_k pushed through the encoder to the
    posterior's diagonal Gaussian base q0 (the posterior itself for Gaussian families, the
    flow's base otherwise), so it pairs with every family and shares the encoder's weights.

    Pseudo-inputs stay in the data range [0, 1] as u = sigmoid(a) of free parameters a (the
    paper clips with a hardtanh; a sigmoid never has zero gradient). ``init="data"`` starts
    them at K distinct random training images, a = logit(clamp(x, m, 1 - m)) with margin
    m = 0.05 so that binary pixels keep a usable gradient; ``init="random"`` at a ~ N(0, I),
    noise images around grey 0.5. With ``init="data"`` training refuses to start before
    ``init_from_data`` has run.
    """

    margin = 0.05

    def __init__(
        self, latent_dim: int, data_dim: int, num_components: int = 500, init: str = "data"
    ) -> None:
        require("num_components", num_components, POSITIVE_INT)
        require("init", init, one_of("data", "random"))
        super().__init__(latent_dim, data_dim)
        self.num_components = num_components
        self.pseudo_logits = nn.Parameter(torch.randn(num_components, data_dim))
        self.awaiting_data = init == "data"

    @property
    def pseudo_inputs(self) -> Tensor:
        """u_k = sigmoid(a_k), shape [K, X]."""
        return torch.sigmoid(self.pseudo_logits)

    def init_from_data(self, train: Tensor) -> None:
        if not self.awaiting_data:
            return
        n = len(train)
        if self.num_components > n:
            raise ConfigError(
                f"prior.num_components={self.num_components} exceeds the {n} training "
                "datapoints the VampPrior starts from: lower it or set prior.init=random"
            )
        chosen = train[torch.randperm(n)[: self.num_components]].reshape(self.num_components, -1)
        with torch.no_grad():
            self.pseudo_logits.copy_(torch.logit(chosen.clamp(self.margin, 1 - self.margin)))
        self.awaiting_data = False

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        if self.training and self.awaiting_data:
            raise RuntimeError(
                "the VampPrior (prior.init=data) was not given the training set: keep the "
                "callbacks.prior_data_init callback, or set prior.init=random"
            )
        weights = Categorical(logits=self.pseudo_logits.new_zeros(self.num_components))
        return LatentMixture(weights, encode_base(self.pseudo_inputs))


class FlowDensity(Distribution):
    """p(z) = N(f(z); 0, I) |det df/dz|, with f = f_K o ... o f_1 invertible layers mapping z to
    the standard normal u (the density direction: one pass per layer for log p(z)).

    Samples run the layers backwards, z = f_1^-1 o ... o f_K^-1 (u), u ~ N(0, I).
    Batch shape [], event shape [D].
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, transforms: list[FlowTransform], loc: Tensor) -> None:
        self.transforms = transforms
        self.base = Independent(Normal(loc, torch.ones_like(loc)), 1)
        super().__init__(torch.Size(), loc.shape, validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        u, log_det = z, z.new_zeros(z.shape[:-1])
        for transform in self.transforms:
            u, layer_log_det = transform.forward_and_log_det(u)
            log_det = log_det + layer_log_det
        return self.base.log_prob(u) + log_det

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        z = self.base.rsample(sample_shape)
        for transform in reversed(self.transforms):
            z = transform.inv(z)
        return z


class FlowPrior(Prior):
    """A RealNVP density over z learned with the VAE (flow priors: Chen et al. 2017, "Variational
    Lossy Autoencoder"; Dinh et al. 2017 for the layers),

        log p(z) = log N(f(z); 0, I) + sum_k log |det df_k/dz_{k-1}|,

    with f made of ``num_flows`` affine coupling layers with alternating masks: the layers of
    ``vae_lab.components.posteriors.realnvp`` given no context. log p(z) is exact, so the IW
    estimate and the gap split need nothing new. The layers start near the identity, so p(z) starts
    near N(0, I) (exactly N(0, I) with zero output weights).
    """

    def __init__(
        self, latent_dim: int, data_dim: int, num_flows: int = 4, hidden_dim: int = 64
    ) -> None:
        require("num_flows", num_flows, POSITIVE_INT)
        require("hidden_dim", hidden_dim, POSITIVE_INT)
        super().__init__(latent_dim, data_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.layers = nn.ModuleList(
            CouplingLayer(latent_dim, 0, hidden_dim, flip=k % 2 == 1) for k in range(num_flows)
        )

    def forward(self, encode_base: BaseEncoder) -> Distribution:
        return FlowDensity([layer() for layer in self.layers], self.loc)

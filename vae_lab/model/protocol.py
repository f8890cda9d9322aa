"""What an objective (and an estimator stage) needs of a VAE: a small Protocol, so that
``vae_lab.model.objectives`` does not import the LightningModule that calls it."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn
from torch.distributions import Distribution

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.estimators.elbo import ELBOTerms, IWEstimate, LogLikelihood


class LatentModel(Protocol):
    """p(x, z) = p(z) p(x|z) with an amortised q(z|x) = posterior(encoder(x))."""

    encoder: nn.Module
    decoder: nn.Module
    posterior: PosteriorFamily
    prior: nn.Module
    likelihood: nn.Module

    def q(self, x: Tensor) -> Distribution: ...

    def encode_base(self, x: Tensor) -> Distribution: ...

    def p_z(self) -> Distribution: ...

    def log_likelihood(self, x: Tensor) -> LogLikelihood: ...

    def elbo(self, x: Tensor, num_samples: int = 1) -> ELBOTerms: ...

    def iw_estimate(
        self,
        x: Tensor,
        num_samples: int,
        chunk_size: int | None = None,
        theta: Tensor | None = None,
        family: PosteriorFamily | None = None,
    ) -> IWEstimate: ...

"""The importance-weighted bound as the training objective (Burda et al. 2016).

    L_K(x) = E[ log (1/K) sum_k w_k ],  w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)

``gradient=reparam`` estimates L_K from one set of K draws as

    mean_k log p(x|z_k) - KL(q || p) + [ log mean_k w_k - mean_k log w_k ],

the ELBO's estimate (the KL analytic where torch knows it, as
``vae_lab.estimators.elbo.elbo_terms``) plus the Jensen gap of the same draws. Its expectation is
L_K, and with K = 1 the bracket is exactly 0, so ``iwae`` with K = 1 is ``elbo`` to the last digit
on the same draws.

``gradient=dreg`` (Tucker et al. 2019): with w~_k = w_k / sum_j w_j and log q at fixed
parameters, the decoder's gradient is sum_k w~_k d log w_k / d theta and the encoder's
sum_k w~_k^2 d log w_k / d z_k dz_k / d phi, whose signal-to-noise ratio does not decay with K.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_lab.config.validation import POSITIVE_INT, require
from vae_lab.estimators.elbo import ELBOTerms, analytic_kl, rsample_with_log_prob
from vae_lab.model.objectives.base import Objective, TrainingLoss, fixed_log_q
from vae_lab.model.protocol import LatentModel


def log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/K) sum_k exp(log_w_k) over dim 0."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


class IWAE(Objective):
    gradients = ("reparam", "dreg")

    def __init__(self, num_samples: int = 5, gradient: str = "reparam") -> None:
        super().__init__(gradient)
        require("num_samples", num_samples, POSITIVE_INT)
        self.num_samples = num_samples

    def loss(self, model: LatentModel, x: Tensor, step: int) -> TrainingLoss:
        bound, terms = (self._dreg if self.gradient == "dreg" else self._reparam)(model, x)
        return TrainingLoss(loss=-bound.mean(), terms=terms, bound=bound)

    def _reparam(self, model: LatentModel, x: Tensor) -> tuple[Tensor, ELBOTerms]:
        q, prior = model.q(x), model.p_z()
        z, log_q = rsample_with_log_prob(q, self.num_samples)
        log_lik, log_pz = model.log_likelihood(x)(z), prior.log_prob(z)
        log_w = log_lik + log_pz - log_q
        kl = analytic_kl(q, prior)
        terms = ELBOTerms(recon=log_lik.mean(0), kl=(log_q - log_pz).mean(0) if kl is None else kl)
        return terms.elbo + (log_mean_exp(log_w) - log_w.mean(0)), terms

    def _dreg(self, model: LatentModel, x: Tensor) -> tuple[Tensor, ELBOTerms]:
        theta = model.posterior(model.encoder(x))
        z = model.posterior.distribution(theta).rsample((self.num_samples,))
        log_lik, log_pz = model.log_likelihood(x)(z), model.p_z().log_prob(z)
        log_w = log_lik + log_pz - fixed_log_q(model.posterior, theta, z)
        w_tilde = torch.softmax(log_w.detach(), 0)
        if z.requires_grad:  # a second w~ on the path through z: the encoder's w~^2
            z.register_hook(lambda grad: grad * w_tilde.unsqueeze(-1))
        surrogate = (w_tilde * log_w).sum(0)
        bound = log_mean_exp(log_w).detach()
        terms = ELBOTerms(recon=log_lik.mean(0).detach(), kl=(log_lik - log_w).mean(0).detach())
        return surrogate - surrogate.detach() + bound, terms

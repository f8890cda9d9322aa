"""The ELBO objective (Kingma & Welling 2014) with a KL weight and its linear warm-up.

    loss = -mean_x [ E_q[log p(x|z)] - beta_t KL(q(z|x) || p(z)) ],
    beta_t = beta * min(1, t / kl_warmup_steps)                    (Bowman et al. 2016)

``gradient=reparam`` uses the analytic KL where torch knows it
(``vae_lab.estimators.elbo.elbo_terms``); ``gradient=stl`` (Roeder et al. 2017) the Monte Carlo KL
log q(z|x) - log p(z) with log q at the sampled z and q's parameters held fixed, whose gradient
vanishes when q = p(z|x).
"""

from __future__ import annotations

from torch import Tensor

from vae_lab.config.validation import NON_NEGATIVE_INT, NON_NEGATIVE_NUMBER, require
from vae_lab.estimators.elbo import ELBOTerms
from vae_lab.model.objectives.base import Objective, TrainingLoss, fixed_log_q
from vae_lab.model.protocol import LatentModel


class ELBO(Objective):
    gradients = ("reparam", "stl")

    def __init__(
        self, gradient: str = "reparam", beta: float = 1.0, kl_warmup_steps: int = 0
    ) -> None:
        super().__init__(gradient)
        require("beta", beta, NON_NEGATIVE_NUMBER)
        require("kl_warmup_steps", kl_warmup_steps, NON_NEGATIVE_INT)
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps

    def kl_weight(self, step: int) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def loss(self, model: LatentModel, x: Tensor, step: int) -> TrainingLoss:
        terms = self.terms(model, x)
        weight = self.kl_weight(step)
        bound = terms.elbo if weight == 1.0 else terms.recon - weight * terms.kl
        return TrainingLoss(loss=-bound.mean(), terms=terms, bound=bound)

    def terms(self, model: LatentModel, x: Tensor) -> ELBOTerms:
        """The ELBO's terms with one sample of z, their gradient by ``self.gradient``."""
        if self.gradient == "reparam":
            return model.elbo(x)
        theta = model.posterior(model.encoder(x))
        z = model.posterior.distribution(theta).rsample((1,))
        kl = fixed_log_q(model.posterior, theta, z) - model.p_z().log_prob(z)
        return ELBOTerms(recon=model.log_likelihood(x)(z).mean(0), kl=kl.mean(0))

"""Semi-amortized inference (Kim et al. 2018; Marino et al. 2018 for the iterative form).

The encoder's variational parameters theta_0 = theta(x) are refined per datapoint by
``refine_steps`` steps of gradient ascent on that datapoint's ELBO,

    g_t = d ELBO(x; theta_t) / d theta_t,
    theta_{t+1} = theta_t + refine_lr * g_t * min(1, refine_max_norm / ||g_t||),

each datapoint's gradient clipped to norm ``refine_max_norm`` as in Kim et al.'s code (a plain
step diverges where q's curvature is high, e.g. a full-covariance q early in training), all
datapoints of a batch at once (the ELBO of a batch is a sum of per-datapoint terms, so the
gradient of the sum is each datapoint's own). The decoder is trained on ELBO(x; theta_T).
With ``refine_backprop=true`` the encoder is trained through the refinement, on
ELBO(x; theta_T) (Kim et al.'s SA-VAE); with ``false`` on its own ELBO(x; theta_0), with the
decoder held fixed in that term. Every family builds q from a flat theta
(``PosteriorFamily.distribution``), so every family can be refined.

The test stage reports the refined q as well: ``test/log_px_refined`` (its IW estimate with the
run's K) and ``test/elbo_refined`` (the ELBO of the same weights), so the amortization gap
the refinement closes is visible; ``evaluate`` reports the refined q's ELBO, IW estimate and
amortization gap (``eval/*_refined``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_lab.config.validation import NON_NEGATIVE_INT, POSITIVE_NUMBER, require
from vae_lab.estimators.elbo import ELBOTerms, elbo_terms
from vae_lab.model.objectives.base import Objective, TrainingLoss, call_frozen
from vae_lab.model.protocol import LatentModel


class SemiAmortized(Objective):
    refines = True

    def __init__(
        self,
        refine_steps: int = 5,
        refine_lr: float = 0.1,
        refine_max_norm: float = 5.0,
        refine_backprop: bool = True,
    ) -> None:
        super().__init__("reparam")
        require("refine_steps", refine_steps, NON_NEGATIVE_INT)
        require("refine_lr", refine_lr, POSITIVE_NUMBER)
        require("refine_max_norm", refine_max_norm, POSITIVE_NUMBER)
        self.refine_max_norm = refine_max_norm
        self.refine_steps = refine_steps
        self.refine_lr = refine_lr
        self.refine_backprop = refine_backprop

    def refine(self, model: LatentModel, x: Tensor, theta: Tensor, create_graph: bool) -> Tensor:
        """theta_T after ``refine_steps`` ascent steps on each datapoint's ELBO from ``theta``;
        differentiable in ``theta`` when ``create_graph`` (and gradients are enabled: the loss
        evaluated under no_grad is the same number), else detached from it."""
        create_graph = create_graph and torch.is_grad_enabled()
        log_likelihood = model.log_likelihood(x)
        for _ in range(self.refine_steps):
            with torch.enable_grad():  # also under no_grad: the ascent needs d ELBO / d theta
                if not create_graph:  # each step from a leaf: no graph through the steps
                    theta = theta.detach().requires_grad_()
                q = model.posterior.distribution(theta)
                elbo = elbo_terms(q, model.p_z(), log_likelihood).elbo.sum()
                (grad,) = torch.autograd.grad(elbo, theta, create_graph=create_graph)
            norm = grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            theta = theta + self.refine_lr * grad * (self.refine_max_norm / norm).clamp(max=1.0)
        return theta if create_graph else theta.detach()

    def loss(self, model: LatentModel, x: Tensor, step: int) -> TrainingLoss:
        theta0 = model.posterior(model.encoder(x))
        theta = self.refine(model, x, theta0, create_graph=self.refine_backprop)
        refined = self._terms(model, x, theta)
        bound = refined.elbo
        if not self.refine_backprop:  # the encoder on its own ELBO, the decoder held fixed
            own = self._terms(model, x, theta0, frozen=True).elbo
            bound = bound + (own - own.detach())  # adds exactly 0 to the value
        return TrainingLoss(loss=-bound.mean(), terms=refined, bound=bound)

    def _terms(
        self, model: LatentModel, x: Tensor, theta: Tensor, frozen: bool = False
    ) -> ELBOTerms:
        q = model.posterior.distribution(theta)
        if not frozen:
            return elbo_terms(q, model.p_z(), model.log_likelihood(x))

        def log_likelihood(z: Tensor) -> Tensor:
            logits = call_frozen(model.decoder, "forward", z)
            return call_frozen(model.likelihood, "forward", logits).log_prob(x)

        return elbo_terms(q, call_frozen(model.prior, "forward", model.encode_base), log_likelihood)

    def refined_theta(self, model: LatentModel, x: Tensor) -> Tensor:
        """theta_T of the datapoints x, from the encoder's theta_0, without a graph."""
        with torch.inference_mode(False):  # Lightning tests in inference mode
            x = x.clone()
            return self.refine(model, x, model.posterior(model.encoder(x)), create_graph=False)

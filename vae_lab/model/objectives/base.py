"""The interface of a training objective, and the gradient estimators they share.

An objective maps a batch x to the scalar the optimiser minimises (``TrainingLoss.loss``)
and the per-datapoint ELBO terms logged beside it. The LightningModule calls it for every
training step and never asks which objective it has.

Gradient estimators (``gradient``):

* ``reparam``: the reparameterised (pathwise) gradient of the Monte Carlo objective
  (Kingma & Welling 2014).
* ``stl``, "sticking the landing" (Roeder et al. 2017): the ELBO with log q(z|x) evaluated at
  the sampled z with q's parameters held fixed, which drops the score term E_q[d log q/d phi]
  (zero in expectation) and so has zero variance when q equals the exact posterior.
* ``dreg``, doubly reparameterised (Tucker et al. 2019): for the IWAE bound, the encoder's
  gradient sum_k w~_k^2 d log w_k/d z_k dz_k/d phi, with log q also at fixed parameters; its
  signal-to-noise ratio does not decay as K grows, unlike the reparameterised one (Rainforth
  et al. 2018).

Both need log q(z|x) at a given z with q's parameters held fixed, which a family whose
layers have no closed-form inverse (planar, Sylvester) cannot give: such a combination is
refused before training (``Objective.check``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.func import functional_call

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.config.paths import CONF_DIR
from vae_lab.config.validation import ConfigError, one_of, require
from vae_lab.estimators.elbo import ELBOTerms
from vae_lab.model.protocol import LatentModel

POSTERIOR_CONF = CONF_DIR / "posterior"


@dataclass
class TrainingLoss:
    """What a training step minimises, and the per-datapoint terms it logs."""

    loss: Tensor  # scalar
    terms: ELBOTerms  # per-datapoint recon and KL of the encoder's q, shape [B] each
    bound: Tensor  # the per-datapoint objective the loss is the negative mean of, shape [B]


class Objective:
    """A training objective: ``loss(model, x, step)``; see the module docstring."""

    #: the gradient estimators this objective offers
    gradients: tuple[str, ...] = ("reparam",)
    #: whether inference refines the encoder's q per datapoint (``refined_theta``)
    refines: bool = False

    def __init__(self, gradient: str = "reparam") -> None:
        require("gradient", gradient, one_of(*self.gradients))
        self.gradient = gradient

    def check(self, posterior: PosteriorFamily) -> None:
        """Raise ConfigError if this objective cannot train ``posterior`` (before training)."""
        if self.gradient != "reparam" and not posterior.exact_log_prob:
            raise ConfigError(
                f"objective.gradient={self.gradient} needs log q(z|x) at a sampled z with q's "
                f"parameters held fixed, which {type(posterior).__name__} cannot evaluate (no "
                f"closed-form inverse): use posterior={','.join(exact_families())} or "
                "objective.gradient=reparam"
            )

    def loss(self, model: LatentModel, x: Tensor, step: int) -> TrainingLoss:
        raise NotImplementedError

    def refined_theta(self, model: LatentModel, x: Tensor) -> Tensor:
        """Where ``refines``: the flat parameters [B, P] of the q(z|x) this objective's
        inference ends at, which ``evaluate`` reports beside the encoder's q."""
        raise NotImplementedError(f"{type(self).__name__} does not refine q")


def exact_families() -> list[str]:
    """The posterior options (conf/posterior/) whose log q(z|x) is exact at any z."""
    names = []
    for path in sorted(POSTERIOR_CONF.glob("*.yaml")):
        node = OmegaConf.load(path)
        target = node.get("_target_")
        if target is None:  # an alias such as flow.yaml: its first default names the option
            target = OmegaConf.load(POSTERIOR_CONF / f"{node.defaults[0]}.yaml")._target_
        if get_class(target).exact_log_prob:
            names.append(path.stem)
    return names


def call_frozen(module: nn.Module, method: str, *args: Any) -> Any:
    """``getattr(module, method)(*args)`` with every parameter of ``module`` detached:
    gradients reach the arguments but none of the module's own parameters."""
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(_Method(module, method), {f"module.{k}": v for k, v in frozen.items()},
                           args)  # fmt: skip


class _Method(nn.Module):
    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.module, self.method)(*args)


def fixed_log_q(posterior: PosteriorFamily, theta: Tensor, z: Tensor) -> Tensor:
    """log q(z|x) [S, B] at z [S, B, D] with every parameter of q (theta and the family's
    shared weights) held fixed: its gradient is the path derivative through z only."""
    return call_frozen(posterior, "log_prob", theta.detach(), z)

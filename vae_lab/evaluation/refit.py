"""Priors refitted after training (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models",
the two-stage VAE; Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
ex-post density estimation).

With the encoder and decoder frozen, a density is fitted to codes of the aggregate posterior
of the training set,

    z_n ~ q(z|x_n),   x_n in the training set   (``codes_per_point`` codes each),

so that prior samples land where the decoder has seen codes. ``mixture`` and ``flow`` are the
options of conf/prior/ fitted by maximum likelihood (Adam on the mean log p(z) of minibatches
of codes); ``diffusion`` is ``vae_lab.components.diffusion.LatentDiffusion``. The mixture and the
flow have an exact density, so the IW estimate of log p(x) with the refitted prior in place of the
trained one is a valid log-likelihood, of a different model (same decoder, new prior), and is
reported as such; the diffusion prior gives samples only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.components.minibatch_adam import minibatch_adam
from vae_lab.components.priors import Prior
from vae_lab.config.paths import CONF_DIR
from vae_lab.model.module import VAE

REFIT_OPTIONS = ("mixture", "flow", "diffusion")


@dataclass
class RefitSettings:
    """``refit`` in conf/config.yaml."""

    codes_per_point: int = 1
    steps: int = 3000
    batch_size: int = 500
    lr: float = 1e-3
    diffusion: Callable[..., Any] | None = None  # latent_dim -> an unfitted LatentDiffusion


@dataclass
class RefittedPrior:
    name: str
    sample: Callable[[int], Tensor]  # n -> z [n, D]
    density: Distribution | None  # None where it has no exact density (diffusion)


@torch.no_grad()
def aggregate_posterior_codes(
    model: VAE, x: Tensor, codes_per_point: int = 1, batch_size: int = 1000
) -> Tensor:
    """z ~ q(z|x) for every x [N, X]: codes [N * codes_per_point, D]."""
    codes = [
        model.q(batch).sample((codes_per_point,)).flatten(0, 1) for batch in x.split(batch_size)
    ]
    return torch.cat(codes)


def fit_density(prior: Prior, codes: Tensor, settings: RefitSettings, desc: str) -> Prior:
    """Maximum likelihood: Adam on -mean log p(z) over random minibatches of the codes [N, D],
    after ``prior.init_from_codes``. Priors built from the encoder (vamp) are not refitted."""
    with torch.inference_mode(False):
        codes = codes.detach().clone()
    prior.init_from_codes(codes)
    minibatch_adam(
        prior.parameters(), lambda rows: -prior(None).log_prob(codes[rows]).mean(), len(codes),
        settings.steps, settings.batch_size, settings.lr, desc, device=codes.device,
    )  # fmt: skip
    return prior.eval().requires_grad_(False)


def refit_prior(name: str, codes: Tensor, settings: RefitSettings, data_dim: int) -> RefittedPrior:
    """The prior ``name`` (one of REFIT_OPTIONS) fitted to the codes [N, D]."""
    latent_dim = codes.shape[-1]
    if name == "diffusion":
        diffusion = settings.diffusion(latent_dim=latent_dim).to(codes.device)
        diffusion.fit(codes)
        return RefittedPrior(name, diffusion.sample, None)
    config = OmegaConf.load(CONF_DIR / "prior" / f"{name}.yaml")
    prior = instantiate(config, latent_dim=latent_dim, data_dim=data_dim).to(codes.device)
    density = fit_density(prior, codes, settings, f"refit {name} prior")(None)
    return RefittedPrior(name, lambda n: density.sample((n,)), density)

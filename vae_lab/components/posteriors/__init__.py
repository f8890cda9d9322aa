"""Posterior families q(z|x), each amortised by the encoder."""

from vae_lab.components.posteriors.base import PosteriorFamily
from vae_lab.components.posteriors.flow import (
    FlowDistribution,
    FlowLayer,
    FlowPosterior,
    FlowTransform,
)
from vae_lab.components.posteriors.full_cov import FullCovGaussian
from vae_lab.components.posteriors.gaussian import DiagonalGaussian
from vae_lab.components.posteriors.iaf import IAF
from vae_lab.components.posteriors.planar import Planar
from vae_lab.components.posteriors.realnvp import RealNVP
from vae_lab.components.posteriors.sylvester import Sylvester

__all__ = [
    "IAF",
    "DiagonalGaussian",
    "FlowDistribution",
    "FlowLayer",
    "FlowPosterior",
    "FlowTransform",
    "FullCovGaussian",
    "Planar",
    "PosteriorFamily",
    "RealNVP",
    "Sylvester",
]

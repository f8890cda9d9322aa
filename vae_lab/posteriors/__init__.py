"""Posterior families q(z|x), each amortised by the encoder."""

from vae_lab.posteriors.base import PosteriorFamily
from vae_lab.posteriors.flow import FlowDistribution, FlowLayer, FlowPosterior, FlowTransform
from vae_lab.posteriors.full_cov import FullCovGaussian
from vae_lab.posteriors.gaussian import DiagonalGaussian
from vae_lab.posteriors.iaf import IAF
from vae_lab.posteriors.planar import Planar
from vae_lab.posteriors.realnvp import RealNVP
from vae_lab.posteriors.sylvester import Sylvester

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

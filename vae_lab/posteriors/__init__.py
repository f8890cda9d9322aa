"""Posterior families q(z|x), each amortised by the encoder."""

from vae_lab.posteriors.base import PosteriorFamily
from vae_lab.posteriors.full_cov import FullCovGaussian
from vae_lab.posteriors.gaussian import DiagonalGaussian

__all__ = ["DiagonalGaussian", "FullCovGaussian", "PosteriorFamily"]

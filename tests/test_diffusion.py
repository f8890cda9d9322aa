"""The latent diffusion prior: its samples reproduce the moments of the codes it was fit to."""

from __future__ import annotations

import torch

from vae_lab.components.diffusion import LatentDiffusion


def gaussian_mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    """Three well-separated 2-D Gaussians with unequal weights, offset from the origin."""
    means = torch.tensor([[4.0, 1.0], [-2.0, 3.0], [1.0, -3.0]])
    component = torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), n, True, generator=generator)
    return means[component] + 0.4 * torch.randn(n, 2, generator=generator) + 1.0


def test_diffusion_samples_match_the_moments_of_a_gaussian_mixture():
    generator = torch.Generator().manual_seed(0)
    codes = gaussian_mixture(4000, generator)
    torch.manual_seed(0)
    prior = LatentDiffusion(2, timesteps=200, hidden=64, steps=1000, batch_size=256, lr=3e-3)
    samples = prior.fit(codes).sample(4000)
    torch.testing.assert_close(samples.mean(0), codes.mean(0), atol=0.15, rtol=0)
    torch.testing.assert_close(samples.T.cov(), codes.T.cov(), atol=0.4, rtol=0.05)
    # the modes, not a Gaussian with the right moments: most samples lie near a component
    means = torch.tensor([[5.0, 2.0], [-1.0, 4.0], [2.0, -2.0]])
    nearest = torch.cdist(samples, means).min(dim=1).values
    assert float((nearest < 1.2).double().mean()) > 0.9

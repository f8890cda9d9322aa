"""The closed-form KL of a diagonal normal to N(0, I): its value against torch's generic pair
and a Monte Carlo estimate, its gradient against finite differences, and its dispatch."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from tests.conftest import compose_config
from vae_lab.components.normal import DiagonalNormal, KLToStandardNormal, StandardNormal
from vae_lab.model.module import VAE


def parameters(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """loc and scale spanning many magnitudes: scale from 1e-4 to 1e3."""
    g = torch.Generator().manual_seed(seed)
    loc = 5 * torch.randn(shape, generator=g, dtype=torch.float64)
    scale = torch.exp(torch.empty(shape, dtype=torch.float64).uniform_(-9.2, 6.9, generator=g))
    return loc, scale


@pytest.mark.parametrize("shape", [(7,), (4, 3), (2, 5, 50)])
def test_kl_is_torchs_generic_kl(shape: tuple[int, ...]) -> None:
    loc, scale = parameters(shape, seed=len(shape))
    q, p = DiagonalNormal(loc, scale), StandardNormal(torch.zeros(shape[-1], dtype=loc.dtype))
    generic = kl_divergence(
        Independent(Normal(loc, scale), 1), Independent(Normal(torch.zeros_like(loc), 1.0), 1)
    )
    torch.testing.assert_close(kl_divergence(q, p), generic, rtol=1e-12, atol=1e-10)


def test_kl_is_the_monte_carlo_mean_of_the_log_ratio() -> None:
    loc, scale = torch.tensor([[0.3, -1.2, 2.0]]), torch.tensor([[0.5, 1.7, 0.05]])
    q, p = DiagonalNormal(loc, scale), StandardNormal(torch.zeros(3))
    torch.manual_seed(0)
    z = q.sample((400_000,))
    ratio = q.log_prob(z) - p.log_prob(z)
    stderr = ratio.std(0) / ratio.shape[0] ** 0.5
    assert (kl_divergence(q, p) - ratio.mean(0)).abs().item() < 4 * stderr.item()


def test_gradient_is_the_finite_difference_gradient() -> None:
    loc, scale = parameters((3, 4), seed=1)
    scale = scale.clamp(0.05, 20.0)  # finite differences need a scale far above their step
    assert torch.autograd.gradcheck(
        KLToStandardNormal.apply, (loc.requires_grad_(), scale.requires_grad_())
    )


def test_the_gaussian_posterior_and_standard_prior_take_the_closed_form() -> None:
    model = VAE.from_config(compose_config(["posterior=gaussian", "prior=standard"]), data_dim=12)
    x = torch.rand(5, 12)
    kl = kl_divergence(model.q(x), model.p_z())
    assert kl.grad_fn is not None and "KLToStandardNormal" in type(kl.grad_fn).__name__


def test_gradient_of_the_gradient_is_the_finite_difference_one() -> None:
    loc, scale = parameters((2, 3), seed=2)
    scale = scale.clamp(0.05, 20.0)
    assert torch.autograd.gradgradcheck(
        KLToStandardNormal.apply, (loc.requires_grad_(), scale.requires_grad_())
    )

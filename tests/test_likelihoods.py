"""The Bernoulli pixel density and its hand-written backward against torch's Bernoulli."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli

from vae_lab.components.likelihoods import BernoulliLikelihood, bernoulli_log_density_by_products


def torch_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return Bernoulli(logits=logits).log_prob(x).sum(-1)


@pytest.mark.parametrize(
    ("logits_shape", "x_shape"),
    # x broadcast; equal; x with more dimensions; both broadcast
    [((5, 3, 7), (3, 7)), ((3, 7), (3, 7)), ((3, 7), (4, 3, 7)), ((5, 1, 7), (3, 7))],
)
def test_log_prob_and_its_gradients_equal_torch_bernoulli(logits_shape, x_shape):
    torch.manual_seed(0)
    logits = (3 * torch.randn(logits_shape, dtype=torch.float64)).requires_grad_(True)
    x = torch.bernoulli(torch.full(x_shape, 0.4, dtype=torch.float64)).requires_grad_(True)
    ours = BernoulliLikelihood(7)(logits).log_prob(x)
    expected = torch_log_prob(logits, x)
    torch.testing.assert_close(ours, expected)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((ours * weights).sum(), (logits, x))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (logits, x))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dim", [7, 784, 1000, 1001, 2500])  # one block, and padded blocks
def test_the_product_form_of_the_density_equals_the_float64_density(dim):
    """float32 logits with a spread up to |l| = 60 (factors 1 + e^-|l| from 2 down to 1 +
    1e-26), binary and grey-level x: within float32 rounding (2 ulp) of the float64 density,
    as close as the log1p form, which sums the pixels in float32."""
    torch.manual_seed(dim)
    logits = 20 * torch.randn(3, 4, dim)
    logits[0, 0, :3] = torch.tensor([60.0, -60.0, 0.0])
    for x in (torch.bernoulli(torch.full((4, dim), 0.3)), torch.rand(4, dim)):
        exact = Bernoulli(logits=logits.double(), validate_args=False).log_prob(x.double()).sum(-1)
        ours = bernoulli_log_density_by_products(logits, x)
        eager = BernoulliLikelihood(dim)(logits).log_prob(x)
        assert ours.dtype == torch.float32
        error = (ours.double() - exact).abs()
        assert (error <= 2.4e-7 * exact.abs() + 1e-5).all()
        assert error.max() <= (eager.double() - exact).abs().max()


def test_second_derivatives_equal_torch_bernoulli():
    """Semi-amortized inference differentiates through gradient steps on log p(x|z)."""
    torch.manual_seed(1)
    logits = (3 * torch.randn(4, 7, dtype=torch.float64)).requires_grad_(True)
    x = torch.bernoulli(torch.full((4, 7), 0.4, dtype=torch.float64))
    hessians = []
    for log_prob in (BernoulliLikelihood(7)(logits).log_prob, lambda v: torch_log_prob(logits, v)):
        (grad,) = torch.autograd.grad(log_prob(x).sum(), logits, create_graph=True)
        (second,) = torch.autograd.grad((grad * torch.arange(7.0)).sum(), logits)
        hessians.append(second)
    torch.testing.assert_close(*hessians)

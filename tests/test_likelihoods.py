"""The Bernoulli pixel density and its hand-written backward against torch's Bernoulli."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli

from vae_lab.likelihoods import BernoulliLikelihood


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

"""Every training loss whose gradient is meant to be its exact gradient (the reparameterised
ELBO and IWAE bound, semi-amortized inference differentiated through its refinement) has the
gradient autograd gives it: for every posterior family, prior and likelihood, the directional
derivative along a random direction in all parameters equals the central finite difference,
in float64 with the noise fixed. A hand-written backward that drops a term (one that is not
differentiable twice, a detach) fails here. STL and DReG are not gradients of their loss by
design; ``test_objectives`` checks them against the reparameterised gradient."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config, options, sized_overrides
from vae_lab.model.module import VAE
from vae_lab.records.collect import default_options

#: an objective's settings here, for those of these keys it has: few samples, and a short
#: refinement differentiated through
OBJECTIVE_SIZES = {"num_samples": 3, "refine_steps": 2, "refine_backprop": "true"}
DATA_DIM, STEP = 10, 4e-6


def loss_of(model, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # the same noise at every evaluation
    return model.objective.loss(model, x, step=10**9).loss


def cases() -> list:
    """Every posterior x prior x objective x likelihood; the fast suite takes those with the
    default posterior or the default prior (every option of every group, each with every
    other group's options but one), ``make test-full`` the whole product."""
    default = default_options()
    return [
        pytest.param(
            posterior,
            prior,
            objective,
            likelihood,
            marks=()
            if default["posterior"] == posterior or default["prior"] == prior
            else pytest.mark.slow,
        )  # fmt: skip
        for posterior in options("posterior")
        for prior in options("prior")
        for objective in options("objective")
        for likelihood in options("likelihood")
    ]


@pytest.mark.parametrize(("posterior", "prior", "objective", "likelihood"), cases())
def test_gradient_is_the_finite_difference(posterior, prior, objective, likelihood):
    overrides = [
        f"posterior={posterior}",
        f"likelihood={likelihood}",
        "model.hidden=[8]",
        "latent_dim=2",
        *sized_overrides("objective", objective, OBJECTIVE_SIZES),
        *sized_overrides("prior", prior, {"init": "random"}),  # no training set here
    ]
    torch.manual_seed(0)  # the initial weights
    model = VAE.from_config(compose_config(overrides), DATA_DIM).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, DATA_DIM, generator=g, dtype=torch.float64)
    x = (x > 0.5).double() if likelihood == "bernoulli" else x
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_of(model, x), params, allow_unused=True)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    pairs = zip(grads, direction, strict=True)
    analytic = sum(float((grad * d).sum()) for grad, d in pairs if grad is not None)

    def loss_at(step: float) -> float:
        """The loss at the start + step x direction."""
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(step * d)
            value = float(loss_of(model, x))
            for p, d in zip(params, direction, strict=True):
                p.sub_(step * d)
        return value

    def central(h: float) -> float:
        return (loss_at(h) - loss_at(-h)) / (2 * h)

    # Richardson's extrapolation of central differences: error O(h^4), where semi-amortized
    # refinement makes some losses curved enough that a plain difference is off by 1e-5
    finite = (4 * central(STEP / 2) - central(STEP)) / 3
    assert analytic == pytest.approx(finite, rel=1e-6, abs=1e-8)

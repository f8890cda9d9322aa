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

from tests.conftest import compose_config, option_config, options, sized_overrides
from vae_lab.model.module import VAE
from vae_lab.records.collect import default_options

#: an objective's settings here, for those of these keys it has: few samples, and a short
#: refinement differentiated through
OBJECTIVE_SIZES = {"num_samples": 3, "refine_steps": 2, "refine_backprop": "true"}
#: a model's settings here, for those of these keys it has: a few units, a few channels, and
#: tanh, smooth, where the finite differences of a (semi-amortized: second) derivative across
#: a ReLU's or ELU's kink miss the jump
MODEL_SIZES = {"hidden": "[8]", "channels": "[2,3]", "features": 8, "z1_dim": 3, "z1_hidden": "[4]",
               "activation": "tanh"}  # fmt: skip
DATA_DIM, IMAGE_SHAPE, STEP = 10, (2, 5), 1e-6


def model_overrides(model: str) -> list[str]:
    """The model's option with ``MODEL_SIZES`` for those of its keys it has, but an empty list
    of layers (model=linear's) kept."""
    cfg = option_config("model", model)
    sizes = {key: value for key, value in MODEL_SIZES.items() if cfg.get(key) != []}
    return sized_overrides("model", model, sizes)


def loss_of(model, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # the same noise at every evaluation
    return model.objective.loss(model, x, step=10**9).loss


def in_fast_suite(network: str, posterior: str, prior: str) -> bool:
    """For the default model, every option of every group, each with every other group's
    options but one (the default posterior or the default prior); for another model, the
    default posterior and prior with every objective and likelihood."""
    default = default_options()
    defaults = (default["posterior"] == posterior, default["prior"] == prior)
    return any(defaults) if network == default["model"] else all(defaults)


def cases() -> list:
    """Every model x posterior x prior x objective x likelihood: the fast suite takes those
    ``in_fast_suite``, ``make test-full`` the whole product."""
    return [
        pytest.param(network, posterior, prior, objective, likelihood,
                     marks=() if in_fast_suite(network, posterior, prior) else pytest.mark.slow)
        for network in options("model")
        for posterior in options("posterior")
        for prior in options("prior")
        for objective in options("objective")
        for likelihood in options("likelihood")
    ]  # fmt: skip


@pytest.mark.parametrize(("network", "posterior", "prior", "objective", "likelihood"), cases())
def test_gradient_is_the_finite_difference(network, posterior, prior, objective, likelihood):
    overrides = [
        f"posterior={posterior}",
        f"likelihood={likelihood}",
        *model_overrides(network),
        "latent_dim=2",
        *sized_overrides("objective", objective, OBJECTIVE_SIZES),
        *sized_overrides("prior", prior, {"init": "random"}),  # no training set here
    ]
    torch.manual_seed(0)  # the initial weights
    model = VAE.from_config(compose_config(overrides), DATA_DIM, IMAGE_SHAPE).double()
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

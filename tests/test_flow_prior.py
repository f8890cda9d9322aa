"""prior=flow: a normalised density, exact log-det, N(0, I) at identity layers, and training
with every posterior family."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from tests.conftest import CONF_DIR, compose_config
from vae_lab.components.priors import FlowPrior
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

DATA_DIM = 64  # the digits' 8 x 8


def random_flow_prior(latent_dim: int, scale: float = 0.3) -> FlowPrior:
    """A flow prior far from the identity: random output weights of every coupling network."""
    torch.manual_seed(0)
    prior = FlowPrior(latent_dim, DATA_DIM, num_flows=4, hidden_dim=16)
    with torch.no_grad():
        for layer in prior.layers:
            layer.net.output.weight.normal_(0.0, scale)
            layer.net.output.bias.normal_(0.0, scale)
    return prior


def test_flow_prior_integrates_to_one_on_a_2d_grid():
    prior = random_flow_prior(2)
    axis = torch.linspace(-15, 15, 601)
    step = float(axis[1] - axis[0])
    with torch.no_grad():
        density = prior(None).log_prob(torch.cartesian_prod(axis, axis)).exp()
        samples = prior(None).sample((20000,))
    assert float(samples.std(0).min()) < 0.8  # far from N(0, I): the check is not trivial
    assert float(density.sum()) * step**2 == pytest.approx(1.0, abs=0.005)


def test_flow_prior_log_density_is_the_change_of_variables_with_autograd_jacobian():
    prior = random_flow_prior(3).double()
    density = prior(None)
    z = torch.randn(5, 3, dtype=torch.float64)

    def f(v):
        for transform in density.transforms:
            v = transform(v)
        return v

    for z_i in z:
        u = f(z_i)
        log_det = torch.linalg.slogdet(jacobian(f, z_i))[1]
        expected = -0.5 * (u**2).sum() - 1.5 * math.log(2 * math.pi) + log_det
        torch.testing.assert_close(density.log_prob(z_i), expected)
    # sampling inverts the same map: f(sample) is the standard normal draw
    torch.manual_seed(1)
    samples = density.sample((7,))
    torch.manual_seed(1)
    torch.testing.assert_close(f(samples), torch.randn(7, 3, dtype=torch.float64))


def test_flow_prior_with_identity_layers_equals_the_standard_prior_exactly():
    standard = VAE.from_config(compose_config(), DATA_DIM)
    flow = VAE.from_config(compose_config(["prior=flow"]), DATA_DIM)
    shared = {k: v for k, v in standard.state_dict().items() if not k.startswith("prior.")}
    flow.load_state_dict(shared, strict=False)
    with torch.no_grad():
        for layer in flow.prior.layers:
            layer.net.output.weight.zero_()
            layer.net.output.bias.zero_()
    z = 3 * torch.randn(10, 20, 16)
    assert torch.equal(flow.p_z().log_prob(z), standard.p_z().log_prob(z))
    x = torch.bernoulli(torch.full((30, DATA_DIM), 0.3), generator=torch.Generator().manual_seed(0))

    def iw(model):
        torch.manual_seed(2)
        with torch.no_grad():
            return model.iw_estimate(x, num_samples=50).log_px.value

    assert torch.equal(iw(flow), iw(standard))
    torch.manual_seed(3)
    samples = flow.p_z().sample((4,))
    torch.manual_seed(3)
    assert torch.equal(samples, standard.p_z().sample((4,)))


def test_flow_prior_gets_gradients_from_the_training_loss():
    torch.manual_seed(0)
    model = VAE.from_config(compose_config(["prior=flow"]), DATA_DIM)
    x = torch.bernoulli(torch.full((50, DATA_DIM), 0.3))
    (-model.elbo(x).elbo.mean()).backward()
    for name, parameter in model.prior.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "posterior", sorted(p.stem for p in (CONF_DIR / "posterior").glob("*.yaml"))
)
def test_flow_prior_trains_with_every_posterior_family_on_digits(posterior, tmp_path):
    cfg = compose_config(["prior=flow", f"posterior={posterior}"])
    execute(cfg, tmp_path, {"prior": "flow", "posterior": posterior, "data": "digits"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    for key in ("test/elbo", "test/kl", "test/log_px"):
        assert math.isfinite(metrics[key]), key

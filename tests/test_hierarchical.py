"""model=hierarchical: two stochastic layers (Burda et al. 2016) seen by the estimators as one
joint latent; the IW estimate of a linear-Gaussian two-layer model against its exact log p(x)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal

from tests.conftest import compose_config, options, sized_overrides
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

pytestmark = pytest.mark.usefixtures("single_thread")  # many small tensor ops

#: x of 4 values <- z1 of 3 <- z2 of 2, every network linear
LINEAR = ["model=hierarchical", "model.hidden=[]", "model.z1_dim=3", "model.z1_hidden=[]",
          "latent_dim=2", "likelihood=gaussian", "likelihood.scale=0.5"]  # fmt: skip
DATA_DIM, Z1 = 4, 3


def linear_two_layer(posterior: str) -> VAE:
    """p(z2) = N(0, I), p(z1|z2) = N(A z2 + b, diag s^2), p(x|z1) = N(W z1 + c, 0.5^2 I), in
    float64; q of ``posterior`` at each layer, at its random initialisation."""
    torch.manual_seed(0)
    overrides = [*LINEAR, *sized_overrides("posterior", posterior, {"hidden_dim": 8})]
    model = VAE.from_config(compose_config(overrides), DATA_DIM).double().eval()
    downward = model.prior.downward[0]
    with torch.no_grad():
        downward.weight[Z1:] = 0.0  # the scale of z1 given z2 does not depend on z2
        downward.bias.normal_()
    return model


def exact_marginal(model: VAE) -> MultivariateNormal:
    """p(x) = N(W b + c, W (A A^T + diag s^2) W^T + 0.5^2 I)."""
    downward, decoder = model.prior.downward[0], model.decoder.net[0]
    a, b = downward.weight[:Z1], downward.bias[:Z1]
    s = F.softplus(downward.bias[Z1:]) + 1e-5
    w, c = decoder.weight, decoder.bias
    cov_z1 = a @ a.T + torch.diag(s**2)
    cov = w @ cov_z1 @ w.T + model.likelihood.scale**2 * torch.eye(DATA_DIM, dtype=w.dtype)
    return MultivariateNormal(w @ b + c, cov)


def fit_q(model: VAE, x: torch.Tensor, steps: int = 150) -> None:
    """Fit the encoder and q's layers to the points x by the ELBO (the model held fixed)."""
    params = [*model.encoder.parameters(), *model.posterior.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        (-model.elbo(x, num_samples=8).elbo.mean()).backward()
        optimizer.step()


def test_iw_estimate_of_a_linear_gaussian_two_layer_model_is_its_exact_log_px():
    """With full-covariance q at both layers the family holds the exact posterior
    (p(z1|x) is Gaussian, p(z2|z1, x) = p(z2|z1) Gaussian with a mean linear in z1), so the
    fitted q's IW estimate has a bias far below its stderr."""
    model = linear_two_layer("full_cov")
    with torch.no_grad():
        marginal = exact_marginal(model)
        x = marginal.sample((20,))
        exact = float(marginal.log_prob(x).mean())
    fit_q(model, x)
    with torch.no_grad():
        estimate = model.iw_estimate(x, num_samples=2000).log_px.figure()
    assert abs(estimate.value - exact) < 3 * estimate.stderr
    assert estimate.stderr < 0.01  # a sharp check, not a loose one


@pytest.mark.parametrize("posterior", options("posterior"))
def test_log_q_of_the_joint_latent_is_that_of_its_draws(posterior):
    """log q(z1, z2 | x) at the drawn z, as the IW estimate takes it, equals ``log_prob``."""
    model = linear_two_layer(posterior)
    x = torch.rand(5, DATA_DIM, dtype=torch.float64)
    with torch.no_grad():
        q = model.q(x)
        z, log_q = q.rsample_and_log_prob((3,))
        assert z.shape == (3, 5, Z1 + 2) and q.event_shape == (Z1 + 2,)
        assert torch.allclose(q.log_prob(z), log_q, rtol=0, atol=1e-6)


def test_prior_is_p_z2_times_p_z1_given_z2_with_every_top_prior():
    for prior in options("prior"):
        overrides = [*LINEAR, *sized_overrides("prior", prior, {"init": "random"})]
        model = VAE.from_config(compose_config(overrides), DATA_DIM)
        p = model.p_z()
        z = p.sample((7,))
        assert z.shape == (7, Z1 + 2)
        z1, z2 = z[:, :Z1], z[:, Z1:]
        top = model.prior.top(model.encode_base)
        expected = top.log_prob(z2) + model.prior.conditional(z2).log_prob(z1)
        assert torch.allclose(p.log_prob(z), expected), prior


def test_a_run_reports_the_active_units_of_each_layer(tmp_path):
    cfg = compose_config(["model=hierarchical", "model.z1_dim=6", "latent_dim=3",
                          "posterior=iaf", "prior=vamp", "prior.num_components=5"])  # fmt: skip
    record = execute(cfg, tmp_path, {"posterior": "iaf", "prior": "vamp", "data": "digits"})
    assert record["status"] == "completed", record.get("error")
    metrics = read_metrics(tmp_path)
    z1, z2 = metrics["test/active_units_z1"], metrics["test/active_units_z2"]
    assert 0 <= z1 <= 6 and 0 <= z2 <= 3
    assert z1 + z2 == metrics["test/active_units"]

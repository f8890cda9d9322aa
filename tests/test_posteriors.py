"""Posterior families, built from their configs: densities, sampling, KL, gradients, training."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from tests.conftest import compose_config, distinct_options, options, sized_option, subclass_options
from tests.test_flows import per_point_jacobians
from vae_lab.components.likelihoods import BernoulliLikelihood
from vae_lab.components.networks import mlp_networks
from vae_lab.components.posteriors import (
    DiagonalGaussian,
    FlowDistribution,
    FlowPosterior,
    FullCovGaussian,
    PosteriorFamily,
    RealNVP,
)
from vae_lab.estimators.elbo import analytic_kl, elbo_terms, rsample_with_log_prob
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

FAMILIES = options("posterior")
DISTINCT = distinct_options("posterior")  # not flow, which selects realnvp
FLOWS = subclass_options("posterior", FlowPosterior)

pytestmark = pytest.mark.usefixtures("single_thread")  # many small tensor ops


def build_family(name: str, latent_dim: int, feature_dim: int = 8, **sizes: int) -> PosteriorFamily:
    """The family of conf/posterior/<name>.yaml; ``sizes`` override those of its keys it has."""
    cfg = sized_option("posterior", name, sizes)
    return instantiate(cfg, feature_dim=feature_dim, latent_dim=latent_dim)


def random_q(name: str, latent_dim: int, batch: int, seed: int = 0) -> Distribution:
    """q in float64 from random raw parameters theta, with random shared weights (small
    networks, for speed)."""
    torch.manual_seed(seed)
    family = build_family(name, latent_dim, hidden_dim=16).double()
    with torch.no_grad():
        for p in family.parameters():
            p.normal_(0.0, 0.3)
    return family.distribution(torch.randn(batch, family.num_params, dtype=torch.float64))


def reparameterisation(q: Distribution) -> Callable[[Tensor], Tensor]:
    """eps [S, B, D] -> z, written out from q's parameters: z ~ q when eps ~ N(0, I)."""
    if isinstance(q, FlowDistribution):
        base = reparameterisation(q.base_dist)

        def flow(eps: Tensor) -> Tensor:
            z = base(eps)
            for transform in q.transforms:
                z = transform(z)
            return z

        return flow
    if isinstance(q, MultivariateNormal):
        return lambda eps: q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    assert isinstance(q, Independent) and isinstance(q.base_dist, Normal)
    return lambda eps: q.base_dist.loc + q.base_dist.scale * eps


@pytest.mark.parametrize("name", DISTINCT)
def test_log_prob_of_own_rsample_matches_direct_computation(name):
    """log q(z) = log N(eps; 0, I) - log |det dz/deps| at the samples the ELBO core draws."""
    assert_log_q_is_the_change_of_variables(random_q(name, latent_dim=2, batch=3))


def assert_log_q_is_the_change_of_variables(q: Distribution) -> None:
    """q's samples are its reparameterisation of N(0, I) noise, and their log q equals
    log N(eps; 0, I) - log |det dz/deps| with the Jacobian from autograd."""
    torch.manual_seed(1)
    z, log_q = rsample_with_log_prob(q, 4)
    torch.manual_seed(1)
    eps = torch.randn(4, *q.batch_shape, *q.event_shape, dtype=torch.float64)
    sample = reparameterisation(q)
    assert torch.allclose(z, sample(eps), rtol=0, atol=1e-12)
    torch.manual_seed(1)
    assert torch.allclose(q.rsample((4,)), z, rtol=0, atol=1e-12)
    jac_log_det = torch.linalg.slogdet(per_point_jacobians(sample, eps)).logabsdet
    direct = Normal(0.0, 1.0).log_prob(eps).sum(-1) - jac_log_det
    assert torch.allclose(log_q, direct, rtol=0, atol=1e-6)
    assert torch.allclose(q.log_prob(z), direct, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", DISTINCT)
def test_density_integrates_to_one_on_a_2d_grid(name):
    q = random_q(name, latent_dim=2, batch=1)
    with torch.no_grad():
        samples = q.sample((5000,))[:, 0]
        lo, hi = samples.amin(0) - 1.0, samples.amax(0) + 1.0
        n = 200
        axes = [
            lo[i] + (hi[i] - lo[i]) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
            for i in range(2)
        ]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 1, 2)
        cell = ((hi - lo) / n).prod()
        mass = (q.log_prob(grid).exp().sum() * cell).item()
    assert mass == pytest.approx(1.0, abs=0.01)


def test_full_cov_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    family = FullCovGaussian(feature_dim=8, latent_dim=3).double()
    q = family.distribution(family(torch.randn(4, 8, dtype=torch.float64)))
    prior = Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    kl = analytic_kl(q, prior)
    assert kl is not None
    n = 20000
    z = q.sample((n,))
    terms = q.log_prob(z) - prior.log_prob(z)
    stderr = terms.std(0) / math.sqrt(n)
    assert ((kl - terms.mean(0)).abs() < 3 * stderr).all()


def fit_to_correlated_gaussian(family: PosteriorFamily, rho: float, steps: int = 200) -> float:
    """Maximise ELBO = -KL(q || N(0, [[1, rho], [rho, 1]])) (log p(x) = 0) through the ELBO
    core by Adam steps (cosine-decayed) on the family's weights, for one fixed feature vector;
    the final ELBO, estimated with 1e5 samples."""
    features = torch.randn(1, 8)
    target = MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, rho], [rho, 1.0]]))

    def log_likelihood(z: Tensor) -> Tensor:
        return torch.zeros(z.shape[:-1])

    optimizer = torch.optim.Adam(family.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        q = family.distribution(family(features))
        (-elbo_terms(q, target, log_likelihood, num_samples=32).elbo.mean()).backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        q = family.distribution(family(features))
        return elbo_terms(q, target, log_likelihood, num_samples=100_000).elbo.item()


def test_full_cov_fits_a_correlated_posterior_better_than_diagonal():
    rho = 0.9
    mean_field_optimum = -0.5 * (math.log(1 - rho**2) + 2 * math.log(1 / (1 - rho**2)))
    torch.manual_seed(0)
    diagonal = fit_to_correlated_gaussian(DiagonalGaussian(8, 2), rho)
    torch.manual_seed(0)
    full = fit_to_correlated_gaussian(FullCovGaussian(8, 2), rho)
    assert diagonal == pytest.approx(mean_field_optimum, abs=0.02)  # -0.830
    assert full == pytest.approx(0.0, abs=0.01)
    assert full > diagonal + 0.5


@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_reach_every_encoder_and_posterior_parameter(name):
    torch.manual_seed(0)
    nets = mlp_networks(data_shape=(12,), latent_dim=3, hidden=[16])
    family = build_family(name, latent_dim=3, feature_dim=nets.feature_dim)
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    q = family.distribution(family(nets.encoder(x)))
    prior = Independent(Normal(torch.zeros(3), 1.0), 1)
    likelihood = BernoulliLikelihood(12)
    terms = elbo_terms(q, prior, lambda z: likelihood(nets.decoder(z)).log_prob(x), 2)
    (-terms.elbo.mean()).backward()
    named = [*nets.encoder.named_parameters("encoder"), *family.named_parameters("posterior")]
    for param_name, param in named:
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", FLOWS)
def test_flow_starts_near_the_identity(name):
    """At initialisation q(zK|x) ~ q0: z barely moves from z0 and log |det| is small."""
    torch.manual_seed(0)
    family = build_family(name, latent_dim=16, feature_dim=200)
    assert isinstance(family, FlowPosterior)
    theta = family(torch.tanh(torch.randn(50, 200)))
    torch.manual_seed(1)
    z, log_q = rsample_with_log_prob(family.distribution(theta), 10)
    torch.manual_seed(1)
    base = family.base_distribution(theta)
    z0 = base.rsample((10,))
    assert ((z - z0).norm(dim=-1) / z0.norm(dim=-1)).max() < 0.1
    assert (log_q - base.log_prob(z0)).abs().max() < 0.1 * 16


def test_flow_is_realnvp():
    assert isinstance(build_family("flow", latent_dim=4), RealNVP)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_trains_one_epoch_on_digits(name, tmp_path):
    cfg = compose_config([f"posterior={name}", "trainer.limit_train_batches=1.0"])  # all of it
    record = execute(cfg, tmp_path, {"posterior": name, "prior": "standard", "data": "digits"})
    assert record["status"] == "completed", record.get("error")
    metrics = read_metrics(tmp_path)
    for key in ("train/loss", "val/elbo", "test/elbo", "test/log_px", "test/inference_gap"):
        assert math.isfinite(metrics[key]), key

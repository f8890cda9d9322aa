"""The exact ground truth: probabilistic PCA, its datamodule, and a VAE that is one.

``known_ppca_vae`` builds the real config's linear VAE and sets its decoder to a known W, b,
sigma with a strongly non-diagonal W^T W; the other test files use it as ground truth.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.components.data.linear_gaussian import LinearGaussian
from vae_lab.components.ppca import PPCA, ppca_of
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.elbo import iw_log_px
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule

LATENT, DATA, SIGMA = 3, 6, 0.5


def linear_config(posterior: str = "full_cov", *overrides: str):
    return compose_config(
        [
            "data=linear_gaussian",
            "likelihood=gaussian",
            "model=linear",
            f"posterior={posterior}",
            f"latent_dim={LATENT}",
            f"data.data_dim={DATA}",
            *overrides,
        ]
    )


def known_ppca() -> PPCA:
    weight = torch.randn(DATA, LATENT, generator=torch.Generator().manual_seed(1))
    return PPCA(weight, torch.linspace(-1.0, 1.0, DATA), torch.tensor(SIGMA))


def known_ppca_vae(posterior: str, num_points: int = 200) -> tuple[VAE, PPCA, torch.Tensor]:
    """A linear VAE whose decoder is ``known_ppca()``; its encoder gives q(z|x) with the exact
    posterior mean and the family's zero-parameter spread (softplus(0) = 0.69, wider than the
    posterior); and ``num_points`` datapoints drawn from the model."""
    ppca = known_ppca()
    model = VAE.from_config(linear_config(posterior), DATA)
    with torch.no_grad():
        decoder = model.decoder[0]
        decoder.weight.copy_(ppca.weight)
        decoder.bias.copy_(ppca.bias)
        model.likelihood.log_scale.fill_(math.log(SIGMA))
        # the first LATENT raw parameters are the mean for the Gaussian families
        m = ppca.weight.T @ ppca.weight + SIGMA**2 * torch.eye(LATENT, dtype=torch.float64)
        mean_map = torch.linalg.solve(m, ppca.weight.T)  # E[z|x] = mean_map (x - b)
        head = model.posterior.head
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:LATENT] = mean_map.float()
        head.bias[:LATENT] = -(mean_map @ ppca.bias).float()
    model.requires_grad_(False)
    x = ppca.sample(num_points, torch.Generator().manual_seed(2)).float()
    return model, ppca, x


def exact_diagonal_kl(ppca: PPCA) -> float:
    """KL(best diagonal Gaussian || posterior) = 1/2 (sum_i log Lambda_ii - log det Lambda)."""
    precision = ppca.posterior_precision()
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


def test_known_model_has_a_strongly_correlated_posterior():
    assert exact_diagonal_kl(known_ppca()) > 0.5  # the diagonal family's gap is far from 0


def test_bayes_rule_holds_exactly():
    """log p(x) = log p(x|z) + log p(z) - log p(z|x) at any z: ties marginal and posterior."""
    model, ppca, x = known_ppca_vae("full_cov", num_points=5)
    z = torch.randn(4, 5, LATENT, dtype=torch.float64)
    joint = torch.distributions.Normal(z @ ppca.weight.T + ppca.bias, ppca.sigma).log_prob(x).sum(
        -1
    ) + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    expected = joint - ppca.posterior(x).log_prob(z)
    torch.testing.assert_close(ppca.marginal().log_prob(x.double()).expand(4, 5), expected)


def test_ppca_of_reads_the_decoder_as_trained():
    model, ppca, x = known_ppca_vae("gaussian", num_points=5)
    found = ppca_of(model)
    torch.testing.assert_close(found.marginal().log_prob(x), ppca.marginal().log_prob(x))
    assert ppca_of(VAE.from_config(compose_config(), 64)) is None  # the MLP Bernoulli VAE


def test_iw_estimate_reaches_the_exact_log_px_and_rises_with_k():
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian")
    exact = ppca.marginal().log_prob(x.double()).mean()
    means = []
    for k in (1, 10, 100, 2000):
        estimate = iw_log_px(model.q(x), model.p_z(), model.log_likelihood(x), k, 500)
        means.append(float(estimate.log_px.value.mean()))
    stderr = estimate.log_px.figure().stderr
    assert means == sorted(means) and means[-1] - means[0] > 0.5
    assert abs(means[-1] - float(exact)) < 3 * stderr


def test_datamodule_draws_seeded_data_from_its_model():
    cfg = linear_config()
    first, second = build_datamodule(cfg), build_datamodule(cfg)
    first.setup()
    second.setup()
    assert isinstance(first, LinearGaussian) and first.data_dim == DATA
    assert [len(s) for s in first.splits] == [5000, 1000, 1000]
    for a, b in zip(first.splits, second.splits, strict=True):
        assert torch.equal(a, b)
    train = first.splits[0].double()
    model_cov = first.ppca.marginal().covariance_matrix
    torch.testing.assert_close(train.T.cov(), model_cov, atol=0.25, rtol=0.1)
    assert first.exact_log_px(first.splits[2]).shape == (1000,)


def test_datamodule_refuses_a_bernoulli_likelihood():
    datamodule = build_datamodule(linear_config("gaussian", "likelihood=bernoulli"))
    with pytest.raises(ConfigError, match="likelihood=gaussian"):
        datamodule.setup()

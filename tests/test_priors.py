"""Priors: densities, the Monte Carlo KL path, gradients, data init, and end-to-end training."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.distributions import Normal

from tests.conftest import compose_config, options, sized_option, sized_overrides
from vae_lab.components.posteriors import DiagonalGaussian, FullCovGaussian
from vae_lab.components.priors import LatentMixture, MixtureOfGaussians, VampPrior
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

DATA_DIM = 64  # the digits' 8 x 8


def base_encoder(family: type[nn.Module], data_dim: int, latent_dim: int):
    """A small random encoder u [K, X] -> the family's Gaussian base q0(z|u)."""
    net = nn.Sequential(nn.Linear(data_dim, 8), nn.Tanh())
    posterior = family(8, latent_dim)
    return lambda u: posterior.base_distribution(posterior(net(u)))


# narrow: sigma ~ e^-6, precisions ~1.6e5, where expanding |z - mu|^2 in float32 loses nats
@pytest.mark.parametrize(
    ("latent_dim", "log_scale"), [(3, 0.0), (50, -6.0)], ids=["wide", "narrow"]
)
def test_mixture_log_prob_is_log_sum_exp_over_components(latent_dim, log_scale, monkeypatch):
    torch.manual_seed(0)
    prior = MixtureOfGaussians(latent_dim=latent_dim, data_dim=DATA_DIM, num_components=7)
    with torch.no_grad():
        prior.logits.normal_()
        prior.loc.mul_(3.0)
        prior.log_scale.normal_(log_scale, 0.5)
        scale = prior.log_scale.exp()
        # z near the components, where the log-sum-exp is dominated by the nearest one
        z = prior.loc[torch.randint(7, (40, 5))] + scale.mean() * torch.randn(40, 5, latent_dim)
    monkeypatch.setattr(LatentMixture, "max_elements", 7 * latent_dim * 16)  # 16 rows a chunk
    log_p = prior(base_encoder(DiagonalGaussian, DATA_DIM, latent_dim)).log_prob(z)

    z_k = z.double().unsqueeze(-2)  # [40, 5, 1, D] against the components [7, D]
    log_components = Normal(prior.loc.double(), scale.double()).log_prob(z_k).sum(-1)
    log_weights = torch.log_softmax(prior.logits.double(), 0)
    expected = torch.logsumexp(log_weights + log_components, dim=-1)
    assert log_p.shape == (40, 5) and log_p.dtype == torch.float32
    torch.testing.assert_close(log_p.double(), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("family", [DiagonalGaussian, FullCovGaussian])
def test_vamp_log_prob_is_the_mean_of_the_pseudo_inputs_encoded_bases(family, monkeypatch):
    torch.manual_seed(0)
    prior = VampPrior(3, DATA_DIM, num_components=6, init="random")
    encode_base = base_encoder(family, DATA_DIM, 3)
    z = torch.randn(4, 5, 3)
    monkeypatch.setattr(LatentMixture, "max_elements", 6 * 3 * 4)  # 5 chunks of 4 rows
    bases = encode_base(prior.pseudo_inputs)  # batch shape [6]
    expected = torch.logsumexp(bases.log_prob(z.unsqueeze(-2)), dim=-1) - math.log(6)
    torch.testing.assert_close(prior(encode_base).log_prob(z), expected)
    assert prior.pseudo_inputs.min() > 0 and prior.pseudo_inputs.max() < 1


#: a prior's settings in the density tests, for those of these keys it has: small, and free of
#: a training set (VampPrior's pseudo-inputs start at noise)
PRIOR_SIZES = {"num_components": 10, "num_flows": 2, "hidden_dim": 16, "init": "random"}


@pytest.mark.parametrize("family", [DiagonalGaussian, FullCovGaussian])  # the encoder's (vamp)
@pytest.mark.parametrize("name", options("prior"))
def test_prior_integrates_to_one_on_a_2d_grid(name, family):
    torch.manual_seed(0)
    prior = instantiate(sized_option("prior", name, PRIOR_SIZES), latent_dim=2, data_dim=DATA_DIM)
    axis = torch.linspace(-10, 10, 401)
    step = float(axis[1] - axis[0])
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = prior(base_encoder(family, DATA_DIM, 2)).log_prob(grid).exp()
    assert float(density.sum()) * step**2 == pytest.approx(1.0, abs=0.01)


def test_one_component_mixture_at_standard_normal_matches_standard_prior():
    standard = VAE.from_config(compose_config(), DATA_DIM)
    mixture = VAE.from_config(compose_config(["prior=mixture", "prior.num_components=1"]), DATA_DIM)
    shared = {k: v for k, v in standard.state_dict().items() if not k.startswith("prior.")}
    mixture.load_state_dict(shared, strict=False)
    with torch.no_grad():
        mixture.prior.loc.zero_()  # log_scale and logits start at 0: N(0, I) with weight 1
    x = torch.bernoulli(
        torch.full((100, DATA_DIM), 0.3), generator=torch.Generator().manual_seed(0)
    )

    def elbo_and_log_px(model):
        with torch.no_grad():
            torch.manual_seed(1)
            terms = model.elbo(x, num_samples=500)
            torch.manual_seed(2)
            return terms, model.iw_estimate(x, num_samples=50).log_px.value

    (exact, log_px), (monte_carlo, log_px_mc) = map(elbo_and_log_px, (standard, mixture))
    # the same z in both: equal reconstruction terms, KLs that differ by Monte Carlo error only
    torch.testing.assert_close(monte_carlo.recon, exact.recon)
    assert not torch.equal(monte_carlo.kl, exact.kl)  # analytic for N(0, I), Monte Carlo here
    difference = monte_carlo.elbo - exact.elbo
    standard_error = difference.std() / math.sqrt(len(difference))
    assert abs(float(difference.mean())) < 4 * float(standard_error)
    # the IW estimate uses p.log_prob as is: the same samples give the same estimate
    torch.testing.assert_close(log_px_mc, log_px, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prior", options("prior"))
def test_training_loss_reaches_prior_parameters(prior):
    torch.manual_seed(0)
    overrides = sized_overrides("prior", prior, {"init": "random"})  # no training set here
    model = VAE.from_config(compose_config(overrides), DATA_DIM)
    x = torch.bernoulli(torch.full((50, DATA_DIM), 0.3))
    (-model.elbo(x).elbo.mean()).backward()
    for name, param in model.prior.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_vamp_pseudo_inputs_start_at_distinct_training_images():
    torch.manual_seed(0)
    train = torch.rand(30, DATA_DIM)
    train[:, :8] = 1.0  # binary pixels are pulled inside (0, 1) by the margin
    prior = VampPrior(2, DATA_DIM, num_components=10, init="data")
    prior.init_from_data(train)
    targets = train.clamp(0.05, 0.95)
    distances = (prior.pseudo_inputs.detach()[:, None] - targets).abs().amax(-1)  # [10, 30]
    nearest = distances.min(dim=1)
    assert float(nearest.values.max()) < 1e-5
    assert len(set(nearest.indices.tolist())) == 10


def test_vamp_with_data_init_refuses_to_train_before_it_has_the_data():
    prior = VampPrior(2, DATA_DIM, num_components=10, init="data")
    encode_base = base_encoder(DiagonalGaussian, DATA_DIM, 2)
    with pytest.raises(RuntimeError, match="prior.init=random"):
        prior(encode_base)
    with pytest.raises(ValueError, match="prior.num_components=10 exceeds the 5 training"):
        prior.init_from_data(torch.rand(5, DATA_DIM))
    prior.init_from_data(torch.rand(10, DATA_DIM))
    assert prior(encode_base).sample((3,)).shape == (3, 2)


def test_vamp_rejects_an_unknown_init():
    with pytest.raises(ConfigError, match="^init=zeros is invalid: must be one of data, random"):
        VampPrior(
            2, DATA_DIM, init="zeros"
        )  # vae_lab.training.build adds the group: prior.init=...


@pytest.mark.parametrize("posterior", ["gaussian", "flow"])  # a Gaussian and a flow
@pytest.mark.parametrize("prior", options("prior"))
def test_every_prior_trains_end_to_end_on_digits(prior, posterior, tmp_path):
    cfg = compose_config([f"prior={prior}", f"posterior={posterior}"])
    execute(cfg, tmp_path, {"prior": prior, "posterior": posterior, "data": "digits"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    for key in ("test/elbo", "test/kl", "test/log_px"):
        assert math.isfinite(metrics[key]), key
    assert (tmp_path / "prior_samples.png").exists()

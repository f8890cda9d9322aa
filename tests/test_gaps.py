"""q* and the gap split: exact on a known linear-Gaussian model; q* beats the encoder on a
trained digits model for every family, and its residual there is not its Monte Carlo noise; the
batched optimisation is a loop over datapoints."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import CONF_DIR, compose_config
from tests.test_linear_gaussian import exact_diagonal_kl, known_ppca_vae
from vae_lab.estimators import gaps
from vae_lab.estimators.elbo import elbo_terms, iw_log_px
from vae_lab.estimators.estimate import Estimate
from vae_lab.estimators.gaps import (
    QStarFit,
    QStarSettings,
    fit_qstar,
    fixed_noise_elbo,
    moment_matched_theta,
    prior_theta,
)
from vae_lab.estimators.newton import Gaussian, curvature, fit_newton, joint
from vae_lab.estimators.residual import continuation, newton_residual, qstar_residual
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule, build_trainer

FAST_FAMILIES = ("gaussian", "flow")  # full_cov: test_ppca_sizes, against its exact optimum
FAMILIES = sorted(p.stem for p in (CONF_DIR / "posterior").glob("*.yaml"))


def fit(model: VAE, x: torch.Tensor, theta0: torch.Tensor, settings: QStarSettings) -> QStarFit:
    def log_likelihood(rows):
        return model.log_likelihood(x[rows])

    return fit_qstar(model.posterior, model.p_z(), log_likelihood, theta0, settings)


def elbo_of(model: VAE, x: torch.Tensor, q, num_samples: int = 2000) -> Estimate:
    with torch.inference_mode():
        return iw_log_px(q, model.p_z(), model.log_likelihood(x), num_samples, 500).elbo


def encoder_theta(model: VAE, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.posterior(model.encoder(x))


@pytest.mark.slow  # test_ppca_sizes checks the same at 50-D in the default suite
@pytest.mark.parametrize("init", ["encoder", "prior"])
def test_full_covariance_qstar_is_the_true_posterior(init):
    """The approximation gap log p(x) - ELBO(q*) = KL(q* || p(z|x)), here in closed form
    (no Monte Carlo noise), is 0 for the full-covariance family: q* must reach it."""
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("full_cov", num_points=100)
    settings = QStarSettings()
    if init == "encoder":
        theta0 = encoder_theta(model, x)
    else:
        theta0 = prior_theta(model.posterior, model.p_z(), x.shape[0], settings)
    start_gap = exact_gap(model.posterior.distribution(theta0), ppca, x)
    theta = fit(model, x, theta0, settings).theta
    assert start_gap > 0.1
    assert exact_gap(model.posterior.distribution(theta), ppca, x) < 0.003


@pytest.mark.slow  # test_ppca_sizes checks the same at 20-D in the default suite
def test_diagonal_approximation_gap_is_the_exact_kl_to_the_posterior():
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian", num_points=100)
    theta = fit(model, x, encoder_theta(model, x), QStarSettings()).theta
    gap = exact_gap(model.posterior.distribution(theta), ppca, x)
    assert 0 <= gap - exact_diagonal_kl(ppca) < 0.003


def test_qstar_residual_measures_the_elbo_left_to_gain():
    """From the encoder's start (a poor spread) a q* stopped after 20 steps has ELBO left to
    gain, which the residual must see; a converged q* has none left."""
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("full_cov", num_points=50)
    theta0 = encoder_theta(model, x)

    def residual(settings):
        stopped = fit(model, x, theta0, settings)
        figure = qstar_residual(
            model.posterior, model.p_z(), lambda rows: model.log_likelihood(x[rows]), stopped,
            settings, 1000, 500,
        ).figure()  # fmt: skip
        return figure, exact_gap(model.posterior.distribution(stopped.theta), ppca, x)

    early, early_gap = residual(QStarSettings(max_steps=20, newton_steps=0))
    assert early.value > 10 * early.stderr and early.value > 0.1 * early_gap
    converged, gap = residual(QStarSettings())
    assert abs(converged.value) < 0.003 and converged.stderr < 0.003 and gap < 0.003


def test_elbo_estimate_has_the_monte_carlo_variance_of_log_w():
    torch.manual_seed(0)
    model, _, x = known_ppca_vae("gaussian", num_points=3)
    repeats = torch.stack([elbo_of(model, x, model.q(x), 50).value for _ in range(400)])
    predicted = elbo_of(model, x, model.q(x), 50_000).variance * 1000  # Var of a 50-sample mean
    torch.testing.assert_close(repeats.var(0), predicted, rtol=0.2, atol=0)


def test_batched_qstar_equals_a_loop_over_datapoints_exactly():
    """A deterministic objective (-KL(q || p(z)), analytic) from different starts: the batch
    must give each datapoint what optimising it alone gives, step for step."""
    model, _, x = known_ppca_vae("gaussian", num_points=4)
    theta0 = encoder_theta(model, x) * torch.linspace(0.5, 2.0, 4)[:, None]
    settings = QStarSettings(
        check_every=10, patience=1, num_decays=2, gradient="reparam", newton_steps=0
    )  # the Adam loop: Newton's updates take every datapoint to its optimum at once

    def no_likelihood(z):
        return z.new_zeros(z.shape[:-1])

    def run(start):
        return fit_qstar(model.posterior, model.p_z(), lambda rows: no_likelihood, start, settings)

    batched = run(theta0)
    alone = [run(theta0[i : i + 1]) for i in range(4)]
    torch.testing.assert_close(batched.theta, torch.cat([a.theta for a in alone]))
    assert batched.converged.all() and all(a.converged.all() for a in alone)
    assert batched.steps == max(a.steps for a in alone)
    assert len({a.steps for a in alone}) > 1  # the datapoints converged at different steps


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory) -> Callable[[str], tuple[VAE, torch.Tensor]]:
    """posterior -> a digits VAE trained for two epochs, and 20 test points (cached)."""

    @functools.cache
    def train(posterior: str) -> tuple[VAE, torch.Tensor]:
        cfg = compose_config(
            [f"posterior={posterior}", "trainer.max_epochs=2", "trainer.limit_train_batches=null"]
        )
        torch.manual_seed(0)
        datamodule = build_datamodule(cfg)
        model = VAE.from_config(cfg, datamodule.data_dim)
        trainer = build_trainer(cfg, tmp_path_factory.mktemp(posterior), None)
        trainer.fit(model, datamodule=datamodule)
        return model.eval().requires_grad_(False), datamodule.splits[2][:20]

    return train


@pytest.mark.slow  # checked exactly, step for step, by the test above
def test_batched_qstar_matches_a_loop_on_a_trained_model(trained_digits):
    model, x = trained_digits("gaussian")
    x = x[:3]
    settings = QStarSettings(max_steps=200)
    theta0 = encoder_theta(model, x)
    torch.manual_seed(0)
    batched = fit(model, x, theta0, settings).theta
    alone = torch.cat(
        [fit(model, x[i : i + 1], theta0[i : i + 1], settings).theta for i in range(3)]
    )
    both = torch.cat([batched, alone])
    elbo = elbo_of(model, torch.cat([x, x]), model.posterior.distribution(both))
    difference = elbo.value[:3] - elbo.value[3:]
    stderr = (elbo.variance[:3] + elbo.variance[3:]).sqrt()
    assert (difference.abs() < 0.05 + 4 * stderr).all()


@pytest.mark.parametrize(
    "family",
    [f if f in FAST_FAMILIES else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_qstar_is_at_least_as_good_as_the_encoder(family, trained_digits):
    model, x = trained_digits(family)
    torch.manual_seed(0)
    theta0 = encoder_theta(model, x)
    theta = fit(model, x, theta0, QStarSettings(max_steps=200)).theta
    elbo_q = elbo_of(model, x, model.posterior.distribution(theta0), 500).figure()
    elbo_qstar = elbo_of(model, x, model.posterior.distribution(theta), 500).figure()
    gain = elbo_qstar - elbo_q
    assert gain.value > 3 * gain.stderr  # q* must move: a gain of 0 fails


def test_the_gaussian_residual_near_the_optimum_is_not_its_monte_carlo_noise(trained_digits):
    """Near q*'s optimum on a trained model (not a Gaussian one) the quadratic model's R from
    few draws is high by its Monte Carlo noise, a term in 1/n. The jackknifed residual from the
    default 4 groups of 10 antithetic pairs agrees with one from 4 groups of 100, where the
    plain mean of the 4 groups' R lies above the latter by more than their stderrs."""
    model, x = trained_digits("gaussian")
    torch.manual_seed(0)
    settings = QStarSettings(max_steps=500)
    theta = fit(model, x, encoder_theta(model, x), settings).theta

    def rows(r):
        return model.log_likelihood(x[r])

    few = newton_residual(model.posterior, model.p_z(), rows, theta, settings).figure()
    many = newton_residual(
        model.posterior, model.p_z(), rows, theta, replace(settings, num_samples=100)
    ).figure()
    q = Gaussian.of(model.posterior.distribution(theta))
    log_joint = joint(model.p_z(), model.log_likelihood(x))
    plain = torch.stack([
        curvature(log_joint, q, settings.num_samples, theta.dtype).floored().remaining(q)
        for _ in range(4)
    ]).mean()  # fmt: skip
    tolerance = 3 * math.hypot(few.stderr, many.stderr)
    assert abs(few.value - many.value) <= tolerance
    assert float(plain) - many.value > tolerance


def test_newton_hands_a_datapoint_to_adam_once_its_update_gains_nothing(trained_digits):
    """Away from a Gaussian model the quadratic model's R stays above the tolerance near the
    optimum (its Monte Carlo noise), so Newton hands each datapoint to Adam once an update
    gains less than the tolerance on the fixed noise: here every one leaves before the 20
    updates. The q* that follows is the one Adam alone reaches (their ELBOs on common noise
    agree within 0.01 nats on average), and Newton's updates count against ``max_steps``."""
    model, x = trained_digits("gaussian")
    settings = QStarSettings(max_steps=500)
    theta0 = encoder_theta(model, x)
    calls = []

    def counted(*args, **kwargs):
        calls.append(fit_newton(*args, **kwargs))
        return calls[-1]

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gaps, "fit_newton", counted)
        theta = fit(model, x, theta0, settings).theta
    (newton,) = calls
    assert 0 < newton.steps < settings.newton_steps
    torch.manual_seed(0)
    adam_only = fit(model, x, theta0, replace(settings, newton_steps=0)).theta
    noise = torch.randn(2000, 1, model.posterior.latent_dim).expand(-1, len(x), -1)
    elbo = [
        fixed_noise_elbo(model.posterior.distribution(t), model.p_z(), model.log_likelihood(x),
                         noise)
        for t in (theta, adam_only)
    ]  # fmt: skip
    assert abs(float((elbo[0] - elbo[1]).mean())) < 0.01
    assert fit(model, x, theta0, replace(settings, max_steps=30)).steps <= 30
    assert fit(model, x, theta0, replace(settings, max_steps=1)).steps <= 1  # Newton's too


def test_the_release_probe_runs_no_newton_update(trained_digits):
    """The probe of ``fit_released`` continues the stochastic ascent where it stopped: a
    Gaussian family's probe runs no Newton update (each costs D Hessian-vector products per
    sample, at 4 times the samples)."""
    model, x = trained_digits("gaussian")
    found = fit(model, x, encoder_theta(model, x), QStarSettings(max_steps=100, newton_steps=0))
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gaps, "fit_newton", lambda *a, **k: calls.append(a) or fit_newton(*a, **k))
        continuation(
            model.posterior, model.p_z(), lambda r: model.log_likelihood(x[r]), found,
            QStarSettings(residual_steps=20), 100, 100,
        )  # fmt: skip
    assert calls == []


def family_in_3d(name: str):
    """A posterior family over R^3 (features of size 4) and the prior N(0, I)."""
    cfg = compose_config([f"posterior={name}", "latent_dim=3"])
    family = instantiate(cfg.posterior, feature_dim=4, latent_dim=3)
    normal = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    return family, torch.distributions.Independent(normal, 1)


# Only the Gaussian part of theta is matched: families whose prior fit leaves per-datapoint
# flow layers away from the identity (iaf, planar, sylvester) start near, not at, the moments.
@pytest.mark.parametrize("name", ["gaussian", "full_cov", "flow"])
def test_a_moment_matched_start_has_the_mean_and_spread_of_the_other_q(name):
    """A q* of another family starts at the moments of the encoder's q: here a correlated
    Gaussian, matched by a family whose other parameters are those of its prior fit."""
    torch.manual_seed(0)
    family, prior = family_in_3d(name)
    settings = QStarSettings(max_steps=300)
    start = prior_theta(family, prior, 2, settings)
    loc = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    cov = torch.tensor([[0.5, 0.2, 0.0], [0.2, 0.3, 0.0], [0.0, 0.0, 0.01]])
    other = torch.distributions.MultivariateNormal(loc, cov.expand(2, 3, 3))
    with torch.no_grad():
        theta = moment_matched_theta(family, other, start, num_samples=20000)
        z = family.distribution(theta).sample((20000,))
    torch.testing.assert_close(z.mean(0), loc, atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), cov.diagonal().sqrt().expand(2, 3), atol=0.0, rtol=0.1)


@pytest.mark.parametrize("name", ["planar", "sylvester"])
def test_qstar_from_the_prior_is_not_stuck_at_the_identity_saddle(name):
    """With all-zero layer parameters no gradient reaches a planar or Sylvester layer; q* from
    the prior must start off that saddle, so that its flow layers can move."""
    torch.manual_seed(0)
    family, prior = family_in_3d(name)
    theta = prior_theta(family, prior, 2, QStarSettings(max_steps=100)).clone()
    theta.requires_grad_(True)
    target = torch.tensor([1.5, -0.5, 2.0])

    def log_likelihood(z):  # a non-Gaussian posterior: a ring around the target
        return -8.0 * ((z - target).norm(dim=-1) - 1.0) ** 2

    torch.manual_seed(1)
    elbo = elbo_terms(family.distribution(theta), prior, log_likelihood, 64).elbo.sum()
    (grad,) = torch.autograd.grad(elbo, theta)
    layers = grad[:, 2 * 3 :]
    assert float(layers.abs().max()) > 1e-4


def exact_gap(q, ppca, x: torch.Tensor) -> float:
    """KL(q || p(z|x)) = log p(x) - ELBO(q), averaged over x, in closed form (float64) for a
    diagonal or full-covariance Gaussian q."""
    if isinstance(q, torch.distributions.Independent):
        tril = torch.diag_embed(q.base_dist.scale)
    else:
        tril = q.scale_tril
    q64 = torch.distributions.MultivariateNormal(q.mean.double(), scale_tril=tril.double())
    return float(torch.distributions.kl_divergence(q64, ppca.posterior(x)).mean())

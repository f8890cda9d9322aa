"""The objective group: IWAE's bound against the ELBO, the STL and DReG gradient estimators
against the reparameterised gradient, semi-amortized refinement, and a sweep over objectives.

The gradient tests use the probabilistic-PCA VAE of ``test_linear_gaussian`` (exact posterior
known) with one datapoint replicated N times: the gradient of each replicate's bound with
respect to its own raw parameters theta is one independent draw of the estimator.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import (
    CONF_DIR,
    checkpoint_model,
    compose_config,
    options,
    report_cli,
    sized_overrides,
)
from tests.test_linear_gaussian import known_ppca_vae, linear_config
from tests.test_sweeps import run_sweep, table_rows
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.elbo import elbo_terms
from vae_lab.model.module import VAE
from vae_lab.model.objectives import ELBO, IWAE, Objective, SemiAmortized
from vae_lab.run import execute

DRAWS = 20000  # replicates of the datapoint: estimator draws per gradient test


def bound_of(model, objective: Objective, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return objective.loss(model, x, step=10**9).bound


@pytest.mark.parametrize("posterior", options("posterior"))
def test_iwae_with_one_sample_is_the_elbo_on_the_same_draws(posterior):
    model = VAE.from_config(compose_config([f"posterior={posterior}"]), 64)
    x = (torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    elbo = bound_of(model, ELBO(), x)
    assert torch.equal(bound_of(model, IWAE(num_samples=1), x), elbo)
    assert not torch.equal(bound_of(model, IWAE(num_samples=1), x, seed=1), elbo)  # draws matter


def test_iwae_bound_of_a_fixed_model_rises_with_k():
    model = VAE.from_config(compose_config(), 64)
    x = (torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    x = x.repeat(250, 1)  # 250 draws of each datapoint's bound
    means, errors = [], []
    with torch.no_grad():
        for k in (1, 5, 50):
            bound = bound_of(model, IWAE(num_samples=k), x).view(250, 8).mean(1)
            means.append(bound.mean())
            errors.append(bound.std() / math.sqrt(250))
    for i in range(2):
        assert means[i + 1] - means[i] > 4 * math.hypot(errors[i], errors[i + 1]), means


def theta_grads(model, objective: Objective, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each datapoint's gradient of its bound with respect to its own theta, [B, P]."""
    captured = []
    handle = model.posterior.register_forward_hook(lambda m, i, out: captured.append(out))
    torch.manual_seed(seed)
    try:
        loss = objective.loss(model, x, step=10**9).loss
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(loss, captured[-1])
    return -grad * x.shape[0]


def ppca_replicates(posterior: str) -> tuple:
    model, ppca, x = known_ppca_vae(posterior, num_points=1)
    model.posterior.requires_grad_(True)
    return model, ppca, x.expand(DRAWS, -1)


def assert_same_mean(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal means per coordinate within 4.5 standard errors of their difference."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4.5 * se + 1e-6).all(), (a.mean(0), b.mean(0), se)


def total_variance(g: torch.Tensor) -> float:
    return float(g.var(0).sum())


def test_stl_gradient_is_unbiased_and_vanishes_at_the_exact_posterior():
    model, ppca, x = ppca_replicates("full_cov")
    reparam = theta_grads(model, ELBO(), x)
    stl = theta_grads(model, ELBO(gradient="stl"), x, seed=1)
    assert reparam.abs().mean() > 0.01  # q's spread is not the posterior's: a real gradient
    assert_same_mean(stl, reparam)

    d = model.posterior.latent_dim  # set q's Cholesky factor to the exact posterior's
    scale = torch.linalg.cholesky(torch.linalg.inv(ppca.posterior_precision())).float()
    with torch.no_grad():
        bias = model.posterior.head.bias
        bias[d:] = model.posterior.gaussian_params(bias[:d], scale)[d:]
    reparam = theta_grads(model, ELBO(), x)
    stl = theta_grads(model, ELBO(gradient="stl"), x, seed=1)
    assert_same_mean(stl, reparam)  # both ~0 in expectation at the optimum
    assert total_variance(reparam) > 0.1
    assert total_variance(stl) < 1e-6 * total_variance(reparam)


def test_dreg_encoder_gradient_is_unbiased_with_less_variance_as_k_grows():
    """Measured here: Var[DReG] / Var[reparam] = 0.94, 0.66, 0.025 at K = 1, 5, 50."""
    model, _, x = ppca_replicates("gaussian")
    ratios = []
    for k in (1, 5, 50):
        xk = x[: DRAWS // k * 2]  # the same cost at each K
        reparam = theta_grads(model, IWAE(num_samples=k), xk)
        dreg = theta_grads(model, IWAE(num_samples=k, gradient="dreg"), xk, seed=1)
        assert_same_mean(dreg, reparam)
        ratios.append(total_variance(dreg) / total_variance(reparam))
    assert ratios[0] > 0.8 * ratios[1] > 0.8 * 10 * ratios[2], ratios


@pytest.mark.parametrize("posterior", options("posterior"))
def test_stl_and_dreg_are_refused_up_front_where_log_q_needs_a_numerical_inverse(posterior):
    for objective, gradient in (("elbo", "stl"), ("iwae", "dreg")):
        cfg = compose_config([f"posterior={posterior}", f"objective={objective}",
                              f"objective.gradient={gradient}"])  # fmt: skip
        if VAE.from_config(compose_config([f"posterior={posterior}"]), 64).posterior.exact_log_prob:
            VAE.from_config(cfg, 64)
            continue
        with pytest.raises(ConfigError) as err:
            VAE.from_config(cfg, 64)
        message = str(err.value)
        assert "\n" not in message and message.startswith("objective.gradient=")
        assert "gaussian" in message and "realnvp" in message and posterior not in message


@pytest.mark.parametrize("objective", options("objective"))
def test_every_objective_trains_every_family_under_every_prior(objective):
    """One training step of each family x prior: a finite loss whose gradient reaches the
    encoder and the decoder, and where it refines q, a finite refined q under inference mode."""
    x = (torch.rand(8, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for posterior in options("posterior"):
        for prior in options("prior"):
            cfg = compose_config(
                [
                    f"objective={objective}",
                    f"posterior={posterior}",
                    *sized_overrides("prior", prior, {"init": "random"}),  # no training set here
                ]
            )
            model = VAE.from_config(cfg, 64)
            loss = model.objective.loss(model, x, step=0).loss
            loss.backward()
            assert torch.isfinite(loss), (posterior, prior)
            for net in (model.encoder, model.decoder):
                assert any(p.grad is not None and p.grad.abs().sum() > 0
                           for p in net.parameters()), (posterior, prior)  # fmt: skip
            if model.objective.refines:  # the refined q of the evaluation's refined stage
                with torch.inference_mode():
                    theta = model.objective.refined_theta(model, x)
                assert torch.isfinite(theta).all(), (posterior, prior)


def test_unknown_gradient_is_a_one_line_error():
    with pytest.raises(ConfigError, match="objective.gradient=dreg is invalid: must be one of"):
        VAE.from_config(compose_config(["objective.gradient=dreg"]), 64)


@pytest.mark.parametrize("backprop", [True, False])
def test_savae_with_no_refinement_is_the_elbo(backprop):
    model = VAE.from_config(compose_config(["posterior=flow"]), 64)
    x = (torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    savae = SemiAmortized(refine_steps=0, refine_backprop=backprop)
    assert torch.equal(bound_of(model, savae, x), bound_of(model, ELBO(), x))


@pytest.mark.parametrize("backprop", [True, False])
def test_savae_loss_is_the_same_number_without_gradients(backprop):
    model = VAE.from_config(compose_config(["posterior=flow"]), 64)
    x = (torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    savae = SemiAmortized(refine_steps=3, refine_backprop=backprop)
    with_grad = bound_of(model, savae, x)
    with torch.no_grad():
        torch.testing.assert_close(bound_of(model, savae, x), with_grad.detach())


@pytest.mark.parametrize("likelihood", options("likelihood"))
def test_savae_trains_the_encoder_through_the_refinement(likelihood):
    """With refine_backprop=true the encoder's gradient is that of ELBO(x; theta_T(theta_0)),
    checked against finite differences of the whole loss (in float64), with the curvature of
    each likelihood's log-density in it."""
    model = VAE.from_config(linear_config("gaussian", f"likelihood={likelihood}"), 6).double()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x if likelihood == "gaussian" else (x > 0).double()
    savae = SemiAmortized(refine_steps=3, refine_lr=0.05, refine_backprop=True)
    bias = model.posterior.head.bias

    def loss() -> torch.Tensor:
        torch.manual_seed(0)
        return savae.loss(model, x, 0).loss

    (grad,) = torch.autograd.grad(loss(), bias)
    direction = torch.randn(bias.shape, generator=torch.Generator().manual_seed(1)).double()
    eps = 1e-5
    values = []
    for shift in (eps, -2 * eps, eps):
        with torch.no_grad():
            bias += shift * direction
        values.append(loss().detach())
    finite = (values[0] - values[1]) / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(float(finite), rel=1e-4)
    torch.manual_seed(0)
    own = -SemiAmortized(refine_steps=0).loss(model, x, 0).loss
    (own_grad,) = torch.autograd.grad(-own, bias)
    assert not torch.allclose(grad, own_grad, rtol=1e-3)  # not the encoder's own ELBO


def test_refined_q_has_a_higher_elbo_on_every_batch_of_a_trained_model(tmp_path):
    overrides = ["objective=savae", "trainer.limit_train_batches=null", "eval.num_samples=50"]
    cfg = compose_config(overrides)
    record = execute(cfg, tmp_path, {"objective": "savae"})
    assert record["status"] == "completed"
    assert record["test/elbo_refined"] > record["test/elbo"]
    assert math.isfinite(record["test/log_px_refined"])

    model, datamodule = checkpoint_model(cfg, tmp_path / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)
    for x in datamodule.test_dataloader():
        theta0 = model.posterior(model.encoder(x))
        theta = model.objective.refine(model, x, theta0, create_graph=False)
        with torch.no_grad():
            gain = elbo_of(model, x, theta) - elbo_of(model, x, theta0)
        assert gain.mean() > -3 * gain.std() / math.sqrt(len(gain)), gain.mean()


def elbo_of(model, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each datapoint's ELBO under q = distribution(theta), from 100 samples of z."""
    q = model.posterior.distribution(theta)
    return elbo_terms(q, model.p_z(), model.log_likelihood(x), 100).elbo


@pytest.mark.slow
def test_sweep_over_objectives_gives_one_report_row_each(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, f"objective={','.join(options('objective'))}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert report_cli(str(sweep_dir)).returncode == 0
    rows = table_rows((sweep_dir / "report.md").read_text())
    assert [row[:3] for row in rows] == [["gaussian", "standard", o] for o in options("objective")]


def test_objectives_preset_sweeps_existing_options_on_mnist_short():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["experiment=objectives"], return_hydra_config=True)
    grid = cfg.hydra.sweeper.params
    for group in ("objective", "posterior"):
        for option in grid[group].split(","):
            assert (CONF_DIR / group / f"{option}.yaml").exists(), (group, option)
    assert (cfg.latent_dim, cfg.trainer.max_epochs, cfg.data._target_) == (
        50,
        20,
        "vae_lab.components.data.IDXImages",
    )

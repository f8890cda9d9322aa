"""AIS against the exact log p(x) of a known linear-Gaussian model."""

from __future__ import annotations

import logging
import math

import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from tests.test_linear_gaussian import known_ppca_vae
from tests.test_ppca_sizes import Size, ppca_vae
from vae_lab.components.posteriors.flow import FlowDistribution, FlowTransform
from vae_lab.estimators.ais import (
    ChainState,
    ais_log_px,
    ess_fraction,
    hmc_transition,
    jackknife_shortfall,
    sigmoid_schedule,
    warn_if_biased,
)
from vae_lab.estimators.estimate import Figure


def test_sigmoid_schedule_rises_from_zero_to_one():
    betas = sigmoid_schedule(50)
    assert betas.shape == (51,) and betas[0] == 0.0 and betas[-1] == 1.0
    assert (betas.diff() > 0).all()


def exact_posterior(ppca, x) -> MultivariateNormal:
    post = ppca.posterior(x)
    return MultivariateNormal(post.loc.float(), scale_tril=post.scale_tril.float())


def test_ais_from_the_true_posterior_is_exact_whatever_the_moves():
    """With q0 = p(z|x), log p(x, z) - log q0(z) = log p(x) at every z: each chain's weight is
    exactly log p(x), which checks the weight bookkeeping."""
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian", num_points=20)
    estimate = ais_log_px(
        exact_posterior(ppca, x), model.p_z(), model.log_likelihood(x), 30, 4, leapfrog_steps=3
    )
    exact = ppca.marginal().log_prob(x.double())
    torch.testing.assert_close(estimate.log_px.value, exact, atol=1e-3, rtol=0)
    assert estimate.log_px.variance.max() < 1e-6


def test_hmc_leaves_the_posterior_invariant():
    """Chains started at exact posterior samples stay distributed as the posterior."""
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian", num_points=2)
    posterior, prior = exact_posterior(ppca, x), model.p_z()

    def log_joint(z):
        return model.log_likelihood(x)(z) + prior.log_prob(z)

    chains = 4000
    state = ChainState.at(posterior.sample((chains,)), posterior.log_prob, log_joint)
    accepted = []
    for _ in range(10):
        step = torch.full((1, 2, 1), 0.2)
        state, accept = hmc_transition(state, 1.0, step, 5, posterior.log_prob, log_joint)
        accepted.append(accept.mean())
    assert 0.3 < float(torch.stack(accepted).mean()) < 0.99  # Metropolis-Hastings is at work
    z = state.z.double()
    std = posterior.stddev.double()
    mean_error = (z.mean(0) - posterior.loc) / (std / chains**0.5)
    assert mean_error.abs().max() < 4.5
    cov = torch.stack([z[:, i].T.cov() for i in range(2)])
    torch.testing.assert_close(cov, posterior.covariance_matrix.double(), atol=0.01, rtol=0.1)


def test_ais_weights_are_unbiased_for_p_x():
    """E[p^(x)] = p(x) exactly, whatever the schedule's length (Neal 2001), so the mean of
    p^(x) / p(x) over 10,000 independent runs is 1 within 3 of its stderrs. A schedule adapted
    on-line from the chains' own acceptances breaks this, upwards: with one chain, 30 steps and
    one leapfrog step, ffe237f's factor 1.02 gives +0.013 (4.5 stderrs), the factor 1.1 run
    on-line +0.025 (10 stderrs); the frozen pilot schedule -0.004 (1.5)."""
    torch.manual_seed(0)
    model, ppca, x = ppca_vae(Size(10, 2, 0.5, "gaussian", 1.5), num_points=20)
    copies = 500
    xs = x.repeat(copies, 1)
    with torch.no_grad():
        q = model.q(xs)
    estimate = ais_log_px(
        q, model.p_z(), model.log_likelihood(xs), 30, 1, leapfrog_steps=1, step_size=0.5
    )
    ratio = (estimate.log_px.value - ppca.marginal().log_prob(x.double()).repeat(copies)).exp()
    stderr = float(ratio.std() / math.sqrt(len(ratio)))
    assert abs(float(ratio.mean()) - 1) < 3 * stderr, (float(ratio.mean()), stderr)
    assert stderr < 0.005  # a test with the power to see the adapted schedule's bias


def test_jackknife_shortfall_and_ess_over_chains():
    """The jackknife estimate of log p(x) - E[log mean_c w_c] equals Var[w] / (2 C) to first
    order for light-tailed weights, and the ESS of equal weights is all of them."""
    torch.manual_seed(0)
    chains, sigma = 64, 0.1
    log_w = sigma * torch.randn(chains, 4000, dtype=torch.float64)
    shortfall = jackknife_shortfall(log_w)
    expected = (math.exp(sigma**2) - 1) / (2 * chains)  # Var[w] / (2 C E[w]^2), w lognormal
    torch.testing.assert_close(shortfall.mean().item(), expected, rtol=0.1, atol=0)
    assert (shortfall >= 0).all()
    torch.testing.assert_close(ess_fraction(torch.zeros(8, 3)), torch.ones(3, dtype=torch.float64))
    one_chain = torch.tensor([[0.0], [-800.0]])
    assert float(ess_fraction(one_chain)) == 0.5 and float(jackknife_shortfall(one_chain)) > 100


def test_short_ais_on_a_wide_posterior_flags_itself(caplog):
    """Too short an annealing from too wide a q: AIS lies below exact by more than its
    stderr; its stated bias (the sandwich with reverse chains) covers that and says so in one
    line; the jackknife sees part of it."""
    torch.manual_seed(0)
    model, ppca, x = ppca_vae(Size(20, 5, 0.5, "gaussian", 3.0), num_points=200)
    with torch.no_grad():
        q = model.q(x)
    estimate = ais_log_px(
        q, model.p_z(), model.log_likelihood(x), 10, 4, leapfrog_steps=2, reverse=True
    )
    figure, bias = estimate.log_px.figure(), estimate.bias()
    exact = float(ppca.marginal().log_prob(x.double()).mean())
    assert exact - figure.value > 3 * figure.stderr  # the stated error misses the bias ...
    assert float(estimate.shortfall.mean()) > figure.stderr  # ... which the jackknife sees
    assert bias.value > exact - figure.value  # and the sandwich covers
    with caplog.at_level(logging.WARNING):
        assert warn_if_biased(figure, bias, 0.5, suggest_bdmc=True)
        assert not warn_if_biased(figure, Figure(0.4, 0.1), 0.5, suggest_bdmc=True)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("eval/log_px_ais = ") and "eval.bdmc=true" in message


def test_ais_is_within_a_tenth_of_a_nat_of_the_exact_log_px():
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian", num_points=50)
    estimate = ais_log_px(
        model.q(x), model.p_z(), model.log_likelihood(x), 200, 8, leapfrog_steps=5
    )
    exact = float(ppca.marginal().log_prob(x.double()).mean())
    assert abs(float(estimate.log_px.value.mean()) - exact) < 0.1
    assert 0.4 < float(estimate.accept_rate.mean()) < 1.0


def test_ais_anneals_from_a_flow_posterior_itself_not_from_its_base():
    """q = T#q0 with T(z0) = m + L z0 mapping a standard-normal base onto the exact posterior
    N(m, L L^T): annealing from q, every weight is exactly log p(x), even with 3 steps. From
    the base q0 = N(0, I), far from the posterior, 3 steps would be tens of nats short."""
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian", num_points=20)
    post = exact_posterior(ppca, x)
    base = Independent(Normal(torch.zeros_like(post.loc), torch.ones_like(post.loc)), 1)
    to_posterior = ExactAffine(post.loc, post.scale_tril)
    q = FlowDistribution(base, [to_posterior])
    estimate = ais_log_px(q, model.p_z(), model.log_likelihood(x), 3, 4, leapfrog_steps=2)
    exact = ppca.marginal().log_prob(x.double())
    torch.testing.assert_close(estimate.log_px.value, exact, atol=1e-3, rtol=0)
    from_base = ais_log_px(base, model.p_z(), model.log_likelihood(x), 3, 4, leapfrog_steps=2)
    assert float((exact - from_base.log_px.value).mean()) > 1.0


class ExactAffine(FlowTransform):
    """z = m + L z0 for per-datapoint m [B, D] and lower-triangular L [B, D, D]."""

    def __init__(self, loc, scale_tril) -> None:
        super().__init__()
        self.loc, self.scale_tril = loc, scale_tril

    def forward_and_log_det(self, x):
        z = self.loc + (self.scale_tril @ x.unsqueeze(-1)).squeeze(-1)
        log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return z, log_det.expand(x.shape[:-1])

"""AIS against the exact log p(x) of a known linear-Gaussian model."""

from __future__ import annotations

import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from tests.test_linear_gaussian import known_ppca_vae
from vae_lab.ais import ChainState, ais_log_px, hmc_transition, sigmoid_schedule
from vae_lab.posteriors.flow import FlowDistribution, FlowTransform


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


def test_ais_is_within_a_tenth_of_a_nat_of_the_exact_log_px():
    torch.manual_seed(0)
    model, ppca, x = known_ppca_vae("gaussian")
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

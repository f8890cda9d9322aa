"""The ELBO core against hand computations and the exact log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from vae_lab.components.posteriors.gaussian import diagonal_gaussian
from vae_lab.estimators.elbo import analytic_kl, elbo_terms, iw_log_px, log_importance_weights


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def standard_normal(d: int) -> Distribution:
    return Independent(Normal(torch.zeros(d), torch.ones(d)), 1)


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): p(x) = N(b, W W^T + sigma^2 I) exactly,
    and p(z|x) = N(S W^T (x - b) / sigma^2, S) with S = sigma^2 (W^T W + sigma^2 I)^-1."""

    def __init__(self, latent: int = 3, data: int = 5, sigma: float = 0.5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(data, latent, generator=g)
        self.b = torch.randn(data, generator=g)
        self.sigma = sigma
        self.prior = standard_normal(latent)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.W.shape[0], generator=g)

    def log_likelihood(self, x):
        return lambda z: Independent(Normal(z @ self.W.T + self.b, self.sigma), 1).log_prob(x)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0])
        return MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self, x) -> MultivariateNormal:
        d = self.W.shape[1]
        cov = self.sigma**2 * torch.linalg.inv(self.W.T @ self.W + self.sigma**2 * torch.eye(d))
        mean = (x - self.b) @ self.W @ cov / self.sigma**2
        return MultivariateNormal(mean, cov.expand(x.shape[0], d, d))


def diagonal_approximation(model: LinearGaussian, x, inflate: float = 1.5) -> Distribution:
    """A deliberately imperfect q: the exact posterior mean with inflated marginal scales."""
    exact = model.exact_posterior(x)
    scale = exact.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * inflate
    return Independent(Normal(exact.mean, scale), 1)


def test_log_weights_equal_a_hand_computation():
    torch.manual_seed(0)
    x = torch.tensor([[1.0, 0.0, 1.0]])
    q = Independent(Normal(torch.tensor([[0.3, -0.2]]), torch.tensor([[0.5, 2.0]])), 1)
    a = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-2.0, 1.0]])
    log_lik = lambda z: torch.distributions.Bernoulli(logits=z @ a.T).log_prob(x).sum(-1)  # noqa: E731
    log_w, z = log_importance_weights(q, standard_normal(2), log_lik, 4)
    for k in range(4):
        zk = z[k, 0]
        logits = a @ zk
        log_px_z = sum(
            xi * math.log(torch.sigmoid(li)) + (1 - xi) * math.log(1 - torch.sigmoid(li))
            for xi, li in zip(x[0].tolist(), logits, strict=True)
        )
        log_pz = sum(-0.5 * math.log(2 * math.pi) - 0.5 * v**2 for v in zk.tolist())
        log_qz = sum(
            -0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((v - m) / s) ** 2
            for v, m, s in zip(zk.tolist(), [0.3, -0.2], [0.5, 2.0], strict=True)
        )
        assert log_w[k, 0].item() == pytest.approx(float(log_px_z) + log_pz - log_qz, abs=1e-10)


def test_elbo_terms_match_the_closed_form_of_a_linear_gaussian_model():
    torch.manual_seed(0)
    model = LinearGaussian()
    x = model.sample(4)
    q = diagonal_approximation(model, x)
    mu, s = q.base_dist.loc, q.base_dist.scale
    # E_q[log N(x; Wz + b, sigma^2 I)] and KL(N(mu, s^2) || N(0, I)) by hand
    resid = x - mu @ model.W.T - model.b
    trace = (s**2 @ (model.W**2).T).sum(-1)
    recon = -0.5 * x.shape[1] * math.log(2 * math.pi * model.sigma**2) - (
        (resid**2).sum(-1) + trace
    ) / (2 * model.sigma**2)
    kl = 0.5 * (mu**2 + s**2 - 1 - torch.log(s**2)).sum(-1)
    terms = elbo_terms(q, model.prior, model.log_likelihood(x), num_samples=20000)
    torch.testing.assert_close(terms.kl, kl)  # analytic
    samples = torch.stack(
        [elbo_terms(q, model.prior, model.log_likelihood(x), 1).recon for _ in range(2000)]
    )
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((terms.recon - recon).abs() < 3 * stderr).all(), (terms.recon, recon, stderr)


def test_analytic_kl_equals_monte_carlo():
    torch.manual_seed(0)
    q = diagonal_gaussian(torch.randn(3, 8))
    prior = standard_normal(4)
    z = q.sample((200_000,))
    mc = q.log_prob(z) - prior.log_prob(z)
    stderr = mc.std(0) / math.sqrt(z.shape[0])
    kl = analytic_kl(q, prior)
    assert ((kl - mc.mean(0)).abs() < 3 * stderr).all()


def test_monte_carlo_kl_is_used_when_torch_has_no_closed_form():
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(2)),
        Independent(Normal(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.ones(2, 2)), 1),
    )
    q = diagonal_gaussian(torch.zeros(1, 4))
    assert analytic_kl(q, mixture) is None
    terms = elbo_terms(q, mixture, lambda z: torch.zeros(z.shape[:-1]), num_samples=50_000)
    z = q.sample((200_000,))
    assert terms.kl.item() == pytest.approx(
        (q.log_prob(z) - mixture.log_prob(z)).mean().item(), abs=0.01
    )


def test_iw_estimate_matches_exact_log_px_within_three_standard_errors():
    torch.manual_seed(0)
    model = LinearGaussian()
    x = model.sample(200)
    q = diagonal_approximation(model, x)
    est = iw_log_px(q, model.prior, model.log_likelihood(x), num_samples=5000, chunk_size=700)
    exact = model.exact_log_px(x).mean()
    figure = est.log_px.figure()
    assert abs(figure.value - exact) < 3 * figure.stderr, (figure, exact)
    assert ((est.ess > 1) & (est.ess <= 5000)).all()


def test_iw_estimate_does_not_fall_as_k_grows():
    torch.manual_seed(0)
    model = LinearGaussian()
    x = model.sample(400)
    q = diagonal_approximation(model, x, inflate=2.0)
    estimates = []
    for k in (1, 10, 100, 1000):
        est = iw_log_px(q, model.prior, model.log_likelihood(x), k, chunk_size=250)
        estimates.append((est.log_px.value.mean(), est.log_px.value.std() / math.sqrt(x.shape[0])))
    for (low, low_se), (high, high_se) in zip(estimates, estimates[1:], strict=False):
        assert high > low - 3 * math.hypot(low_se, high_se)
    assert estimates[-1][0] - estimates[0][0] > 0.1  # a real rise, not noise
    assert estimates[-1][0] < model.exact_log_px(x).mean() + 0.01


class Replay(Distribution):
    """A q whose samples and log-densities are replayed from fixed tensors, in chunks."""

    arg_constraints: dict = {}

    def __init__(self, z, log_q):
        self.z, self.log_q, self.used = z, log_q, 0
        super().__init__(batch_shape=z.shape[1:2], event_shape=z.shape[2:], validate_args=False)

    def rsample_and_log_prob(self, sample_shape):
        n = sample_shape[0]
        out = self.z[self.used : self.used + n], self.log_q[self.used : self.used + n]
        self.used += n
        return out


def test_chunked_streaming_logsumexp_equals_one_pass():
    torch.manual_seed(0)
    k, b, d = 1000, 6, 2
    z = torch.randn(k, b, d) * 3
    log_q = torch.randn(k, b) * 20  # wide spread of weights stresses the rescaling
    prior = standard_normal(d)
    log_lik = lambda z: -(z**2).sum(-1)  # noqa: E731
    log_w = log_lik(z) + prior.log_prob(z) - log_q
    w = torch.softmax(log_w, 0)
    est = iw_log_px(Replay(z, log_q), prior, log_lik, num_samples=k, chunk_size=77)
    torch.testing.assert_close(est.log_px.value, torch.logsumexp(log_w, 0) - math.log(k))
    torch.testing.assert_close(est.elbo.value, log_w.mean(0), check_dtype=False)
    torch.testing.assert_close(est.elbo.variance, log_w.var(0) / k, check_dtype=False)
    torch.testing.assert_close(est.ess, 1.0 / (w**2).sum(0))
    torch.testing.assert_close(est.z_mean.value, z.double().mean(0))
    torch.testing.assert_close(est.z_mean.variance, z.double().var(0) / k)
    arviz = pytest.importorskip("arviz_stats.base.array")
    for khat, column in zip(est.khat, log_w.double().T, strict=True):  # from the streamed top M
        assert abs(float(khat) - arviz.array_stats.psislw(-column.numpy())[1]) < 1e-6


@pytest.mark.parametrize(("dim", "chunk"), [(3, 64), (40, 1000)])
def test_monte_carlo_kl_agrees_with_the_analytic_kl_within_its_stderr(dim, chunk):
    """``kl_estimate`` of a pair torch has no formula for (the prior as a one-component
    mixture, which is N(m, s^2 I)) against the analytic KL of the same Gaussians: within 4 of
    its stated stderr, and that stderr the sample spread over S draws."""
    from torch.distributions import Categorical, MixtureSameFamily

    from vae_lab.estimators.elbo import kl_estimate

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(dim)
    scale = 0.3 + torch.rand(5, dim, generator=g)
    q = Independent(Normal(torch.randn(5, dim, generator=g), scale), 1)
    loc, prior_scale = torch.randn(dim, generator=g), torch.full((dim,), 1.5)
    mixture = MixtureSameFamily(
        Categorical(torch.ones(1)), Independent(Normal(loc[None], prior_scale[None]), 1)
    )
    exact = analytic_kl(q, Independent(Normal(loc, prior_scale), 1))
    assert analytic_kl(q, mixture) is None  # so the estimate is the Monte Carlo one
    num_samples = 3000
    ours = kl_estimate(q, mixture, num_samples, chunk)
    stderr = ours.variance.sqrt()
    assert (((ours.value - exact) / stderr).abs() < 4).all()
    z = q.sample((20000,))
    spread = (q.log_prob(z) - mixture.log_prob(z)).std(0) / math.sqrt(num_samples)
    assert torch.allclose(stderr, spread, rtol=0.1)
    assert torch.equal(kl_estimate(q, standard_normal(dim), 10, 3).variance, torch.zeros(5))

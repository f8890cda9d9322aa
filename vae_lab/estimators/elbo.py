"""The ELBO core: one code path for the ELBO, the importance-weighted bound and log p(x).

For a datapoint x, an approximate posterior q(z|x), a prior p(z) and a likelihood p(x|z):

    ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))                       (Kingma & Welling 2014)
    L_K(x)    = E[log (1/K) sum_k w_k],  w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x)
                                                                         (Burda et al. 2016)

L_1 = ELBO <= L_K <= log p(x), and L_K -> log p(x) as K grows, so with a large K the
importance-weighted estimate log p^(x) = logsumexp_k log w_k - log K measures the
inference gap log p(x) - ELBO = KL(q(z|x) || p(z|x)).

The KL term is analytic where ``torch.distributions.kl_divergence`` knows the (q, p) pair and a
Monte Carlo estimate E_q[log q(z|x) - log p(z)] otherwise, so the core never asks which
posterior family or prior it has. Log-weights are accumulated over chunks of samples with a
streaming log-sum-exp, so memory is bounded by the chunk size and not by K.

Samples and their log-density come from the noise that made them: every reparameterisable q
is z = T(eps) with eps ~ N(0, I) (a Gaussian's T(eps) = mu + L eps, a flow's T its layers
after the base's), so log q(z|x) = log N(eps; 0, I) - log |det dT/deps| is exact however
ill-conditioned L is. Recomputing it as q.log_prob(z) would solve L^-1 (z - mu) on a rounded
z, which is off by (rounding error) x cond(L): billions of nats for cond(L) = 1e12.

The same K log-weights give the ELBO estimate mean_k log w_k (``elbo``, the ELBO of q by
Monte Carlo; ``elbo_terms`` is the training ELBO with the analytic KL, another estimator of
the same quantity), the effective sample size and the Pareto k-hat of the weights
(``vae_lab.estimators.psis``), which says whether the IW estimate can be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from vae_lab.components.normal import StandardNormal
from vae_lab.estimators.estimate import Estimate, StreamedMean
from vae_lab.estimators.psis import pareto_khat, tail_length

#: z of shape [S, B, D] -> log p(x|z) of shape [S, B] for the batch of datapoints x.
LogLikelihood = Callable[[Tensor], Tensor]
#: eps [..., B, D] -> (z = T(eps), log |det dT/deps| [..., B])
PushForward = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class Reparameterization:
    """q = T#q0: the noise distribution q0, eps -> (z = T(eps), log |det dT/deps|), and
    z -> eps = T^-1(z)."""

    noise: Distribution
    push_forward: PushForward
    pull_back: Callable[[Tensor], Tensor]


def _affine(loc: Tensor, log_det: Tensor, scale: Callable[[Tensor], Tensor]) -> PushForward:
    return lambda eps: (loc + scale(eps), log_det.expand(eps.shape[:-1]))


def _solve_lower(tril: Tensor, b: Tensor) -> Tensor:
    """L^-1 b in float64 for b [..., D]: an ill-conditioned L loses cond(L) x eps of precision."""
    solved = torch.linalg.solve_triangular(tril.double(), b.unsqueeze(-1), upper=False)
    return solved.squeeze(-1)


def reparameterize(q: Distribution) -> Reparameterization:
    """q as T#q0 (see ``Reparameterization``).

    A diagonal or full-covariance Gaussian is mu + L eps with eps ~ N(0, I); a flow (a
    distribution with ``base_dist`` and ``push_forward``) is its layers after its base's map;
    any other q is its own noise under the identity.
    """
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        if q.reinterpreted_batch_ndims == 1:
            loc, scale = q.base_dist.loc, q.base_dist.scale
            return Reparameterization(
                StandardNormal(torch.zeros_like(loc)),
                _affine(loc, scale.log().sum(-1), lambda eps: scale * eps),
                lambda z: ((z.double() - loc.double()) / scale.double()).to(z.dtype),
            )
    if isinstance(q, MultivariateNormal):
        loc, tril = q.loc, q.scale_tril
        return Reparameterization(
            StandardNormal(torch.zeros_like(loc)),
            _affine(
                loc,
                tril.diagonal(dim1=-2, dim2=-1).log().sum(-1),
                lambda eps: (tril @ eps.unsqueeze(-1)).squeeze(-1),
            ),
            lambda z: _solve_lower(tril, z.double() - loc.double()).to(z.dtype),
        )
    if hasattr(q, "push_forward"):
        base = reparameterize(q.base_dist)

        def push_forward(eps: Tensor) -> tuple[Tensor, Tensor]:
            z0, base_log_det = base.push_forward(eps)
            z, log_det = q.push_forward(z0)
            return z, base_log_det + log_det

        def pull_back(z: Tensor) -> Tensor:
            for transform in reversed(q.transforms):
                z = transform.inv(z)
            return base.pull_back(z)

        return Reparameterization(base.noise, push_forward, pull_back)
    return Reparameterization(q, lambda z: (z, z.new_zeros(z.shape[:-1])), lambda z: z)


def rsample_with_log_prob(q: Distribution, num_samples: int) -> tuple[Tensor, Tensor]:
    """Reparameterised samples z ~ q, shape [S, B, D], and log q(z), shape [S, B], from the
    noise that made them (see the module docstring). A distribution may supply its own as
    ``rsample_and_log_prob``."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((num_samples,))
    reparam = reparameterize(q)
    return push_forward_with_log_prob(reparam, reparam.noise.rsample((num_samples,)))


def push_forward_with_log_prob(reparam: Reparameterization, eps: Tensor) -> tuple[Tensor, Tensor]:
    """z = T(eps) and log q(z) = log q0(eps) - log |det dT/deps| for given noise eps."""
    z, log_det = reparam.push_forward(eps)
    return z, reparam.noise.log_prob(eps) - log_det


def analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q || p) per datapoint when torch knows the pair in closed form, else None."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def chunks(num_samples: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """(draws done before, draws in this chunk) for ``num_samples`` draws ``chunk_size`` at a
    time: the loop of every streamed estimate."""
    for done in range(0, num_samples, chunk_size):
        yield done, min(chunk_size, num_samples - done)


def kl_estimate(
    q: Distribution, prior: Distribution, num_samples: int, chunk_size: int
) -> Estimate:
    """KL(q || p) per datapoint [B]: analytic where torch knows the pair (variance 0), else
    mean_s log q(z_s) - log p(z_s) over ``num_samples`` draws z_s ~ q taken ``chunk_size`` at a
    time, with its Monte Carlo variance. No decoder pass: the KL needs q and p(z) alone."""
    kl = analytic_kl(q, prior)
    if kl is not None:
        return Estimate(kl, torch.zeros_like(kl))
    mean = StreamedMean()
    for _, n in chunks(num_samples, chunk_size):
        z, log_q = rsample_with_log_prob(q, n)
        mean.update(log_q - prior.log_prob(z))
    return mean.estimate()


@dataclass
class ELBOTerms:
    """Per-datapoint terms of the ELBO, each of shape [B]."""

    recon: Tensor  # E_q[log p(x|z)]
    kl: Tensor  # KL(q(z|x) || p(z))

    @property
    def elbo(self) -> Tensor:
        return self.recon - self.kl


def elbo_terms(
    q: Distribution, prior: Distribution, log_likelihood: LogLikelihood, num_samples: int = 1
) -> ELBOTerms:
    """The reparameterised ELBO of each datapoint with ``num_samples`` samples of z.

    log q(z|x) is computed only for the Monte Carlo KL: with an analytic KL it is not needed.
    """
    kl = analytic_kl(q, prior)
    if kl is None:
        z, log_q = rsample_with_log_prob(q, num_samples)
        kl = (log_q - prior.log_prob(z)).mean(0)
    else:
        z = q.rsample((num_samples,))
    return ELBOTerms(recon=log_likelihood(z).mean(0), kl=kl)


def log_importance_weights(
    q: Distribution, prior: Distribution, log_likelihood: LogLikelihood, num_samples: int
) -> tuple[Tensor, Tensor]:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), shape [S, B], and the z_k."""
    z, log_q = rsample_with_log_prob(q, num_samples)
    return log_likelihood(z) + prior.log_prob(z) - log_q, z


def log_weights_of_noise(
    q: Distribution, prior: Distribution, log_likelihood: LogLikelihood, eps: Tensor
) -> tuple[Tensor, Tensor]:
    """``log_importance_weights`` of the z_k = T(eps_k) made from given noise eps [S, B, D] of
    ``reparameterize(q).noise``: a function of tensors alone, which ``torch.compile`` can fuse
    (``vae_lab.estimators.fast_eval``) while the noise is drawn outside it, as the eager path draws
    it."""
    z, log_q = push_forward_with_log_prob(reparameterize(q), eps)
    return log_likelihood(z) + prior.log_prob(z) - log_q, z


#: n -> (log w [n, B], z [n, B, D]) for n fresh importance samples of each datapoint
LogWeights = Callable[[int], tuple[Tensor, Tensor]]


@dataclass
class IWEstimate:
    """What K importance weights per datapoint say, each [B] unless noted.

    ``log_px`` is the IW estimate with the delta-method variance of its Monte Carlo noise,
    1/ESS - 1/K; it is a stochastic lower bound whose bias that variance does not cover, and
    which exceeds it where ``khat`` > 0.7. ``elbo`` is mean_k log w_k with variance
    Var[log w] / K.
    """

    log_px: Estimate
    elbo: Estimate
    ess: Tensor  # effective sample size (sum w)^2 / sum w^2
    khat: Tensor  # Pareto k-hat of the weights (nan where K < 6 or the largest are all equal)
    z_mean: Estimate  # the sample mean of z under q, an estimate of E_q[z], [B, D]
    num_samples: int


def iw_log_px(
    q: Distribution,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    num_samples: int,
    chunk_size: int,
) -> IWEstimate:
    """log p^(x) with K = ``num_samples`` importance samples drawn ``chunk_size`` at a time
    from q (``iw_of_weights``)."""
    return iw_of_weights(
        lambda n: log_importance_weights(q, prior, log_likelihood, n), num_samples, chunk_size
    )


def iw_of_weights(log_weights: LogWeights, num_samples: int, chunk_size: int) -> IWEstimate:
    """What K = ``num_samples`` log-weights say, drawn ``chunk_size`` at a time.

    The running state per datapoint is the maximum m of the log-weights seen so far and the
    sums s1 = sum_k exp(log w_k - m), s2 = sum_k exp(2 (log w_k - m)), rescaled when m grows;
    the mean of log w_k (``StreamedMean``); and the M + 1 largest log-weights for k-hat. Then
    log p^(x) = m + log s1 - log K, ESS = s1^2 / s2, and by the delta method
    Var[log p^(x)] ~= Var[w] / (K E[w]^2) = 1/ESS - 1/K.
    """
    keep = tail_length(num_samples) + 1
    for done, n in chunks(num_samples, chunk_size):
        log_w, z = log_weights(n)
        log_w = log_w.double()
        chunk_max = log_w.max(0).values
        if done == 0:
            m, s1, s2 = chunk_max, 0.0, 0.0
            elbo, z_mean = StreamedMean(), StreamedMean()
            top = log_w[:0]
        new_m = torch.maximum(m, chunk_max)
        rescale = torch.exp(m - new_m)
        rel = torch.exp(log_w - new_m)
        s1 = s1 * rescale + rel.sum(0)
        s2 = s2 * rescale**2 + (rel**2).sum(0)
        elbo.update(log_w)
        top = torch.cat([top, log_w]).topk(min(keep, done + n), dim=0).values
        z_mean.update(z)
        m = new_m
    log_px, ess = _log_mean_weight(m, s1, s2, num_samples)
    khat = pareto_khat(top) if keep > 1 else torch.full_like(m, math.nan)
    return IWEstimate(log_px, elbo.estimate(), ess, khat, z_mean.estimate(), num_samples)


def _log_mean_weight(m: Tensor, s1: Tensor, s2: Tensor, k: int) -> tuple[Estimate, Tensor]:
    """From m = max log w, s1 = sum exp(log w - m), s2 = sum exp(2 (log w - m)) over k weights:
    the log of their mean with its delta-method variance 1/ESS - 1/k, and ESS = s1^2 / s2."""
    ess = s1**2 / s2
    return Estimate(m + torch.log(s1) - math.log(k), (1.0 / ess - 1.0 / k).clamp_min(0.0)), ess


def log_mean_weight(log_w: Tensor) -> Estimate:
    """log (1/K) sum_k w_k over dim 0 of log-weights [K, ...] held in memory, with the Monte
    Carlo variance of that estimate by the same delta method as ``iw_log_px``."""
    m = log_w.max(0).values
    rel = torch.exp(log_w - m)
    return _log_mean_weight(m, rel.sum(0), (rel**2).sum(0), log_w.shape[0])[0]

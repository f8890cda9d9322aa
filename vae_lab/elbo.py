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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

#: z of shape [S, B, D] -> log p(x|z) of shape [S, B] for the batch of datapoints x.
LogLikelihood = Callable[[Tensor], Tensor]


def rsample_with_log_prob(q: Distribution, num_samples: int) -> tuple[Tensor, Tensor]:
    """Reparameterised samples z ~ q, shape [S, B, D], and log q(z), shape [S, B].

    Flow posteriors compute log q(z) alongside the forward pass (their inverse may have no
    closed form); they expose it as ``rsample_and_log_prob``.
    """
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((num_samples,))
    z = q.rsample((num_samples,))
    return z, q.log_prob(z)


def analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    """KL(q || p) per datapoint when torch knows the pair in closed form, else None."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


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


@dataclass
class IWEstimate:
    """The importance-weighted estimate of log p(x), per datapoint."""

    log_px: Tensor  # logsumexp_k log w_k - log K, shape [B]
    variance: Tensor  # Monte Carlo variance of log_px (delta method): 1/ESS - 1/K, shape [B]
    ess: Tensor  # effective sample size (sum w)^2 / sum w^2, shape [B]
    z_mean: Tensor  # the sample mean of z under q, an estimate of E_q[z], shape [B, D]


def iw_log_px(
    q: Distribution,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    num_samples: int,
    chunk_size: int,
) -> IWEstimate:
    """log p^(x) with K = ``num_samples`` importance samples drawn ``chunk_size`` at a time.

    The running state per datapoint is the maximum m of the log-weights seen so far and the
    sums s1 = sum_k exp(log w_k - m), s2 = sum_k exp(2 (log w_k - m)), rescaled when m grows.
    Then log p^(x) = m + log s1 - log K, ESS = s1^2 / s2, and by the delta method
    Var[log p^(x)] ~= Var[w] / (K E[w]^2) = 1/ESS - 1/K.
    """
    m = s1 = s2 = z_sum = None
    done = 0
    while done < num_samples:
        n = min(chunk_size, num_samples - done)
        log_w, z = log_importance_weights(q, prior, log_likelihood, n)
        log_w = log_w.double()
        chunk_max = log_w.max(0).values
        if m is None:
            m, s1, s2, z_sum = chunk_max, 0.0, 0.0, 0.0
        new_m = torch.maximum(m, chunk_max)
        shift = torch.exp(m - new_m)
        rel = torch.exp(log_w - new_m)
        s1 = s1 * shift + rel.sum(0)
        s2 = s2 * shift**2 + (rel**2).sum(0)
        z_sum = z_sum + z.sum(0)
        m = new_m
        done += n
    log_px, variance, ess = _mean_weight_estimate(m, s1, s2, num_samples)
    return IWEstimate(log_px=log_px, variance=variance, ess=ess, z_mean=z_sum / num_samples)


def _mean_weight_estimate(
    m: Tensor, s1: Tensor, s2: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """From m = max log w, s1 = sum exp(log w - m), s2 = sum exp(2 (log w - m)) over k weights:
    log of their mean, its delta-method variance 1/ESS - 1/k, and ESS = s1^2 / s2."""
    ess = s1**2 / s2
    return m + torch.log(s1) - math.log(k), (1.0 / ess - 1.0 / k).clamp_min(0.0), ess


def log_mean_weight(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """log (1/K) sum_k w_k over dim 0 of log-weights [K, ...] held in memory, and the Monte
    Carlo variance of that estimate, by the same delta method as ``iw_log_px``."""
    m = log_w.max(0).values
    rel = torch.exp(log_w - m)
    log_px, variance, _ = _mean_weight_estimate(m, rel.sum(0), (rel**2).sum(0), log_w.shape[0])
    return log_px, variance

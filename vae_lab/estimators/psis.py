"""The Pareto k-hat diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao, Gabry,
"Pareto smoothed importance sampling", 2015/2024), used for variational inference by Yao,
Vehtari, Simpson & Gelman (2018), "Yes, but did it work?".

The M largest of K importance weights w_k = p(x, z_k) / q(z_k|x) are fitted by a generalised
Pareto distribution above the (M+1)-th largest; its shape k-hat says how heavy the tail of the
weights is. The variance of w is finite only for k < 1/2; for k-hat > 0.7 the IW estimate
log (1/K) sum_k w_k converges too slowly to be trusted at any practical K: it sits below
log p(x) by more than its delta-method standard error, which assumes a finite variance. The
fit is Zhang & Stephens' (2009) empirical Bayes estimate with the weakly informative prior of
Vehtari et al. (k shrunk towards 0.5 with the weight of 10 observations), as ArviZ computes it,
with M = 3 sqrt(K) for K > 225 and K/5 otherwise (at least 5), batched over datapoints.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: k-hat above this: the IW estimate of that datapoint is unreliable (Vehtari et al.)
KHAT_BAD = 0.7
#: the prior of the fit: k shrunk towards 0.5 with the weight of this many observations
PRIOR_WEIGHT, PRIOR_K, PRIOR_SCALE = 10, 0.5, 3


def tail_length(num_samples: int) -> int:
    """M, the number of largest weights fitted; 0 when K is too small for a fit (K < 6)."""
    m = math.floor(3 * math.sqrt(num_samples)) if num_samples > 225 else num_samples // 5
    m = min(max(m, 5), num_samples - 1)
    return m if m >= 5 else 0


def generalized_pareto_shape(x: Tensor) -> Tensor:
    """k-hat of the generalised Pareto fit to the exceedances x [B, M], sorted ascending, >= 0,
    of each row (Zhang & Stephens 2009, with the prior above), [B]."""
    n = x.shape[1]
    grid = 30 + int(math.sqrt(n))
    j = torch.arange(1, grid + 1, dtype=x.dtype, device=x.device)
    b = 1 - torch.sqrt(grid / (j - 0.5))
    quartile = x[:, int(n / 4 + 0.5) - 1, None]
    b = b / (PRIOR_SCALE * quartile) + 1 / x[:, -1, None]  # [B, grid]
    k = torch.log1p(-b[..., None] * x[:, None, :]).mean(-1)
    profile = n * (torch.log(-b / k) - k - 1)
    weights = torch.softmax(profile, dim=-1)
    weights = torch.where(weights >= 10 * torch.finfo(x.dtype).eps, weights, 0.0)
    b_post = (b * weights).sum(-1) / weights.sum(-1)
    k_post = torch.log1p(-b_post[:, None] * x).mean(-1)
    return (n * k_post + PRIOR_WEIGHT * PRIOR_K) / (n + PRIOR_WEIGHT)


def pareto_khat(top_log_weights: Tensor) -> Tensor:
    """k-hat per datapoint from its M + 1 largest log-weights, [M + 1, B] in any order, [B];
    NaN where they are all equal (no tail to fit: ArviZ refuses such weights)."""
    top = top_log_weights.double().sort(0).values
    shifted = top - top[-1]
    exceedances = (shifted[1:].exp() - shifted[0].exp()).T.clamp_min(0.0)
    return generalized_pareto_shape(exceedances)


def warn_if_unreliable(prefix: str, khat_bad: float, k_name: str, suffix: str = "") -> bool:
    """Log one line when some datapoints' IW estimates have k-hat > 0.7, naming the figures
    ``<prefix>/psis_khat_bad<suffix>`` and ``<prefix>/log_px<suffix>``; True if it did."""
    if not khat_bad > 0:
        return False
    log.warning(
        "%s/psis_khat_bad%s = %.3f: the importance weights of %.1f%% of the datapoints have "
        "Pareto k-hat > %.1f, so %s/log_px%s lies below log p(x) by more than its stderr, "
        "which itself understates its noise there; "
        "raise %s or use AIS (python -m vae_lab.evaluate)",
        prefix, suffix, khat_bad, 100 * khat_bad, KHAT_BAD, prefix, suffix, k_name,
    )  # fmt: skip
    return True

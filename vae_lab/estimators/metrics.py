"""Test-time metrics as torchmetrics, whose states are sums so that they aggregate exactly
across processes: the dataset means do not depend on how the data was sharded."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from vae_lab.estimators.elbo import IWEstimate
from vae_lab.estimators.estimate import Estimate, Figure
from vae_lab.estimators.psis import KHAT_BAD


class MeanEstimate(Metric):
    """The dataset mean of per-datapoint estimates with its Monte Carlo standard error
    (``Figure.of_sums``)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("value", "variance", "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: Estimate) -> None:
        self.value += estimate.value.double().sum()
        self.variance += estimate.variance.double().sum()
        self.count += estimate.value.numel()

    def compute(self) -> Figure:
        return Figure.of_sums(self.value, self.variance, self.count)


class IWLogLikelihood(Metric):
    """Mean IW log p^(x) over datapoints with its standard error (``vae_lab.estimators.estimate``),
    the ELBO of the same weights (mean_k log w_k) with its standard error, the mean ESS and ESS/K,
    and the PSIS diagnostic: the mean Pareto k-hat of the weights and the fraction of
    datapoints with k-hat > 0.7, whose IW estimate is unreliable (``vae_lab.estimators.psis``).
    A datapoint whose largest weights are all equal (q is its posterior to float precision)
    has no tail to fit and a NaN k-hat: it counts as reliable and is left out of the mean.
    """

    full_state_update = False
    SUMS = ("log_px", "variance", "elbo", "elbo_variance", "ess", "ess_fraction", "khat",
            "khat_count", "khat_bad", "count")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        for name in self.SUMS:
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: IWEstimate) -> None:
        self.log_px += estimate.log_px.value.double().sum()
        self.variance += estimate.log_px.variance.double().sum()
        self.elbo += estimate.elbo.value.double().sum()
        self.elbo_variance += estimate.elbo.variance.double().sum()
        self.ess += estimate.ess.double().sum()
        self.ess_fraction += estimate.ess.double().sum() / estimate.num_samples
        self.khat += estimate.khat.double().nansum()
        self.khat_count += (~estimate.khat.isnan()).sum()
        self.khat_bad += (estimate.khat > KHAT_BAD).double().sum()
        self.count += estimate.ess.numel()

    def compute(self) -> dict[str, Tensor]:
        log_px = Figure.of_sums(self.log_px, self.variance, self.count)
        elbo = Figure.of_sums(self.elbo, self.elbo_variance, self.count)
        figures = log_px.named("log_px") | elbo.named("elbo")
        return {name: torch.tensor(value) for name, value in figures.items()} | {
            "ess": self.ess / self.count,
            "ess_fraction": self.ess_fraction / self.count,
            "psis_khat": self.khat / self.khat_count,
            "psis_khat_bad": self.khat_bad / self.count,
        }


class ActiveUnits(Metric):
    """Latent dimensions u with Cov_x(E_q[z_u]) > threshold (Burda et al. 2016, threshold 0.01).

    E_q[z_u] is known only as a K-sample mean m_u(x), whose Monte Carlo variance v_u(x) adds to
    its spread over x: E[Var_x(m_u)] = Cov_x(E_q[z_u]) + E_x[v_u(x)]. That noise is
    subtracted, else a collapsed unit (q = p(z) = N(0, 1), v = 1/K) reads active at K <= 100.
    """

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = threshold
        zeros = torch.zeros(latent_dim, dtype=torch.float64)
        self.add_state("total", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("total_sq", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("noise", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_means: Estimate) -> None:
        means = posterior_means.value.double()
        self.total += means.sum(0)
        self.total_sq += (means**2).sum(0)
        self.noise += posterior_means.variance.double().sum(0)
        self.count += means.shape[0]

    def active(self) -> Tensor:
        """Which units are active, [latent_dim] bool."""
        mean = self.total / self.count
        variance = self.total_sq / self.count - mean**2 - self.noise / self.count
        return variance > self.threshold

    def compute(self) -> Tensor:
        return self.active().sum().double()

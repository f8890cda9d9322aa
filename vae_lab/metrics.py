"""Test-time metrics as torchmetrics, whose states are sums so that they aggregate exactly
across processes: the dataset means do not depend on how the data was sharded."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from vae_lab.elbo import IWEstimate


class IWLogLikelihood(Metric):
    """Mean IW log p^(x) over datapoints, its Monte Carlo standard error and the mean ESS.

    The estimates of different datapoints are independent, so
    stderr = sqrt(sum_i Var[log p^(x_i)]) / N.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("log_px", "variance", "ess", "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: IWEstimate) -> None:
        self.log_px += estimate.log_px.double().sum()
        self.variance += estimate.variance.double().sum()
        self.ess += estimate.ess.double().sum()
        self.count += estimate.log_px.numel()

    def compute(self) -> dict[str, Tensor]:
        return {
            "log_px": self.log_px / self.count,
            "log_px_stderr": self.variance.sqrt() / self.count,
            "ess": self.ess / self.count,
        }


class ActiveUnits(Metric):
    """Latent dimensions u with Cov_x(E_q[z_u]) > threshold (Burda et al. 2016, threshold 0.01)."""

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = threshold
        zeros = torch.zeros(latent_dim, dtype=torch.float64)
        self.add_state("total", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("total_sq", zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_means: Tensor) -> None:
        means = posterior_means.double()
        self.total += means.sum(0)
        self.total_sq += (means**2).sum(0)
        self.count += means.shape[0]

    def compute(self) -> Tensor:
        mean = self.total / self.count
        variance = self.total_sq / self.count - mean**2
        return (variance > self.threshold).sum().double()

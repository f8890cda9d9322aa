"""One type for every Monte Carlo estimate: per-datapoint values with their variances, and the
dataset figure they make.

The estimates of different datapoints are independent, so a dataset mean over N datapoints
has standard error

    stderr = sqrt(sum_i Var_i) / N,

and the standard error of a difference of two independent figures adds in quadrature. What
Var_i covers is the estimator's own business (Monte Carlo noise of an IW, ELBO or AIS
estimate, by the delta method where it is a log of a mean); a bias (of the IW log p(x), which
is a lower bound, or of an optimiser stopped early) is not in it, and each producer says so.

Nor is Monte Carlo noise the only error: the log-weights are computed in float32, whose
rounding leaves an error of order eps |value| (eps = 1.2e-7: 1e-5 nats at log p(x) = -100)
that no number of samples removes. Where q is its posterior (q* of a PPCA model) the Monte
Carlo stderr falls far below it (1e-9 nats, with IW 1e-8 and AIS 9e-7 from the exact value,
and an approximation gap of -5e-7); so a figure's stderr is never stated below eps |value|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

#: the relative rounding error of a float32 figure, the floor of its stated error
ROUNDING = torch.finfo(torch.float32).eps


@dataclass
class Figure:
    """A dataset mean and its standard error."""

    value: float
    stderr: float

    @classmethod
    def of_sums(cls, value_sum: Tensor, variance_sum: Tensor, count: Tensor | int) -> Figure:
        """The mean of ``count`` independent estimates from the sums of their values and of
        their variances: the one place the standard-error formula is written, with its floor
        of float32 rounding (module docstring)."""
        value = float(value_sum / count)
        stderr = float(variance_sum.clamp_min(0.0).sqrt() / count)
        return cls(value, max(stderr, ROUNDING * abs(value)))

    def __sub__(self, other: Figure) -> Figure:
        return Figure(self.value - other.value, math.hypot(self.stderr, other.stderr))

    def named(self, name: str) -> dict[str, float]:
        """The figure as metrics are recorded: ``{name: value, name_stderr: stderr}``."""
        return {name: self.value, f"{name}_stderr": self.stderr}

    @classmethod
    def of_named(cls, metrics: Mapping[str, float | Tensor], name: str) -> Figure:
        """The figure ``named`` recorded in ``metrics``."""
        return cls(float(metrics[name]), float(metrics[f"{name}_stderr"]))


@dataclass
class Estimate:
    """Per-datapoint estimates and their Monte Carlo variances, each [N]."""

    value: Tensor
    variance: Tensor

    @classmethod
    def of_moments(cls, total: Tensor, total_sq: Tensor, count: int) -> Estimate:
        """The sample mean of ``count`` i.i.d. draws per datapoint, from the sums of the draws
        and of their squares, with its variance: the unbiased sample variance over ``count``."""
        mean = total / count
        sample_var = (total_sq / count - mean**2).clamp_min(0.0) * count / max(count - 1, 1)
        return cls(mean, sample_var / count)

    @classmethod
    def cat(cls, parts: list[Estimate]) -> Estimate:
        return cls(torch.cat([p.value for p in parts]), torch.cat([p.variance for p in parts]))

    def __sub__(self, other: Estimate) -> Estimate:
        """The difference of two independent estimates of the same datapoints."""
        return Estimate(self.value - other.value, self.variance + other.variance)

    def figure(self) -> Figure:
        return Figure.of_sums(
            self.value.double().sum(), self.variance.double().sum(), self.value.numel()
        )


class StreamedMean:
    """The per-datapoint mean of draws [n, B] that arrive a chunk at a time, with its Monte
    Carlo variance (``Estimate.of_moments``); the sums are of the draws less the first chunk's
    mean, in float64, against cancellation when the mean is far from 0."""

    def __init__(self) -> None:
        self.count = 0

    def update(self, draws: Tensor) -> None:
        draws = draws.double()
        if self.count == 0:
            self.shift = draws.mean(0)
            self.total, self.total_sq = torch.zeros_like(self.shift), torch.zeros_like(self.shift)
        centred = draws - self.shift
        self.total += centred.sum(0)
        self.total_sq += (centred**2).sum(0)
        self.count += draws.shape[0]

    def estimate(self) -> Estimate:
        centred = Estimate.of_moments(self.total, self.total_sq, self.count)
        return Estimate(self.shift + centred.value, centred.variance)

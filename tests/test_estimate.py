"""The one standard-error formula, and its floor of float32 rounding."""

from __future__ import annotations

import math

import torch

from vae_lab.estimators.estimate import ROUNDING, Estimate, Figure


def test_stderr_of_a_mean_of_independent_estimates():
    values, variances = [-10.0, -12.0, -14.0], [0.04, 0.09, 0.36]
    as64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    estimate = Estimate(as64(values), as64(variances))
    figure = estimate.figure()
    assert figure.value == -12.0 and math.isclose(figure.stderr, math.sqrt(0.49) / 3)
    gap = figure - Figure(-11.0, 0.3)
    assert gap.value == -1.0 and math.isclose(gap.stderr, math.hypot(math.sqrt(0.49) / 3, 0.3))


def test_no_stderr_is_stated_below_float32_rounding():
    """An estimate with no Monte Carlo noise (q the exact posterior) is still only as exact as
    the float32 log-weights it was computed from."""
    figure = Estimate(torch.full((4,), -97.0), torch.zeros(4)).figure()
    assert figure.stderr == ROUNDING * 97.0 and ROUNDING == torch.finfo(torch.float32).eps
    assert Estimate(torch.zeros(4), torch.zeros(4)).figure().stderr == 0.0

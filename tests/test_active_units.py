"""``test/active_units`` counts the units whose posterior mean varies over x by more than the
threshold, with E_q[z] known only from K samples: the samples' Monte Carlo noise must not make
a collapsed unit read active."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from vae_lab.estimators.elbo import iw_log_px
from vae_lab.estimators.metrics import ActiveUnits


@pytest.mark.parametrize("num_samples", [20, 100, 1000])
def test_collapsed_units_stay_inactive_at_any_number_of_samples(num_samples: int) -> None:
    """8 units whose q(z|x) means spread over x with variance 0.04 (active at threshold 0.01)
    beside 8 collapsed to the prior, q = N(0, 1) for every x: the K-sample means of the
    collapsed units vary over x by 1/K (0.05 at K = 20) from Monte Carlo noise alone."""
    torch.manual_seed(0)
    points, active, dim = 1000, 8, 16
    loc = torch.zeros(points, dim)
    loc[:, :active] = 0.2 * torch.randn(points, active)
    q = Independent(Normal(loc, torch.ones(points, dim)), 1)
    prior = Independent(Normal(torch.zeros(dim), torch.ones(dim)), 1)
    estimate = iw_log_px(q, prior, lambda z: z.new_zeros(z.shape[:-1]), num_samples, 100)
    units = ActiveUnits(dim)
    units.update(estimate.z_mean)
    assert int(units.compute()) == active

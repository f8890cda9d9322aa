"""The discretized logistic likelihood of 8-bit pixels: a distribution over the 256 grey levels,
its edge cases at 0 and 255, its samples and its mean."""

from __future__ import annotations

import pytest
import torch

from vae_lab.components.discretized_logistic import HALF_BIN, LEVELS, DiscretizedLogistic
from vae_lab.components.likelihoods import DiscretizedLogisticLikelihood

GREY = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)
#: means inside, at and far beyond the ends of [0, 1]; scales from a tenth of a bin to wide
LOCS = torch.tensor([-3.0, -0.01, 0.0, 0.3, 0.5013, 0.999, 1.0, 1.2, 40.0], dtype=torch.float64)
SCALES = [4e-4, 0.01, 0.3, 5.0]


def pixel_log_probs(loc: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """log P(k/255) of one-pixel distributions, [levels, locs]."""
    dist = DiscretizedLogistic(loc.to(dtype)[:, None], torch.tensor(scale, dtype=dtype))
    return torch.stack([dist.log_prob(g.to(dtype).expand(len(loc), 1)) for g in GREY])


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_pixel_sums_to_one_over_its_256_levels(scale, dtype):
    log_p = pixel_log_probs(LOCS, scale, dtype)
    assert torch.isfinite(log_p).all()
    total = log_p.double().exp().sum(0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", SCALES)
def test_the_levels_take_the_logistic_mass_of_their_bins_and_the_ends_the_tails(scale):
    """P(k) = CDF(x + h) - CDF(x - h) inside; P(0) = CDF(h), P(255) = 1 - CDF(1 - h): the
    mass beyond the ends goes to the end levels (Salimans et al. 2017)."""
    loc = LOCS[:, None]
    cdf = lambda y: torch.sigmoid((y - loc) / scale)  # noqa: E731
    inner = cdf(GREY[1:-1] + HALF_BIN) - cdf(GREY[1:-1] - HALF_BIN)
    ends = torch.tensor([HALF_BIN, 1 - HALF_BIN], dtype=torch.float64)
    expected = torch.cat([cdf(ends[:1]), inner, 1 - cdf(ends[1:])], 1)
    got = pixel_log_probs(LOCS, scale, torch.float64).T.exp()
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-9)


def test_far_tails_stay_finite_with_finite_gradients():
    """A mean 40 bins from x at a tenth of a bin's scale: a log-probability near -1e5, no inf,
    and finite gradients in the mean and the log-scale at the two ends and inside."""
    likelihood = DiscretizedLogisticLikelihood(3, scale=4e-4).double()
    loc = torch.tensor([[0.9, 0.1, 0.2]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.0, 1.0, 0.6]], dtype=torch.float64)
    log_p = likelihood(loc).log_prob(x)
    assert torch.isfinite(log_p).all() and log_p.item() < -1e3
    log_p.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(likelihood.log_scale.grad).all()


def test_log_prob_broadcasts_samples_of_z_against_a_batch_of_x():
    torch.manual_seed(0)
    loc, x = torch.rand(5, 3, 7), torch.randint(0, LEVELS, (3, 7)) / (LEVELS - 1)
    dist = DiscretizedLogistic(loc, torch.full((7,), 0.05))
    batched = dist.log_prob(x)
    assert batched.shape == (5, 3) and dist.event_shape == (7,)
    one = DiscretizedLogistic(loc[2], torch.full((7,), 0.05)).log_prob(x)
    torch.testing.assert_close(batched[2], one)


def test_samples_are_grey_levels_drawn_with_the_probabilities():
    """Frequencies of 200,000 draws within 5 binomial standard errors of P(k) (and a count
    of 2, for the levels of probability near 0)."""
    torch.manual_seed(0)
    n, loc, scale = 200_000, torch.tensor([0.02, 0.5, 0.97]), 0.01
    draws = DiscretizedLogistic(loc, torch.tensor(scale)).sample((n,))
    levels = draws * (LEVELS - 1)
    assert draws.shape == (n, 3) and torch.equal(levels, levels.round())
    counts = torch.stack([torch.bincount(levels[:, i].long(), minlength=LEVELS) for i in range(3)])
    p = pixel_log_probs(loc.double(), scale, torch.float64).exp().T
    stderr = (p * (1 - p) / n).sqrt()
    assert ((counts / n - p).abs() <= 5 * stderr + 2 / n).all()


@pytest.mark.parametrize("scale", SCALES)
def test_the_mean_is_within_half_a_grey_level_of_the_discrete_mean(scale):
    loc = torch.linspace(-0.2, 1.2, 141, dtype=torch.float64)
    exact = (pixel_log_probs(loc, scale, torch.float64).exp() * GREY[:, None]).sum(0)
    mean = DiscretizedLogistic(loc, torch.tensor(scale, dtype=torch.float64)).mean
    assert ((mean - exact).abs() <= HALF_BIN).all()


@pytest.mark.parametrize("per_pixel", [True, False])
def test_the_likelihood_learns_its_scale_per_pixel_or_shared(per_pixel):
    likelihood = DiscretizedLogisticLikelihood(6, scale=0.2, per_pixel_scale=per_pixel)
    assert likelihood.log_scale.shape == ((6,) if per_pixel else ())
    assert likelihood.grey_levels == LEVELS and not likelihood.binary_data
    decoded = torch.zeros(4, 6)
    assert likelihood(decoded).log_prob(torch.zeros(4, 6)).shape == (4,)
    assert likelihood.mean(decoded).shape == (4, 6)

"""The discretized logistic distribution of 8-bit pixels (Kingma et al. 2016, "Improved
Variational Inference with Inverse Autoregressive Flow", §5.2 and app. C; Salimans et al. 2017,
"PixelCNN++", §2.1), for grey levels x = k/255, k = 0..255, in [0, 1].

A continuous logistic y ~ Logistic(mu, s), with CDF sigma((y - mu) / s), is rounded to the
nearest grey level, the mass beyond the ends going to the end levels (PixelCNN++'s edge cases):
with half a bin h = 1/510 and the bin [x - h, x + h] of x,

    P(x) = sigma((x + h - mu) / s) - sigma((x - h - mu) / s)     0 < x < 1
    P(0) = sigma((h - mu) / s)                                    (-inf, h]
    P(1) = 1 - sigma((1 - h - mu) / s)                            [1 - h, inf)

so the 256 probabilities of a pixel sum to 1. The interior difference is computed without
cancellation from sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^-(a-b)), a > b:

    log P(x) = -softplus(-a) [x < 1] - softplus(b) [x > 0] + log(1 - e^-2h/s) [0 < x < 1],
    a = (x - mu + h) / s,  b = (x - mu - h) / s,

where an end level drops the terms of its infinite edge. The last term depends on s alone:
it is computed per pixel of the data, not per sample of z, so the hot path over [S, B, X] is
two softplus. Samples round a logistic draw, mu + s (log u - log(1 - u)), to the nearest level
and clamp it to [0, 1]. The mean is the midpoint sum over the 255 inner bin edges
e_j = (j - 1/2) / 255 of P(x >= k) (summation by parts),

    E[x] = (1/255) sum_{j=1..255} sigma((mu - e_j) / s),

the midpoint rule of E[clamp(y, 0, 1)] = int_0^1 sigma((mu - t) / s) dt
= s (softplus(mu / s) - softplus((mu - 1) / s)), which is what ``mean`` returns: it costs one
pass where the sum costs 255, and it is the expectation of the unrounded clamped logistic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

#: grey levels of 8-bit data, k/255 for k = 0..255
LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)


class DiscretizedLogistic(Distribution):
    """Independent discretized logistic pixels, the event the last dimension: ``loc`` mu
    [..., X] (the decoder's output) and ``scale`` s > 0 that broadcasts to it."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc, self.scale = loc, scale
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """log P(x) summed over the pixels; x [..., X] broadcasts against loc (module
        docstring); x must lie on the grid k/255 (the data module checks its data)."""
        inv_scale = self.scale.reciprocal()
        half = inv_scale * HALF_BIN
        centred = (value - self.loc) * inv_scale
        below = F.softplus(-centred - half).mul_((value < 1.0 - HALF_BIN).to(centred.dtype))
        above = F.softplus(centred - half).mul_((value > HALF_BIN).to(centred.dtype))
        interior = ((value > HALF_BIN) & (value < 1.0 - HALF_BIN)).to(centred.dtype)
        width = torch.log(-torch.expm1(-2.0 * half)) * interior
        return width.sum(-1) - below.add_(above).sum(-1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
            y = self.loc + self.scale * (u.log() - (-u).log1p())
            return torch.round(y * (LEVELS - 1)).clamp_(0, LEVELS - 1) / (LEVELS - 1)

    @property
    def mean(self) -> Tensor:
        """E[clamp(y, 0, 1)] (module docstring), within half a grey level of E[x]."""
        s = self.scale
        return s * (F.softplus(self.loc / s) - F.softplus((self.loc - 1.0) / s))

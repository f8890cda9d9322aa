"""RealNVP: affine coupling layers (Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation
using Real NVP"), amortised by a per-datapoint context vector.

With a binary mask b (1 = kept) that alternates between the two halves of z from layer to
layer, and a context c(x) from the encoder,

    y = b * x + (1 - b) * (x * exp(l(b * x, c)) + t(b * x, c)),
    log |det dy/dx| = sum_i (1 - b_i) l_i,

where [t, l~] is one ``ConditionalMLP`` per layer (weights shared by all datapoints) and the
log-scale is softly bounded for stability, l = L tanh(l~ / L) with L = ``SCALE_BOUND``. The
context (``context_dim`` numbers per layer) is part of theta, so the inference-gap analysis
can optimise it per datapoint.

As a posterior the layers act on the base's standardised noise (``flow``), where they are
bounded further: |l| < 1 and a shift t = 3 tanh(t~ / 3), so that a layer moves a coordinate by
less than 3 of the base's standard deviations and rescales it by less than e. The network sees
tanh(c), not c. Amortised through a linear head, a layer's scale and the base's trade off
freely (a stretch of the noise undone by a smaller base scale leaves q as it was), so that at a
learning rate the diagonal family trains at the optimiser drifted along that trade until the
log-scales saturated at +-3, the noise was stretched 50-fold in a layer and the base scale
collapsed, while an unbounded context drove the networks' tanh units into saturation, where a
step flips them: on pPCA both sent training off to far worse models. Bounded, the trade has
nowhere to drift, and the context's scale is the networks' own weights' (shared by all
datapoints), which the family keeps. The flow prior's layers keep SCALE_BOUND and no shift
bound.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from vae_lab.components.posteriors.affine import TriangularAffineTransform
from vae_lab.components.posteriors.conditioners import ConditionalMLP
from vae_lab.components.posteriors.flow import FlowLayer, FlowPosterior
from vae_lab.config.validation import POSITIVE_INT, require_all

SCALE_BOUND = 3.0  # |log-scale| < 3: each coupling scales a coordinate by at most e^3
#: the posterior's bounds, in the standardised coordinates it acts on (module docstring):
#: |log-scale| < 1 and |shift| < 3 standard deviations of the base
POSTERIOR_SCALE_BOUND, POSTERIOR_SHIFT_BOUND = 1.0, 3.0


class CouplingLayer(FlowLayer):
    """Raw parameters per datapoint: the context [B, context_dim]; with ``context_dim=0`` the
    layer takes none (``layer()``) and is an unconditional coupling, as in the flow prior."""

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        hidden_dim: int,
        flip: bool,
        scale_bound: float = SCALE_BOUND,
        shift_bound: float = math.inf,
    ) -> None:
        super().__init__()
        self.num_params = context_dim
        self.scale_bound, self.shift_bound = scale_bound, shift_bound
        kept = (torch.arange(latent_dim) < latent_dim // 2) ^ flip
        self.register_buffer("kept", kept.float())
        self.net = ConditionalMLP(latent_dim, context_dim, hidden_dim, 2 * latent_dim)

    def shift_and_log_scale(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        bounded = None if context is None else torch.tanh(context)
        shift, raw = self.net(x * self.kept, bounded).chunk(2, dim=-1)
        free = 1.0 - self.kept
        if math.isfinite(self.shift_bound):
            shift = self.shift_bound * torch.tanh(shift / self.shift_bound)
        return shift * free, self.scale_bound * torch.tanh(raw / self.scale_bound) * free

    def forward(self, params: Tensor | None = None) -> TriangularAffineTransform:
        return TriangularAffineTransform(partial(self.shift_and_log_scale, context=params), 1)


class RealNVP(FlowPosterior):
    """q0(z|x) pushed through ``num_flows`` affine coupling layers with alternating masks."""

    # 1: the layers acted on z; 2: the couplings bounded as the flow prior's (SCALE_BOUND, no
    # shift bound)
    parameterization = 3

    def __init__(
        self, feature_dim: int, latent_dim: int, num_flows: int, hidden_dim: int, context_dim: int
    ) -> None:
        require_all(
            POSITIVE_INT, num_flows=num_flows, hidden_dim=hidden_dim, context_dim=context_dim
        )
        layers = [
            CouplingLayer(
                latent_dim,
                context_dim,
                hidden_dim,
                k % 2 == 1,
                POSTERIOR_SCALE_BOUND,
                POSTERIOR_SHIFT_BOUND,
            )  # fmt: skip
            for k in range(num_flows)
        ]
        super().__init__(feature_dim, latent_dim, layers)

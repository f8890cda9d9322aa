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

The network sees tanh(c), not c: the context comes from a linear head, whose outputs grow
with the encoder's features and jitter with every optimiser step in proportion to them, and
an unbounded c drives the network's tanh units into saturation, where a step flips them and
the layer's shift and scale with them; on pPCA at a learning rate the diagonal family trains
at, that sent training off to a far worse model. Bounded, its scale is the network's own
weights' (shared by all datapoints), which the family keeps.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from vae_lab.components.posteriors.affine import TriangularAffineTransform
from vae_lab.components.posteriors.conditioners import ConditionalMLP
from vae_lab.components.posteriors.flow import FlowLayer, FlowPosterior
from vae_lab.config.validation import POSITIVE_INT, require_all

SCALE_BOUND = 3.0  # |log-scale| < 3: each coupling scales a coordinate by at most e^3


class CouplingLayer(FlowLayer):
    """Raw parameters per datapoint: the context [B, context_dim]; with ``context_dim=0`` the
    layer takes none (``layer()``) and is an unconditional coupling, as in the flow prior."""

    def __init__(self, latent_dim: int, context_dim: int, hidden_dim: int, flip: bool) -> None:
        super().__init__()
        self.num_params = context_dim
        kept = (torch.arange(latent_dim) < latent_dim // 2) ^ flip
        self.register_buffer("kept", kept.float())
        self.net = ConditionalMLP(latent_dim, context_dim, hidden_dim, 2 * latent_dim)

    def shift_and_log_scale(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        bounded = None if context is None else torch.tanh(context)
        shift, raw = self.net(x * self.kept, bounded).chunk(2, dim=-1)
        free = 1.0 - self.kept
        return shift * free, SCALE_BOUND * torch.tanh(raw / SCALE_BOUND) * free

    def forward(self, params: Tensor | None = None) -> TriangularAffineTransform:
        return TriangularAffineTransform(partial(self.shift_and_log_scale, context=params), 1)


class RealNVP(FlowPosterior):
    """q0(z|x) pushed through ``num_flows`` affine coupling layers with alternating masks."""

    def __init__(
        self, feature_dim: int, latent_dim: int, num_flows: int, hidden_dim: int, context_dim: int
    ) -> None:
        require_all(
            POSITIVE_INT, num_flows=num_flows, hidden_dim=hidden_dim, context_dim=context_dim
        )
        layers = [
            CouplingLayer(latent_dim, context_dim, hidden_dim, flip=k % 2 == 1)
            for k in range(num_flows)
        ]
        super().__init__(feature_dim, latent_dim, layers)

"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016,
"Improved Variational Inference with Inverse Autoregressive Flow").

Each layer runs a MADE on z and the per-datapoint context c(x) (the paper's h from the
encoder) to get [m, s], autoregressive in z, and applies the paper's numerically stable
gated update (its eq. 14)

    sigma = sigmoid(s),   y = sigma * z + (1 - sigma) * m,   log |det dy/dz| = sum_i log sigma_i.

The gate's bias starts at ``GATE_BIAS`` (sigma ~ 0.98), so each layer starts near the identity
as the paper recommends. Consecutive layers reverse the variable order. The MADE weights are
shared by all datapoints; the context (``context_dim`` numbers per layer) is part of theta.
The inverse is sequential: D passes of the MADE.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_lab.components.posteriors.affine import TriangularAffineTransform
from vae_lab.components.posteriors.conditioners import made
from vae_lab.components.posteriors.flow import FlowLayer, FlowPosterior
from vae_lab.config.validation import POSITIVE_INT, require_all

GATE_BIAS = 4.0


class IAFLayer(FlowLayer):
    """Raw parameters per datapoint: the context [B, context_dim]."""

    def __init__(self, latent_dim: int, context_dim: int, hidden_dim: int, reverse: bool) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_params = context_dim
        degrees = torch.arange(1, latent_dim + 1)
        self.made = made(degrees.flip(0) if reverse else degrees, context_dim, hidden_dim, 2)
        with torch.no_grad():
            self.made.output.bias[latent_dim:] += GATE_BIAS

    def shift_and_log_scale(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.made(z, context).chunk(2, dim=-1)
        return torch.sigmoid(-s) * m, F.logsigmoid(s)

    def forward(self, params: Tensor) -> TriangularAffineTransform:
        conditioner = partial(self.shift_and_log_scale, context=params)
        return TriangularAffineTransform(conditioner, self.latent_dim)


class IAF(FlowPosterior):
    """q0(z|x) pushed through ``num_flows`` IAF layers, alternating the variable order."""

    def __init__(
        self, feature_dim: int, latent_dim: int, num_flows: int, hidden_dim: int, context_dim: int
    ) -> None:
        require_all(
            POSITIVE_INT, num_flows=num_flows, hidden_dim=hidden_dim, context_dim=context_dim
        )
        layers = [
            IAFLayer(latent_dim, context_dim, hidden_dim, reverse=k % 2 == 1)
            for k in range(num_flows)
        ]
        super().__init__(feature_dim, latent_dim, layers)

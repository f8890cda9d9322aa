"""Conditioner networks: they compute a coupling or autoregressive layer's shift and scale from z
and a per-datapoint context vector c (the amortisation), with weights shared by all datapoints.

``ConditionalMLP`` is a two-hidden-layer tanh MLP, h1 = tanh(W x + V c + b): the context term
V c is computed once per datapoint and broadcast over the sample dims of x. Given no context
(``context_dim=0``, ``context=None``) it is the plain MLP h1 = tanh(W x + b), which lets one
layer class serve both an amortised posterior and an unconditional density such as the flow
prior. Its output layer starts near zero, so the layer it drives starts near the identity.

``made`` masks the same network into a MADE (Germain et al. 2015, "MADE: Masked Autoencoder
for Distribution Estimation"): input coordinate k gets a degree d_k in 1..D, hidden unit j a
degree m_j in 0..D-1, and connections are kept only where

    input -> hidden: m_j >= d_k,   hidden -> hidden: m_j >= m_i,   hidden -> output: d_i > m_j,

so the outputs for coordinate i depend on x only through coordinates of lower degree. The
context reaches every hidden unit; the units of degree 0 see only the context, so even the
first coordinate's outputs depend on x's features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.components.posteriors.flow import near_identity_

Masks = tuple[Tensor | None, Tensor | None, Tensor | None]


class MaskedLinear(nn.Linear):
    """y = (W * mask) x + b; no mask = a plain linear layer."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor | None = None) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.mask is None else self.weight * self.mask
        return F.linear(x, weight, self.bias)


class ConditionalMLP(nn.Module):
    """(x [..., B, in_dim], context [B, context_dim] or None) -> [..., B, out_dim]."""

    def __init__(
        self,
        in_dim: int,
        context_dim: int,
        hidden_dim: int,
        out_dim: int,
        masks: Masks = (None, None, None),
    ) -> None:
        super().__init__()
        self.input = MaskedLinear(in_dim, hidden_dim, masks[0])
        self.context = nn.Linear(context_dim, hidden_dim, bias=False) if context_dim else None
        self.hidden = MaskedLinear(hidden_dim, hidden_dim, masks[1])
        self.output = MaskedLinear(hidden_dim, out_dim, masks[2])
        near_identity_(self.output.weight, self.output.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        pre = self.input(x)
        if self.context is not None:
            pre = pre + self.context(context)
        h = torch.tanh(pre)
        return self.output(torch.tanh(self.hidden(h)))


def made(
    degrees: Tensor, context_dim: int, hidden_dim: int, outputs_per_dim: int
) -> ConditionalMLP:
    """A MADE over inputs of the given degrees (a permutation of 1..D); its output is
    ``outputs_per_dim`` blocks of D, block entry i autoregressive in coordinate i."""
    hidden = torch.arange(hidden_dim) % degrees.numel()
    output = degrees.repeat(outputs_per_dim)
    masks = (
        (hidden[:, None] >= degrees[None, :]).float(),
        (hidden[:, None] >= hidden[None, :]).float(),
        (output[:, None] > hidden[None, :]).float(),
    )
    return ConditionalMLP(degrees.numel(), context_dim, hidden_dim, output.numel(), masks)

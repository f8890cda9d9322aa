"""Elementwise affine layers with a triangular Jacobian: the common core of RealNVP and IAF.

    y = x * exp(l(x)) + t(x),

where the shift t_i and log-scale l_i depend on x only through coordinates that precede i
in some order: a fixed half of them for an affine coupling layer (Dinh et al. 2017), all
earlier ones for an inverse autoregressive layer (Kingma et al. 2016). The Jacobian is then
triangular with diagonal exp(l), so

    log |det dy/dx| = sum_i l_i(x).

The inverse, x = (y - t(x)) * exp(-l(x)), is a fixed point reached by passes: each pass fixes
at least the next coordinate in the order, so a coupling layer needs one pass and an
autoregressive layer over D coordinates needs D.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from vae_lab.components.posteriors.flow import FlowTransform

#: x [..., B, D] -> (shift t, log-scale l), both [..., B, D], triangular in x
Conditioner = Callable[[Tensor], tuple[Tensor, Tensor]]


class TriangularAffineTransform(FlowTransform):
    def __init__(self, conditioner: Conditioner, inverse_passes: int) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.inverse_passes = inverse_passes

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.conditioner(x)
        return x * log_scale.exp() + shift, log_scale.sum(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        x = y
        for _ in range(self.inverse_passes):
            shift, log_scale = self.conditioner(x)
            x = (y - shift) * (-log_scale).exp()
        return x

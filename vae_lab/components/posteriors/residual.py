"""Numerical inverse of the scalar residual map g(v) = v + alpha tanh(beta v + e).

Planar and Sylvester layers have no closed-form inverse, but both reduce to solving g(v) = r
for one scalar per datapoint and sample (planar: once along w; Sylvester: once per coordinate
of its triangular system). Their invertibility conditions make g strictly increasing,
g'(v) = 1 + alpha beta tanh'(beta v + e) > 0, and |g(v) - v| <= |alpha| puts the root in the
bracket [r - |alpha|, r + |alpha|].

The solver is a safeguarded Newton iteration, batched over all elements: each step first
shrinks the bracket with the sign of g(v) - r, then takes the Newton step if it lands inside
the bracket and bisects otherwise. It cannot diverge, converges quadratically near a simple
root, and stops when no element moves by more than a few ulps (or after ``MAX_STEPS``, enough
for bisection alone to reach float64 precision).
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_STEPS = 100
#: lower bound on g' that planar and Sylvester layers keep, so that they stay strictly invertible
#: in floating point too and each coordinate's log |det| term is >= log MIN_SLOPE
MIN_SLOPE = 1e-3


def solve_tanh_residual(
    target: Tensor, alpha: Tensor, beta: Tensor | float = 1.0, offset: Tensor | float = 0.0
) -> Tensor:
    """v with v + alpha tanh(beta v + offset) = target, elementwise (all shapes broadcast)."""
    lo, hi = torch.broadcast_tensors(target - alpha.abs(), target + alpha.abs())
    v = (lo + hi) / 2
    tol = 4 * torch.finfo(v.dtype).eps * (hi.abs() + lo.abs() + 1.0)
    for _ in range(MAX_STEPS):
        t = torch.tanh(beta * v + offset)
        excess = v + alpha * t - target
        lo = torch.where(excess < 0, v, lo)
        hi = torch.where(excess > 0, v, hi)
        newton = v - excess / (1.0 + alpha * beta * (1.0 - t**2))
        step = torch.where((newton >= lo) & (newton <= hi), newton, (lo + hi) / 2) - v
        v = v + step
        if (step.abs() <= tol).all():
            break
    return v

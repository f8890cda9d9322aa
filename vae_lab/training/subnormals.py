"""Subnormal floats flushed to zero in CPU arithmetic.

A float32 below 2^-126 (about 1.2e-38) in magnitude is subnormal. x86 CPUs compute with
subnormal operands and results through a microcode assist, dozens of times slower than a normal
operation. Training makes them: Adam's first moment m_t = beta1 m_{t-1} + (1 - beta1) g_t of a
weight whose gradient has stopped (the first layer's weights of a pixel that is seldom on, in
MNIST) shrinks by beta1 each step and takes about 150 steps (beta1 = 0.9) to pass through the
subnormal range, the second moment's v_t about 16,000 (beta2 = 0.999); a saturated sigmoid's
exp(-|l|) underflows through it as well. A trained model's steps ran slower than a fresh one's
until they were flushed (docs/speed.md, "Subnormal floats").

Flushing them (the CPU's flush-to-zero and denormals-are-zero modes) changes every value by less
than 2^-126 in absolute terms: nothing that reaches a printed figure, since the estimators work
in log space.

The mode is a register of each thread, and a thread starts with its creator's: it must be set
before torch starts its pool of intra-op threads, at the start of a process's computations.
"""

from __future__ import annotations

import torch

#: float32's smallest normal magnitude, 2^-126
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def flush_subnormals() -> bool:
    """Flush subnormal floats to zero in this thread and the threads it starts from now on;
    whether the CPU supports it (x86 with SSE3 does; elsewhere nothing changes)."""
    return torch.set_flush_denormal(True)


def subnormals_flushed(threads: int) -> bool:
    """Whether every one of ``threads`` intra-op threads flushes subnormals: an elementwise
    product of subnormals spread over all of them comes out all zero."""
    x = torch.full((threads * 2**16,), SMALLEST_NORMAL / 4)
    return not bool((x * 1.0).any())

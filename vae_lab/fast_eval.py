"""Speed settings of the evaluation: the default chunk of importance samples per device, and
log p(x|z) through ``torch.compile``.

Chunk size (``eval.chunk_size: null``). The IW estimate draws ``chunk`` samples per datapoint
at a time, so chunk x batch samples are in flight, each with a row of decoder logits. A CPU is
bound by its cache: 50 per datapoint (5,000 rows of 784 MNIST logits, 16 MB, with a batch of
100) runs 1.5x faster than 500 (``make bench``). A GPU is bound by kernel launches until its
width is filled: ``GPU_SAMPLES_IN_FLIGHT`` samples at once (2^18 rows of 784 float32 logits are
0.8 GB a buffer) amortise them.

Compilation (``eval.compile: true``). The decoder and the likelihood's log-density, compiled
together, run as fused kernels instead of one pass over memory per elementwise step. It is used
where no gradient is taken (the IW estimate, the ELBO of q and of q*, the test stage); AIS and
the fit of q* differentiate through log p(x|z) and stay eager. Each new input shape compiles
anew; ``seconds`` is the wall time of the calls that compiled, compilation included.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

#: importance samples per datapoint drawn at once on a CPU (cache-bound; ``make bench``)
CPU_CHUNK_SIZE = 50
#: samples in flight (chunk x batch) on a GPU
GPU_SAMPLES_IN_FLIGHT = 2**18


def default_chunk_size(device: torch.device, batch_size: int) -> int:
    """Samples per datapoint drawn at once for a batch of ``batch_size`` datapoints."""
    if device.type == "cpu":
        return CPU_CHUNK_SIZE
    return max(1, GPU_SAMPLES_IN_FLIGHT // batch_size)


class CompiledLogLikelihood:
    """(z, x) -> log p(x|z), ``log_likelihood`` compiled by ``torch.compile``, with the time
    spent compiling it."""

    def __init__(self, log_likelihood: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.compiled = torch.compile(log_likelihood)
        self.seconds = 0.0
        self._shapes: set[tuple[torch.Size, torch.Size]] = set()

    def __call__(self, z: Tensor, x: Tensor) -> Tensor:
        shapes = (z.shape, x.shape)
        if shapes in self._shapes:
            return self.compiled(z, x)
        start = time.perf_counter()
        out = self.compiled(z, x)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.seconds += time.perf_counter() - start
        self._shapes.add(shapes)
        return out

"""Speed settings of the evaluation: the default chunk of importance samples per device, and
the estimates through ``torch.compile``.

Chunk size (``eval.chunk_size: null``). The IW estimate draws ``chunk`` samples per datapoint
at a time, so chunk x batch samples are in flight, each with a row of decoder logits. A CPU is
bound by its cache: 50 per datapoint (5,000 rows of 784 MNIST logits, 16 MB, with a batch of
100) runs faster than 500 (``make bench``). A GPU is bound by kernel launches until its
width is filled: ``GPU_SAMPLES_IN_FLIGHT`` samples at once (2^18 rows of 784 float32 logits are
0.8 GB a buffer) amortise them.

Compilation (``eval.compile: true``). Where no gradient is taken, the estimates run through
``torch.compile``, whose fused kernels make one pass over memory where eager PyTorch makes one
per elementwise step: each chunk's log-weights of the IW estimates (of the encoder's q, the
refined q and q*, at test and in ``evaluate``: z = T(eps), log q, log p(z), the decoder and
the likelihood, ``VAE.log_weights``), and log p(x|z) elsewhere (the ELBO of q*). The noise is
drawn outside the compiled code, so compiled and eager estimates take the same draws and agree
to float32 rounding. Traced by the compiler on a CPU, the Bernoulli log-density takes its
product form (``vae_lab.components.likelihoods.bernoulli_log_density_by_products``: one log per
block of pixels instead of a log1p per pixel); on a GPU, where it has not been timed and float64
can be slow, the log1p form. AIS and the fit of q* differentiate through log p(x|z) and stay eager:
compiled with its gradient (AOTAutograd), log p(x|z) and its z-gradient ran slower than eager
on a CPU (docs/speed.md, "Where the time goes"). Each
new input shape (and each posterior family) compiles anew, up to Dynamo's
``recompile_limit`` (8) per function, past which it runs eager with a warning: slower, the same
numbers. ``seconds`` is the wall time of the calls that compiled, compilation included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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


class Compiled:
    """``fn`` through ``torch.compile``, with the wall time of the calls that compiled it
    (``seconds``): the first call of each new set of input shapes (and of each module passed
    in, which the compiled code is specialised to)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.compiled = torch.compile(fn)
        self.seconds = 0.0
        self._seen: set[tuple[Any, ...]] = set()

    def __call__(self, *args: Any) -> Any:
        key = tuple(a.shape if isinstance(a, Tensor) else id(a) for a in args)
        if key in self._seen:
            return self.compiled(*args)
        start = time.perf_counter()
        out = self.compiled(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self._seen.add(key)
        return out

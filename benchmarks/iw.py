"""IW evaluation: the batched, chunked estimate of log p(x) against per-datapoint loops.

    ours            ``VAE.iw_estimate`` on batches of ``data.eval_batch_size`` datapoints, the K
                    samples drawn ``eval.chunk_size`` per datapoint at a time: the path of the
                    test stage and of ``vae_lab.evaluate``
    library loop    the loop of other VAE libraries (pythae's ``VAE.get_nll`` with its batch
                    size = K): per datapoint, x repeated K times through the encoder, z ~ q, the
                    decoder, torch.distributions' ``Bernoulli.log_prob``, a logsumexp, ``.item()``
    datapoint loop  our estimator called on one datapoint at a time, its K samples in one chunk:
                    what batching over datapoints alone is worth

Throughput is in datapoint-samples per second (datapoints x K / seconds); the loops run on fewer
datapoints, as they cost the same per datapoint-sample. All run under ``torch.inference_mode``.

The decoder costs 2 sum_l in_l out_l FLOPs per sample (its Linear layers); the peak is
``torch.matmul`` timed on exactly those shapes, rows = chunk x batch. Their ratio, matmul time /
our time for the same samples, is the share of the estimate spent in the decoder's matmuls, the
part no implementation can avoid (goal >= 0.5). ``ceiling_speedup_vs_library_loop`` is the
speed-up over the library loop of an estimate that spent no time outside those matmuls at the
measured peak: the most any float32 implementation on this machine could reach.

With ``compile``, ours is also run as with ``eval.compile=true``: the log-likelihood (decoder
and Bernoulli log-density) through ``torch.compile``, which fuses the elementwise work; the time
spent compiling (its first calls) is reported apart, ``compile_s``. Goal: >= 3.5x the library
loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent

from benchmarks.common import Bench, Goal, Result, interleaved, timed
from vae_lab.model.module import VAE


@dataclass
class Size:
    num_samples: int = 5000  # K
    points: int = 100  # datapoints of our batched estimate
    loop_points: int = 8  # datapoints of each per-datapoint loop
    matmul_passes: int = 10  # passes over the decoder's matmuls in the peak measurement
    repeats: int = 3
    compile: bool = True  # also measure ours with a torch.compile'd log-likelihood


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(num_samples=20, points=6, loop_points=2, matmul_passes=1, repeats=1, compile=False)


def batched(model: VAE, x: Tensor, k: int, chunk: int, batch: int) -> None:
    for start in range(0, x.shape[0], batch):
        model.iw_estimate(x[start : start + batch], k, chunk)


def library_loop(model: VAE, x: Tensor, k: int) -> None:
    """pythae's ``get_nll`` loop on our model's networks."""
    for xi in x:
        x_rep = xi.repeat(k, 1)
        q = model.q(x_rep)
        z = q.rsample()
        log_px_z = Independent(Bernoulli(logits=model.decoder(z)), 1).log_prob(x_rep)
        log_w = log_px_z + model.p_z().log_prob(z) - q.log_prob(z)
        (torch.logsumexp(log_w, 0) - math.log(k)).item()


def datapoint_loop(model: VAE, x: Tensor, k: int) -> None:
    for i in range(x.shape[0]):
        model.iw_estimate(x[i : i + 1], k, chunk_size=k)


def decoder_layers(model: VAE) -> list[nn.Linear]:
    return [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]


def matmuls(layers: list[nn.Linear], rows: int, passes: int) -> Callable[[], None]:
    """``passes`` x the decoder's matmuls on ``rows`` rows, without bias or activation."""
    device = layers[0].weight.device
    operands = [
        (torch.randn(rows, m.in_features, device=device), m.weight.detach().T.contiguous())
        for m in layers
    ]

    def run() -> None:
        for _ in range(passes):
            for a, w in operands:
                torch.matmul(a, w)

    return run


def run(bench: Bench, size: Size) -> Result:
    model = bench.model().eval()
    k, batch = size.num_samples, bench.cfg.data.eval_batch_size
    chunk = min(model.chunk_size_for(batch), k)
    x = bench.test_points(size.points)
    loop_x = x[: size.loop_points]
    layers = decoder_layers(model)
    flops_per_sample = sum(2 * m.in_features * m.out_features for m in layers)
    rows = chunk * min(batch, x.shape[0])
    passes = size.matmul_passes
    fns = {
        "ours": lambda: batched(model, x, k, chunk, batch),
        "library_loop": lambda: library_loop(model, loop_x, k),
        "datapoint_loop": lambda: datapoint_loop(model, loop_x, k),
        "matmul": matmuls(layers, rows, passes),
    }
    figures: dict[str, float | int | str | None] = {}
    with torch.inference_mode():
        if size.compile:
            compiled_model = bench.model().eval()
            compiled_model.compile_estimates()
            timed(lambda: batched(compiled_model, x, k, chunk, batch))  # compiles every shape
            figures["compile_s"] = compiled_model.compile_seconds
            fns["ours_compiled"] = lambda: batched(compiled_model, x, k, chunk, batch)
        seconds = interleaved(fns, size.repeats)

    goals = [Goal("speedup_vs_library_loop", ">=", 5.0), Goal("fraction_of_matmul_peak", ">=", 0.5)]

    def rate(name: str, points: int) -> float:
        return points * k / seconds[name]

    ours, library = rate("ours", x.shape[0]), rate("library_loop", loop_x.shape[0])
    peak = passes * rows * flops_per_sample / seconds["matmul"]
    figures.update(
        {
            "num_samples": k,
            "chunk_size": chunk,
            "batch_size": batch,
            "points_ours": x.shape[0],
            "points_loops": loop_x.shape[0],
            "samples_per_s_ours": ours,
            "samples_per_s_library_loop": library,
            "samples_per_s_datapoint_loop": rate("datapoint_loop", loop_x.shape[0]),
            "speedup_vs_library_loop": ours / library,
            "speedup_vs_datapoint_loop": ours / rate("datapoint_loop", loop_x.shape[0]),
            "decoder_gflop_per_sample": flops_per_sample / 1e9,
            "matmul_peak_gflops": peak / 1e9,
            "decoder_gflops_ours": ours * flops_per_sample / 1e9,
            "fraction_of_matmul_peak": ours * flops_per_sample / peak,
            "ceiling_speedup_vs_library_loop": peak / flops_per_sample / library,
        }
    )
    if size.compile:
        compiled_rate = rate("ours_compiled", x.shape[0])
        figures["samples_per_s_ours_compiled"] = compiled_rate
        figures["speedup_of_compile"] = compiled_rate / ours
        figures["speedup_compiled_vs_library_loop"] = compiled_rate / rate(
            "library_loop", loop_x.shape[0]
        )
        goals.append(Goal("speedup_compiled_vs_library_loop", ">=", 3.5))
    return Result(
        figures,
        goals,
        note=f"K={k}, chunk {chunk} x batch {batch}; medians of {size.repeats} interleaved runs",
    )

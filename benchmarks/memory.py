"""Memory: the peak memory of the K = 5000 IW estimate against K = 500, on one batch.

The estimate draws ``eval.chunk_size`` samples per datapoint at a time, so its peak is set by
chunk x batch (the [chunk, batch, X] logits and the buffer of their log-density), not by K:
peak(K = 5000) / peak(K = 500) should stay near 1 (goal <= 1.25), where without chunks it would
grow tenfold. The figures also give the size of one such buffer with and without chunks.

On a GPU the peak is ``torch.cuda.max_memory_allocated``. On a CPU it is the growth of the
resident set (VmHWM, reset through ``/proc/self/clear_refs``, Linux), measured in a child
process whose allocator returns every freed block to the system (``MALLOC_MMAP_THRESHOLD_``),
so that memory freed by one measurement cannot be reused unseen by the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.common import REPO, Bench, Goal, Result


@dataclass
class Size:
    points: int = 100  # one batch
    small_k: int = 500
    large_k: int = 5000


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(points=20, small_k=50, large_k=500)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Memory in use at the peak of ``fn()`` beyond what was in use before it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kb("VmRSS")
    fn()
    return 1024 * (_status_kb("VmHWM") - before)


def measure(bench: Bench, size: Size) -> dict[str, int]:
    """Peak bytes of the estimate at each K, after a warm-up call."""
    model = bench.model().eval()
    x = bench.test_points(size.points)
    chunk = model.chunk_size_for(x.shape[0])
    with torch.inference_mode():
        model.iw_estimate(x, chunk)
        return {
            str(k): peak_bytes(lambda k=k: model.iw_estimate(x, k))
            for k in (size.small_k, size.large_k)
        }


def run(bench: Bench, size: Size) -> Result:
    request = {
        "overrides": bench.overrides,
        "size": asdict(size),
        "threads": torch.get_num_threads(),
    }
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", json.dumps(request)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    peaks = json.loads(child.stdout.strip().splitlines()[-1])
    small, large = peaks[str(size.small_k)], peaks[str(size.large_k)]
    batch = min(size.points, bench.cfg.data.eval_batch_size)
    chunk = bench.model().chunk_size_for(batch)
    buffer_mb = 4 * batch * bench.data_dim / 1e6  # one float32 [1, batch, X] slice
    figures = {
        "method": "cuda max_memory_allocated" if torch.cuda.is_available() else "VmHWM (RSS)",
        "chunk_size": chunk,
        "batch_size": batch,
        f"peak_mb_k{size.small_k}": small / 1e6,
        f"peak_mb_k{size.large_k}": large / 1e6,
        "ratio_large_vs_small_k": large / small,
        "buffer_mb_chunked": chunk * buffer_mb,
        "buffer_mb_unchunked": size.large_k * buffer_mb,
    }
    return Result(
        figures,
        [Goal("ratio_large_vs_small_k", "<=", 1.25)],
        note=f"K={size.large_k} vs K={size.small_k} on {size.points} datapoints",
    )


def main(request: dict) -> None:
    torch.set_num_threads(request["threads"])
    bench = Bench.create(request["overrides"])
    print(json.dumps(measure(bench, Size(**request["size"]))))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

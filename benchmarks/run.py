"""``python -m benchmarks.run`` (``make bench``): run the benchmarks, print a table of their
figures and goals, and write them with the machine they ran on to ``bench.json``.

    --only NAME ...        run only these benchmarks (training, paper_budget, iw, memory, qstar,
                           ais)
    --threads N            torch threads (default: torch's choice, but 1 when the load average
                           is at least the number of cores: on a shared machine, OpenMP
                           threads stall waiting for peers that are not scheduled)
    --tiny                 every benchmark at a tiny size: checks the code, not the speed
    --override KEY=VALUE   config overrides on top of the MNIST model (e.g. data.root=DIR)
    --out PATH             default: bench.json at the repository root

A benchmark whose module cannot be imported (a feature that has not landed) is reported as not
available, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import REPO, Bench, Result
from vae_lab.training.threads import use_threads

BENCHMARKS = ("training", "paper_budget", "iw", "memory", "qstar", "ais")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def default_threads() -> int:
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    return 1 if busy else torch.get_num_threads()


def machine(bench: Bench) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "openmp_spin_count": os.environ.get("GOMP_SPINCOUNT"),
        "torch": torch.__version__,
        "device": str(bench.device),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def run_one(name: str, bench: Bench, tiny: bool) -> tuple[Result, dict[str, Any]]:
    """The benchmark's result and the size it ran at (each module has ``Size`` and ``TINY``)."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as err:
        return Result.unavailable(f"not available: {err}"), {}
    size = module.TINY if tiny else module.Size()
    return module.run(bench, size), asdict(size)


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(results: dict[str, Result]) -> str:
    rows = [("benchmark", "figure", "value", "goal")]
    for name, result in results.items():
        if not result.available:
            rows.append((name, "-", result.note, ""))
            continue
        goals = {g.figure: g for g in result.goals}
        for figure, value in result.figures.items():
            goal = goals.get(figure)
            mark = (
                ""
                if goal is None
                else f"{goal.op} {goal.target:g}: " + ("met" if goal.met(value) else "MISSED")
            )
            rows.append((name, figure, format_value(value), mark))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "bench.json")
    return parser.parse_args(argv)


def quiet() -> None:
    """Keep Lightning's banners and known warnings out of the table."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet()
    flushed = use_threads(args.threads or default_threads())  # as a run's: subnormals flushed
    start = time.perf_counter()
    bench = Bench.create(dict(o.split("=", 1) for o in args.override))
    report: dict[str, Any] = {"machine": machine(bench), "config": bench.overrides}
    report["machine"]["subnormals_flushed"] = flushed
    results: dict[str, Result] = {}
    sizes: dict[str, Any] = {}
    for name in args.only:
        began = time.perf_counter()
        results[name], sizes[name] = run_one(name, bench, args.tiny)
        print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report["sizes"] = sizes
    report["benchmarks"] = {name: result.to_json() for name, result in results.items()}
    report["wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out} in {report['wall_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()

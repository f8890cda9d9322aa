"""Several jobs sharing one device: ``python -m benchmarks.sharing`` runs the inference_gap
preset's model at a short budget as Hydra sweeps of the joblib launcher with N jobs at a time,
for each N asked, and says how many jobs per hour each N gives and what that predicts for the
whole preset (54 jobs of 3,280 epochs).

    python -m benchmarks.sharing --n-jobs 1 4 8 16 --epochs 2 --override trainer=gpu

Each sweep runs ``max(N, 2)`` jobs (seeds 0, 1, ...) with ``n_jobs = N``, so each N is one
wave of jobs started together. A job is what a user runs: a process of its own that starts
Python, builds the model, trains, tests (IW with K = ``--test-samples``) and writes its
records. From each job's metrics.json, ``steps_time_s`` (the training steps alone) over
``fit_steps`` is the time per step with N jobs sharing the device; a job's share of the
sweep's wall time less its steps and its test is its fixed cost (Python and its imports,
set-up, the sanity check, checkpoints, records). The preset's estimate is 54 jobs x (3,280 x
500 steps x that time + the fixed cost + the test at K = 5000, the test time here scaled by
5000 / K) / N; it leaves out the preset's validation every 10 epochs (K = 10 on 2,000
validation images: ``benchmarks/paper_budget.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, default_data_root

#: the preset whose wall time is predicted, and its size
PRESET = "inference_gap"
PRESET_JOBS = 54
PRESET_EPOCHS = 3280
PRESET_TEST_SAMPLES = 5000
STEPS_PER_EPOCH = 500  # 50,000 training images, batch 100


def sweep(n_jobs: int, epochs: int, test_samples: int, overrides: list[str], folder: Path) -> float:
    """Run one sweep of ``max(n_jobs, 2)`` jobs, ``n_jobs`` at a time; its wall time in s."""
    seeds = ",".join(str(s) for s in range(max(n_jobs, 2)))
    command = [
        sys.executable, "-m", "vae_lab.run", "-m", f"experiment={PRESET}",
        "posterior=gaussian", "prior=standard", f"seed={seeds}",
        "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}",
        f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
        f"eval.num_samples={test_samples}", f"hydra.sweep.dir={folder}", *overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"sweep with n_jobs={n_jobs} failed:\n{result.stderr[-3000:]}")
    return wall


def jobs_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]


def figures(n_jobs: int, wall: float, jobs: list[dict[str, Any]], k: int) -> dict:
    """A slot (one of the n_jobs running at once) spends ``wall * n_jobs / jobs`` per job:
    its training steps, its test, and a fixed cost."""
    step_s = statistics.median(j["steps_time_s"] / j["fit_steps"] for j in jobs)
    test_s = statistics.median(j["test_time_s"] for j in jobs)
    steps_s = statistics.median(j["steps_time_s"] for j in jobs)
    fixed_s = wall * n_jobs / len(jobs) - steps_s - test_s
    preset_job_s = (
        PRESET_EPOCHS * STEPS_PER_EPOCH * step_s + fixed_s + test_s * PRESET_TEST_SAMPLES / k
    )
    return {
        "n_jobs": n_jobs,
        "jobs": len(jobs),
        "sweep_wall_s": wall,
        "jobs_per_hour": 3600 * len(jobs) / wall,
        "step_ms_per_job": 1e3 * step_s,
        "steps_per_s_all_jobs": n_jobs / step_s,
        "test_s_per_job": test_s,
        "fixed_s_per_job": fixed_s,
        "preset_hours_one_device": PRESET_JOBS * preset_job_s / n_jobs / 3600,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-jobs", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-samples", type=int, default=100)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "sharing.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    overrides = list(args.override)
    root = default_data_root()
    if root is not None and not any(o.startswith("data.root=") for o in overrides):
        overrides.append(f"data.root={root}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # one job first, untimed: it trains and caches the sample-quality classifier
        sweep(1, 1, args.test_samples, overrides, Path(tmp) / "warm-up")
        for n in args.n_jobs:
            folder = Path(tmp) / f"n{n}"
            wall = sweep(n, args.epochs, args.test_samples, overrides, folder)
            rows.append(figures(n, wall, jobs_of(folder), args.test_samples))
            print(json.dumps(rows[-1]), flush=True)
            args.out.write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=2))
    best = max(rows, key=lambda r: r["steps_per_s_all_jobs"])
    print(
        f"best n_jobs={best['n_jobs']}: {best['jobs_per_hour']:.0f} jobs/h at this budget; "
        f"the {PRESET} preset ({PRESET_JOBS} jobs x {PRESET_EPOCHS} epochs): "
        f"{best['preset_hours_one_device']:.1f} h on one device, "
        f"{best['preset_hours_one_device'] / 8:.1f} h on 8 (one sweep per device)"
    )
    return rows


if __name__ == "__main__":
    main()

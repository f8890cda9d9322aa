"""The benchmarks run end to end at a tiny size and write bench.json with every figure, so their
code cannot rot. No timing is asserted: speed is measured by ``make bench``, not by tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import vae_lab
from benchmarks import run
from benchmarks.common import compose_config as bench_config
from tests.conftest import REPO

#: the figures the issue asks for, per benchmark
REQUIRED = {
    "training": [
        "epoch_s_framework",
        "epoch_s_bare_pytorch",
        "ratio_framework_vs_bare",
        "step_ms_trainer_floor",
        "ratio_at_trainer_floor",
    ],
    "iw": [
        "samples_per_s_ours",
        "samples_per_s_library_loop",
        "speedup_vs_library_loop",
        "matmul_peak_gflops",
        "fraction_of_matmul_peak",
        "ceiling_speedup_vs_library_loop",
    ],
    "memory": ["peak_mb_k50", "peak_mb_k500", "ratio_large_vs_small_k"],
    "qstar": ["point_steps_per_s_batched", "point_steps_per_s_loop", "speedup_vs_loop"],
    "ais": ["point_chain_steps_per_s"],
    "paper_budget": ["paper_budget_minutes", "epoch_s"],  # validation_s may round to 0 at tiny
}

#: figures made of a difference of two timings: on a busy machine either side may be the larger
DIFFERENCES = {"step_ms_trainer_floor", "ratio_at_trainer_floor"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    try:
        run.main(["--tiny", "--threads", "1", "--override", "data=digits", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_bench_json_names_the_machine(report: dict) -> None:
    machine = report["machine"]
    keys = ("cpu", "cores", "torch_threads", "openmp_spin_count", "subnormals_flushed", "torch",
            "device", "load_average_at_start")  # fmt: skip
    for key in keys:
        assert key in machine, key
    assert report["wall_s"] > 0


@pytest.mark.parametrize("name", list(REQUIRED))
def test_every_benchmark_reports_its_figures_and_goals(report: dict, name: str) -> None:
    result = report["benchmarks"][name]
    assert result["available"], result["note"]
    figures = result["figures"]
    for figure in REQUIRED[name]:
        assert isinstance(figures[figure], float) and math.isfinite(figures[figure]), figure
        if figure not in DIFFERENCES:
            assert figures[figure] > 0, figure
    for goal in result["goals"]:
        assert goal["value"] == figures[goal["figure"]]
        assert isinstance(goal["met"], bool)


def test_bare_loop_trains_the_same_model(report: dict) -> None:
    assert report["benchmarks"]["training"]["figures"]["same_loss"]


def test_table_lists_every_figure(report: dict) -> None:
    results = {
        name: run.Result(r["figures"], note=r["note"], available=r["available"])
        for name, r in report["benchmarks"].items()
    }
    text = run.table(results)
    for name, result in report["benchmarks"].items():
        for figure in result["figures"]:
            assert figure in text, (name, figure)


def test_the_benchmarks_spin_openmp_threads_as_a_run_does() -> None:
    """OpenMP reads GOMP_SPINCOUNT once, as torch loads it: importing the benchmarks imports
    vae_lab, which sets it, before anything imports torch."""
    code = "import os, sys, benchmarks; print('torch' in sys.modules, os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["False", vae_lab.OPENMP_SPIN_COUNT]


def test_the_benchmarks_draw_the_training_bar_as_a_terminal_does() -> None:
    """The bench's output is redirected, where a run would print lines instead of its bar: the
    bench asks for the bar, so that its cost stays in the framework's epoch."""
    assert bench_config({}).callbacks.progress_bar.bar is True

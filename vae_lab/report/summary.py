"""A Hydra callback: a sweep starts only in a folder of its own, and ends with one line on how
its jobs ended.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Each job records its own failure
and the sweep goes on; once all jobs are done, the process exits with status 1 if any failed,
so a script or CI notices. A sweep stopped by a signal (``vae_lab.run.main``) logs the same
line, with the jobs not started, before it exits with 128 + signal.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_lab.outputs import METRICS_FILE
from vae_lab.report.collect import NoRunsError, find_runs, status_counts, with_status

log = logging.getLogger(__name__)

_expected_jobs: list[int] = []  # the job count of the sweep this process runs, once known


def expected_jobs(config: DictConfig) -> int:
    """The number of jobs of a grid sweep: the product of the sizes of its swept values."""
    params = dict(config.hydra.get("sweeper", {}).get("params") or {})
    for override in config.hydra.overrides.task:
        key, _, value = override.partition("=")
        params[key] = value
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed)


def log_sweep_summary(sweep_dir: Path) -> list[Any]:
    """Log how the jobs under ``sweep_dir`` ended (and how many never started); the runs."""
    try:
        runs = find_runs([sweep_dir])
    except NoRunsError:
        runs = []
    counts = status_counts(runs) if runs else "no job recorded"
    if _expected_jobs and _expected_jobs[0] > len(runs):
        counts += f", {_expected_jobs[0] - len(runs)} not started"
    log.info("sweep %s: %s; report: python -m vae_lab.report %s", sweep_dir, counts, sweep_dir)
    return runs


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and next(sweep_dir.rglob(METRICS_FILE), None) is not None:
            print(
                f"error: {sweep_dir} already holds the runs of another sweep: a sweep folder "
                "holds one sweep; choose another hydra.sweep.dir",
                file=sys.stderr,
            )
            sys.exit(2)
        try:
            _expected_jobs[:] = [expected_jobs(config)]
        except Exception:  # a sweeper of its own kind: count what ran
            _expected_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        runs = log_sweep_summary(Path(config.hydra.sweep.dir))
        if len(with_status(runs, "completed")) < max(len(runs), *_expected_jobs, 1):
            sys.exit(1)

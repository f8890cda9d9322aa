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
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_lab.records.collect import NoRunsError, find_runs, status_counts, with_status
from vae_lab.records.outputs import METRICS_FILE

log = logging.getLogger(__name__)

#: the closing bracket of each opening one: a comma between them does not split a sweep
CLOSING = {"[": "]", "{": "}", "(": ")"}
#: a whole value that is a function call: its name and its arguments
CALL = re.compile(r"\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*", re.DOTALL)

_expected_jobs: list[int] = []  # the job count of the sweep this process runs, once known


def split_top_level(value: str) -> list[str]:
    """``value`` split at its commas outside brackets, braces, parentheses and quotes; a
    backslash escapes the character after it. Raises ValueError on unbalanced brackets or
    quotes."""
    parts, start, expected, quote, escaped = [], 0, [], None, False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in CLOSING:
            expected.append(CLOSING[char])
        elif char in CLOSING.values():
            if not expected or expected.pop() != char:
                raise ValueError(f"unbalanced {char!r} in {value!r}")
        elif char == "," and not expected:
            parts.append(value[start:i])
            start = i + 1
    if quote is not None or expected:
        raise ValueError(f"unclosed {quote or expected[-1]!r} in {value!r}")
    return [*parts, value[start:]]


def count_element(element: str) -> int:
    """How many values one element of a sweep stands for: ``range(a, b[, step])`` as many as
    Python's range, any other function call cannot be counted (ValueError), anything else one."""
    call = CALL.fullmatch(element)
    if call is None:
        return 1
    name, arguments = call.groups()
    if name != "range":
        raise ValueError(f"cannot count the values of {element.strip()!r}")
    return len(range(*(int(argument) for argument in split_top_level(arguments))))


def count_values(value: str) -> int:
    """How many values an override's value sweeps: its top-level comma-separated elements,
    each counted by ``count_element``; 1 for a value that does not sweep."""
    return sum(count_element(element) for element in split_top_level(value))


def expected_jobs(config: DictConfig) -> int:
    """The number of jobs of a grid sweep: the product of the sizes of its swept values, from
    ``hydra.sweeper.params`` and the command line's overrides (which replace a param of the
    same key). Raises ValueError for a sweep it cannot count (e.g. ``glob(...)``)."""
    params = {
        str(k): str(v) for k, v in (config.hydra.get("sweeper", {}).get("params") or {}).items()
    }
    for override in config.hydra.overrides.task:
        key, _, value = override.partition("=")
        params[key] = value
    return math.prod(count_values(value) for value in params.values())


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
        except Exception:  # a sweep it cannot count, or a sweeper of its own kind: count what ran
            _expected_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        runs = log_sweep_summary(Path(config.hydra.sweep.dir))
        if len(with_status(runs, "completed")) < max(len(runs), *_expected_jobs, 1):
            sys.exit(1)

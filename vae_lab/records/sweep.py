"""A Hydra callback: a sweep starts only in a folder of its own, and ends with one line on how
its jobs ended.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Each job records its own failure
and the sweep goes on; once all jobs are done, the process exits with status 1 if any failed,
so a script or CI notices. A sweep stopped by a signal (``vae_lab.run.main``) logs the same
line, with the jobs not started, before it exits with 128 + signal.

A job whose process is killed outright (SIGKILL, the out-of-memory killer) cannot record how
it ended; its metrics.json keeps ``status: running`` but no process holds its writer lock any
more, and the summary counts it as ``killed``. Such a death also stops the launcher (joblib's
``TerminatedWorkerError``, submitit's ``UncompletedJobError``). Hydra would print the
launcher's traceback; during a sweep ``HYDRA_FULL_ERROR`` is set (unless the user set it) so
that the exception reaches ``vae_lab.run.main`` instead, which hands it to
``launcher_stopped``: one line naming the failure, a wait for the jobs still training (each
submitit or SLURM job is a process of its own, which goes on), then the summary.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
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
_sweep_dir: list[Path] = []  # the folder of the sweep this process runs, once started
_catching: list[bool] = []  # whether HYDRA_FULL_ERROR was set here, for launcher_stopped
#: seconds between two looks at the jobs still training after the launcher stopped
POLL_S = 2.0


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


def sweep_runs(sweep_dir: Path) -> list[Any]:
    """The runs under ``sweep_dir`` (``find_runs``: one left ``running`` whose process was
    killed has status ``killed``)."""
    try:
        return find_runs([sweep_dir])
    except NoRunsError:
        return []


def log_sweep_summary(sweep_dir: Path) -> list[Any]:
    """Log how the jobs under ``sweep_dir`` ended (and how many never started); the runs."""
    runs = sweep_runs(sweep_dir)
    counts = status_counts(runs) if runs else "no job recorded"
    if _expected_jobs and _expected_jobs[0] > len(runs):
        counts += f", {_expected_jobs[0] - len(runs)} not started"
    log.info("sweep %s: %s; report: python -m vae_lab.report %s", sweep_dir, counts, sweep_dir)
    return runs


def catches_launcher_errors() -> bool:
    """Whether an exception out of Hydra is the sweep launcher's, for ``launcher_stopped``
    (not where the user set ``HYDRA_FULL_ERROR`` to see tracebacks)."""
    return bool(_catching)


def end_sweep() -> None:
    """Forget the sweep this process ran, and the ``HYDRA_FULL_ERROR`` it set."""
    if _catching:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    _catching.clear()
    _sweep_dir.clear()


def launcher_stopped(err: Exception) -> int:
    """After the launcher raised ``err`` (a job's process died): one line, a wait for the jobs
    still training, the sweep summary; the exit status, 1."""
    first = "".join(str(err).strip().splitlines()[:1])
    # on a line of its own: a job that shares this stderr (joblib's) may have been stopped
    # in the middle of a progress bar's line
    print(f"\nerror: the sweep's launcher stopped: {type(err).__name__}: {first} "
          "(HYDRA_FULL_ERROR=1 shows its traceback)", file=sys.stderr)  # fmt: skip
    waited: set[Path] = set()
    while training := {run.folder for run in sweep_runs(_sweep_dir[0]) if run.status == "running"}:
        if training != waited:
            log.info("waiting for the job(s) still training: %s", ", ".join(map(str, training)))
            waited = training
        time.sleep(POLL_S)
    log_sweep_summary(_sweep_dir[0])
    return 1


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        _sweep_dir[:] = [sweep_dir]
        if "HYDRA_FULL_ERROR" not in os.environ:  # the launcher's failure: launcher_stopped
            os.environ["HYDRA_FULL_ERROR"] = "1"
            _catching[:] = [True]
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

"""How many threads torch computes with, and a warning when the cores are already taken.

Torch's own default is the machine's cores, not those this process may run on: a job pinned to
4 cores of 64 (``taskset``, a SLURM allocation, a container's cpuset) would start 64 threads on
4 cores and thrash. The default here is the affinity mask's size. ``OMP_NUM_THREADS`` comes
first: the joblib launcher sets it to cores // n_jobs in each worker so that parallel jobs share
the cores (``conf/config.yaml`` reads it too, so the resolved config records it).

The threads are also where subnormal floats are flushed to zero (``subnormals``): a thread takes
that mode from the thread that starts it, so it is set before torch's pool of threads starts.
"""

from __future__ import annotations

import logging
import os

import torch
from omegaconf import OmegaConf

from vae_lab.config.validation import validate
from vae_lab.training.subnormals import flush_subnormals, subnormals_flushed

log = logging.getLogger(__name__)


def available_cores() -> int:
    """The cores this process may run on: its affinity mask where the OS has one (Linux), else
    every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` where set (a launcher's share of the cores), else ``available_cores``."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value else available_cores()


def oversubscribed(load: float, cores: int, threads: int) -> bool:
    """Whether other processes already use the cores we are about to compute on.

    ``load`` is the 1-minute load average before we start. It still carries the previous job of
    a sequential sweep in this same process (up to ``threads``, at most ``cores``), so only a load
    above the cores by at least one job of ours (``threads``) says that others compete.
    """
    return load >= cores + threads


def use_threads(num_threads: int | None) -> bool:
    """Give torch ``num_threads`` intra-op threads (None: ``default_threads()``) that flush
    subnormal floats to zero, with one warning line when the machine is oversubscribed: then the
    threads wait on each other, and a job can run several times slower than alone. Returns
    whether every thread flushes (not where the CPU cannot, or the pool started earlier)."""
    validate(OmegaConf.create({"num_threads": num_threads}))
    threads = default_threads() if num_threads is None else num_threads
    flushing = flush_subnormals()
    torch.set_num_threads(threads)
    flushed = flushing and subnormals_flushed(threads)  # started here, the pool takes the mode
    count = torch.get_num_threads()
    log.info("torch uses %d thread%s%s", count, "" if count == 1 else "s",
             ", subnormal floats flushed to zero" if flushed else "")  # fmt: skip
    if not hasattr(os, "getloadavg"):  # Windows
        return flushed
    load, cores = os.getloadavg()[0], available_cores()
    if oversubscribed(load, cores, threads):
        fewer = "set num_threads=1 or " if threads > 1 else ""
        log.warning(
            "the machine is oversubscribed: load average %.1f on %d cores before this job's "
            "threads (%d) start; %srun fewer jobs at once (hydra.launcher.n_jobs)",
            load, cores, threads, fewer,
        )  # fmt: skip
    return flushed

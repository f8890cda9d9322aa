"""A Hydra callback: at the end of a sweep, one line on how its jobs ended.

Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Each job records its own failure
and the sweep goes on; once all jobs are done, the process exits with status 1 if any failed,
so a script or CI notices.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_lab.report.collect import NoRunsError, find_runs, status_counts, with_status

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = find_runs([sweep_dir])
        except NoRunsError:
            return
        log.info(
            "sweep %s: %s; report: python -m vae_lab.report %s",
            sweep_dir,
            status_counts(runs),
            sweep_dir,
        )
        if with_status(runs, "failed"):
            sys.exit(1)

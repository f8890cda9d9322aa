"""The CSV logger: metrics.csv in the run folder."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pytorch_lightning import loggers as pl_loggers


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's CSVLogger, continuing a ``metrics.csv`` that already exists.

    Lightning's writer starts with no known columns and, on its first save to an existing file,
    rewrites it with only the columns it has seen, which fails on the file's other columns.
    A file is written by more than one writer when a run is resumed, and under ``ddp_spawn``,
    whose fit and test stages run in separate processes. This writer starts from the file's
    header instead.
    """

    @property
    def experiment(self) -> Any:
        writer = super().experiment  # on ranks other than 0, a dummy without a file
        path = getattr(writer, "metrics_file_path", None)
        if isinstance(path, str) and not writer.metrics_keys and Path(path).is_file():
            with Path(path).open(newline="") as file:
                writer.metrics_keys = sorted(next(csv.reader(file), []))
        return writer

"""The CSV logger: ``<run folder>/csv/metrics.csv``, one row per logged step.

A Lightning ``Logger`` of its own rather than Lightning's CSVLogger, whose writer deletes an
existing metrics.csv when it starts: here a file that exists is continued. That happens when a
run is resumed (``keep_until`` first drops the rows after the checkpoint, which are trained
again) and under ``ddp_spawn``, whose fit and test stages run in separate processes. Rows are
appended; the file is rewritten (atomically) only when a new metric name widens its header.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.records.outputs import write_text

METRICS_CSV = "metrics.csv"


def _header(path: Path) -> list[str]:
    """The column names, read from the first line alone: Lightning saves the logger at every
    logged step, and reading the whole file there made a run quadratic in its length."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return next(csv.reader(file), [])


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


class CSVLogger(Logger):
    def __init__(self, save_dir: str, name: str = "csv", flush_every_n_steps: int = 100) -> None:
        super().__init__()
        self._save_dir = save_dir
        self._name = name
        self.flush_every_n_steps = flush_every_n_steps
        self.pending: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(Path(self._save_dir) / self._name)

    @property
    def path(self) -> Path:
        return Path(self.log_dir) / METRICS_CSV

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's config is in its ``.hydra/config.yaml``."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: float(v) for k, v in metrics.items()}
        self.pending.append({**row, "step": step})
        if len(self.pending) >= self.flush_every_n_steps:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.pending:
            return
        columns = _header(self.path)
        new = {k for row in self.pending for k in row} - set(columns)
        if new:  # a missing or empty file has no header: every name is new
            columns, rows = _read(self.path)
            _write(self.path, sorted({*columns, *new}), [*rows, *self.pending])
        else:
            with self.path.open("a", newline="") as file:
                csv.DictWriter(file, fieldnames=columns).writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    @rank_zero_only
    def keep_until(self, step: int) -> None:
        """Drop the rows logged at ``step`` or later (a resumed run logs them again)."""
        columns, rows = _read(self.path)
        if rows:
            _write(self.path, columns, [r for r in rows if r["step"] and int(r["step"]) < step])

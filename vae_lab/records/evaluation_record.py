"""An evaluation's records in its run folder: ``eval.json`` (its settings, status, choices and
figures) and its ``eval/*`` figures merged into ``metrics.json``, both rewritten as each stage
ends, so that an interrupted evaluation keeps the stages it finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_lab.records.outputs import EVAL_FILE, EVAL_SPLIT, update_metrics, write_json


class EvaluationRecord:
    """The records of one evaluation of the run in ``run_dir``; ``head`` starts eval.json."""

    def __init__(self, run_dir: Path, head: dict[str, Any], split: str) -> None:
        self.run_dir, self.head, self.split = run_dir, head, split
        self.figures: dict[str, float] = {}
        self.chosen: dict[str, Any] = {}

    def add(self, metrics: dict[str, float], chosen: dict[str, Any]) -> None:
        """A stage's figures and choices, written at once."""
        self.figures |= metrics
        self.chosen |= chosen
        self._write("running")
        update_metrics(self.run_dir, {**metrics, EVAL_SPLIT: self.split})

    def end(self, status: str, error: str | None = None) -> dict[str, Any]:
        """Close the record as completed, failed or interrupted; the whole record."""
        return self._write(status, **({"error": error} if error else {}))

    def _write(self, status: str, **extra: Any) -> dict[str, Any]:
        record = {**self.head, "status": status, **extra, **self.chosen, **self.figures}
        write_json(self.run_dir / EVAL_FILE, record)
        return record

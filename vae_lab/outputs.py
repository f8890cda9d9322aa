"""The run folder's ``metrics.json``: one flat JSON object, written atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or inf; keep them visible, never silently dropped
    return value


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` via a temporary file and a rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump({k: _plain(v) for k, v in record.items()}, tmp, indent=2, sort_keys=True)
    os.replace(tmp.name, path)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS_FILE).read_text())


def update_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Merge ``record`` into the run's metrics.json (creating it if absent)."""
    path = run_dir / METRICS_FILE
    current = read_metrics(run_dir) if path.exists() else {}
    write_json(path, {**current, **record})

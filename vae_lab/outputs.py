"""The run folder's ``metrics.json``: one flat JSON object, written atomically.

Files are written to a temporary file beside the target, given the permissions of any file
the process creates (0666 less the umask, as ``open`` gives: 0644 by default, so another user
of a shared folder can read them), then renamed over the target: readers never see half.
"""

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, with the permissions of a newly created file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o666 & ~_umask())
    os.replace(tmp.name, path)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` as JSON, atomically (``write_text``)."""
    plain = {k: _plain(v) for k, v in record.items()}
    write_text(path, json.dumps(plain, indent=2, sort_keys=True))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS_FILE).read_text())


def update_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Merge ``record`` into the run's metrics.json (creating it if absent)."""
    path = run_dir / METRICS_FILE
    current = read_metrics(run_dir) if path.exists() else {}
    write_json(path, {**current, **record})

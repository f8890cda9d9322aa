"""The run folder's records: ``metrics.json``, one flat JSON object, and ``eval.json``, the
latest evaluation's, each written atomically.

Files are written to a temporary file beside the target, given the permissions of any file
the process creates (0666 less the umask, as ``open`` gives: 0644 by default, so another user
of a shared folder can read them), then renamed over the target: readers never see half. A
write that fails (a full disk, a file-size limit, a folder not writable) leaves the target as
it was and no temporary file, and raises ``WriteError``, one line naming the file.
An evaluation holds the run's ``.evaluate.lock`` while it writes (``evaluation_lock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vae_lab.config.identity import choices_of
from vae_lab.config.validation import ConfigError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: Hydra's folder of the run's composed config (config.yaml, hydra.yaml, overrides.yaml)
HYDRA_DIR = ".hydra"
#: the latest evaluation's record (``vae_lab.evaluate``); earlier ones in evals/<n>.json
EVAL_FILE = "eval.json"
EVAL_HISTORY = "evals"
#: the names of the evaluation's figures in metrics.json
EVAL_PREFIX = "eval/"
#: in metrics.json, the split the eval/* figures are of (absent: test, as before it was kept)
EVAL_SPLIT = "eval/split"
#: held by the evaluation of the run (``evaluation_lock``)
EVAL_LOCK = ".evaluate.lock"
#: held by the process that trains in the run folder (``run_lock``)
RUN_LOCK = ".run.lock"
#: the suffix of a file being written (``write_atomically``), renamed over its target when whole
TEMPORARY = ".tmp"


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


class WriteError(OSError):
    """A record that could not be written; the file is as it was."""


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text, or bytes) to a temporary file beside ``path``
    (``.NAME.<random>.tmp``), give it the permissions of a newly created file and rename it
    over ``path``. An exception that stops it leaves ``path`` as it was and removes the
    temporary file (an ``OSError`` becomes a one-line ``WriteError``); a kill can leave the
    temporary file, never a torn ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        beside = {"dir": path.parent, "prefix": f".{path.name}.", "suffix": TEMPORARY}
        mode = "wb" if isinstance(data, bytes) else "w"
        with tempfile.NamedTemporaryFile(mode, delete=False, **beside) as tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o666 & ~_umask())
        os.replace(tmp.name, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise
        reason = err.strerror or type(err).__name__
        raise WriteError(f"cannot write {path}: {reason}; it is as it was") from None


def remove_orphans(run_dir: Path) -> list[Path]:
    """Remove the temporary files that killed writes left in the run folder, its
    ``checkpoints/`` and ``.hydra/`` (``write_atomically``'s); returns them. Only with the run's
    locks held, when no writer of the folder is alive."""
    folders = (run_dir, run_dir / "checkpoints", run_dir / HYDRA_DIR)
    orphans = [p for folder in folders for p in folder.glob(f".*{TEMPORARY}")]
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return orphans


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``write_atomically``)."""
    write_atomically(path, text)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` as JSON, atomically (``write_text``)."""
    plain = {k: _plain(v) for k, v in record.items()}
    write_text(path, json.dumps(plain, indent=2, sort_keys=True))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's record; a file that is not one JSON object is a one-line ``ConfigError``."""
    path = run_dir / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        record = err
    if not isinstance(record, dict):
        raise ConfigError(
            f"{path} is not a run's record (not a JSON object: {record}); restore it, or move "
            "it away to evaluate the checkpoint alone"
        )
    return record


def update_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Merge ``record`` into the run's metrics.json (creating it if absent)."""
    path = run_dir / METRICS_FILE
    current = read_metrics(run_dir) if path.exists() else {}
    write_json(path, {**current, **record})


def retire_evaluation(run_dir: Path) -> Path | None:
    """Before a new evaluation of the run, or training that changes its checkpoints: move the
    earlier evaluation's eval.json to evals/<n>.json and take its figures (``eval/*``) out of
    metrics.json, so that metrics.json never mixes figures of two evaluations, or of a
    checkpoint that is gone, and no record is lost. Returns where eval.json went, if it was."""
    current, kept = run_dir / EVAL_FILE, None
    if current.exists():
        history = run_dir / EVAL_HISTORY
        history.mkdir(exist_ok=True)
        done = [int(p.stem) for p in history.glob("*.json") if p.stem.isdigit()]
        kept = history / f"{max(done, default=0) + 1}.json"
        current.rename(kept)
        log.info("the earlier evaluation's %s is kept as %s", EVAL_FILE, kept)
    if (run_dir / METRICS_FILE).exists():
        record = read_metrics(run_dir)
        if (rest := without_evaluation(record)) != record:
            write_json(run_dir / METRICS_FILE, rest)
    return kept


def without_evaluation(record: dict[str, Any]) -> dict[str, Any]:
    """The record less the evaluation's figures (``eval/*``)."""
    return {k: v for k, v in record.items() if not k.startswith(EVAL_PREFIX)}


@contextmanager
def folder_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the body, or raise ``ConfigError(busy)`` at
    once where another process holds it. The lock goes with the process, however it ends.
    Where the file system offers no ``flock`` (some cluster mounts), the body runs unlocked,
    with a warning."""
    with open(os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)) as handle:  # another user's too
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        except OSError as err:
            log.warning("cannot lock %s (%s): going on unlocked", path, err.strerror or err)
        yield


def evaluation_lock(run_dir: Path, then: str = "evaluate it again") -> AbstractContextManager:
    """The run's evaluation lock (``.evaluate.lock``): a second ``vae_lab.evaluate`` of the
    same run, or its resumed training, which would retire and rewrite eval.json and
    metrics.json under the first, is refused at once (the error ends "``then`` when that one
    ends")."""
    path = run_dir / EVAL_LOCK
    busy = f"{run_dir} is being evaluated by another process (it holds {path}): {then} when "
    return folder_lock(path, busy + "that one ends")


def run_lock(run_dir: Path) -> AbstractContextManager:
    """The run's writer lock (``.run.lock``), held by a training run or its resume for as long
    as it writes: a second process that would train in the folder (a sweep started twice into
    one folder, a resume of a run still training) is refused at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_LOCK
    return folder_lock(path, f"{run_dir} is in use by another process that trains in it (it "
                             f"holds {path}): a run folder has one writer; wait for it to end, "
                             "or choose another folder")  # fmt: skip


def held_by_another(run_dir: Path) -> bool:
    """Whether another process holds the run's writer lock (it is training)."""
    path = run_dir / RUN_LOCK
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False


def saved_choices(run_dir: Path) -> dict[str, str]:
    """The options of the run saved in ``run_dir/.hydra/hydra.yaml``."""
    hydra_cfg = OmegaConf.load(run_dir / HYDRA_DIR / "hydra.yaml").hydra
    return choices_of(hydra_cfg.runtime.choices)

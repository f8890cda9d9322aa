"""SIGTERM and Ctrl-C (SIGINT): recorded, then the process exits with status 128 + signal.

SLURM sends SIGTERM before a time limit or a preemption; a user presses Ctrl-C. While a
Lightning ``fit`` runs, its own SIGTERM handler stops training at the next step (and calls
this one too); outside it, this handler stops the run at once. Either way the job records
``status: interrupted`` and raises ``Interrupted``, which no ``except Exception`` (Hydra's
included) swallows, so a sweep stops, says how its jobs ended and exits non-zero.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

_received: list[int] = []


class Interrupted(BaseException):
    """A run stopped by ``signum``; ``run_dir`` is the folder that resumes it."""

    def __init__(self, signum: int, run_dir: Path, sweep_dir: Path | None = None) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.run_dir = run_dir
        self.sweep_dir = sweep_dir

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if signal.getsignal(signal.SIGTERM) is _handler:  # not inside Lightning's fit: stop now
        raise KeyboardInterrupt


def received() -> int | None:
    """The first signal received since ``catching_signals`` began, if any."""
    return _received[0] if _received else None


@contextmanager
def catching_signals() -> Iterator[None]:
    """Record SIGTERM and SIGINT for the duration; the previous handlers afterwards."""
    _received.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def resume_command(run_dir: Path) -> str:
    """The command that continues the run, quoted for a shell: a folder may hold spaces."""
    return f"python -m vae_lab.run {shlex.quote(f'resume={run_dir}')}"

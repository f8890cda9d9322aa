"""What a run prints: third-party tips that are not the user's business are silenced, and so
is one deprecation warning that Lightning's own internals raise on every run; every other
warning is kept."""

from __future__ import annotations

import logging
import warnings

from vae_lab.components.data import DataFileError
from vae_lab.config.validation import ConfigError
from vae_lab.records.outputs import WriteError

#: errors of the user's input, of a diverging run or of a record that cannot be written (a full
#: disk): reported as one line, no traceback
USER_ERRORS = (ConfigError, DataFileError, FloatingPointError, WriteError)
#: beginnings of third-party log lines that advertise rather than inform
TIPS = ("💡 Tip:",)
#: warnings raised inside a dependency about its own use of another (nothing the user can fix)
INTERNAL_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIPS)


def quiet_third_parties() -> None:
    """Install the filters (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for message in INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message)

"""vae_lab: VAE research on torch, Lightning and Hydra.

The Python API (docs/python_api.md): ``vae_lab.load(RUN_DIR)`` gives a trained run's model,
config, metrics and data; ``vae_lab.VAE`` is the model. Both are imported on first use, so that
the command lines (``python -m vae_lab.run``) import nothing of them before they need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_lab.model.module import VAE
    from vae_lab.records.loaded_run import LoadedRun, load

__all__ = ["VAE", "LoadedRun", "load"]

#: the API's names -> the module each is imported from on first use
_LAZY = {
    "VAE": "vae_lab.model.module",
    "LoadedRun": "vae_lab.records.loaded_run",
    "load": "vae_lab.records.loaded_run",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vae_lab' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

"""vae_lab: VAE research on torch, Lightning and Hydra.

The Python API (docs/python_api.md): ``vae_lab.load(RUN_DIR)`` gives a trained run's model,
config, metrics and data; ``vae_lab.VAE`` is the model. Both are imported on first use, so that
the command lines (``python -m vae_lab.run``) import nothing of them before they need it.

Importing the package first sets ``GOMP_SPINCOUNT`` (unless it is set): the number of times an
idle OpenMP thread of torch's CPU build polls for work before it sleeps. libgomp's default
keeps it spinning for about a third of a millisecond, so jobs that share the cores (two runs
started together, a sweep beside an evaluation) take each other's time spinning, several times
the wall time of each alone. A short spin slows a job that has the cores to itself, which may
set ``GOMP_SPINCOUNT=300000`` (libgomp's default) in its environment (docs/speed.md, "Jobs that
share the cores", has both figures). It must be set before torch loads OpenMP, hence here.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

#: OpenMP polls before an idle thread sleeps (see the module docstring)
OPENMP_SPIN_COUNT = "3000"
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)

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

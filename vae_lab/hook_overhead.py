"""What Lightning does around every hook call, made cheap by public means.

A training step passes about 20 hook points, each calling the LightningModule, the strategy
or every callback: some 120 calls, each wrapped the same way
(``pytorch_lightning.trainer.call``): the module's ``_current_fx_name`` is set before and
restored after, the call runs inside ``trainer.profiler.profile(name)``, and the callback's
``state_key`` goes into that name.
Lightning's own cost per step, 0.3-0.4 ms of a 2.6 ms MNIST step on a 2-core CPU (``make
bench``: ``step_ms_trainer_floor``), is in good part this wrapping. Three of its costs have
nothing to do with the hooks themselves:

``NullProfiler``    the Trainer's profiler when none is configured (``trainer.profiler: null``).
                    Lightning's default, ``PassThroughProfiler``, does nothing, but through a
                    generator-based context manager built and torn down ~120 times a step;
                    this one returns one shared ``nullcontext``. A configured profiler
                    (``trainer.profiler=simple``) is used as given.
``CheapAttributes`` a LightningModule mix-in: ``nn.Module.__setattr__`` runs isinstance checks
                    against Parameter, Module and Buffer (Python-level ``__instancecheck__``)
                    for every assignment, ~40 a step for ``_current_fx_name`` alone; a plain
                    value (None, str, bool, int, float) assigned to a name that is not a
                    parameter, buffer or submodule is stored directly, as nn.Module would.
``BestCheckpoint``  ``ModelCheckpoint`` whose ``state_key`` (a repr of its settings, built
                    per hook call) is built once: its settings do not change after
                    ``__init__``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler

#: values nn.Module stores as plain attributes unless the name is a parameter, buffer or module
PLAIN_VALUES = (type(None), str, bool, int, float)

_NO_PROFILING = nullcontext()


class NullProfiler(PassThroughProfiler):
    """Profiles nothing, at the cost of returning one shared context manager."""

    def profile(self, action_name: str) -> AbstractContextManager[Any]:
        return _NO_PROFILING


class CheapAttributes:
    """``__setattr__`` without nn.Module's type checks where they cannot change the outcome."""

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__
        if (
            type(value) in PLAIN_VALUES
            and name not in state.get("_parameters", ())
            and name not in state.get("_buffers", ())
            and name not in state.get("_modules", ())
        ):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with its ``state_key`` computed once, under ModelCheckpoint's name:
    checkpoints key the callback's state by it, so runs saved before this class resume with
    their best-model record."""

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        own, lightnings = type(self).__qualname__, ModelCheckpoint.__qualname__
        return lightnings + super().state_key.removeprefix(own)

"""A stage of the evaluation pipeline: what it needs, what it costs, what it returns.

Like an inference kernel (blackjax's init/step pair over a state), a stage is a small object
over a shared ``Context``: ``check`` runs before any stage does work (a bad setting fails in
seconds, not after an hour of AIS), ``applies`` says whether the run has anything for it (the
refined q of a semi-amortized run, the closed form of a pPCA model), ``cost`` says in words
what it will do, and ``run`` returns a ``StageResult``: figures as ``Figure`` (an estimate and
its stderr), plain numbers, what it chose, and state for the stages after it.

The same stage writes ``test/<name>`` figures at the end of ``vae_lab.run`` and
``eval/<name>`` figures in ``vae_lab.evaluate``: the prefix is the context's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor

from vae_lab.components.data import InMemoryDataModule
from vae_lab.components.data.batches import forked_rng, stream_seed
from vae_lab.estimators.estimate import Figure
from vae_lab.model.module import VAE


@dataclass
class StageResult:
    """What a stage found. ``figures`` and ``values`` are named without the prefix."""

    figures: dict[str, Figure] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, Any] = field(default_factory=dict)  # settings it chose, for eval.json
    log_px: dict[str, Figure] = field(default_factory=dict)  # estimator label -> log p(x)
    unreliable: set[str] = field(default_factory=set)  # labels of log_px that are flagged
    flags: list[str] = field(default_factory=list)  # one line each, for the headline
    state: dict[str, Any] = field(default_factory=dict)  # for later stages; not written

    def metrics(self, prefix: str) -> dict[str, float]:
        """The figures and values as recorded: ``prefix/name`` and ``prefix/name_stderr``."""
        out: dict[str, float] = {}
        for name, figure in self.figures.items():
            out |= figure.named(f"{prefix}/{name}")
        return out | {f"{prefix}/{name}": float(v) for name, v in self.values.items()}


@dataclass
class Context:
    """What the stages share: the model, the points evaluated, the settings, the results so
    far (stage name -> result)."""

    model: VAE
    x: Tensor  # the points evaluated, [N, X], on the model's device
    datamodule: InMemoryDataModule
    cfg: DictConfig  # the run's config: eval.*, sample_quality, refit
    prefix: str  # test (vae_lab.run) or eval (vae_lab.evaluate)
    num_samples: int  # K of the IW stages
    seed: int
    run_dir: Path | None = None
    results: dict[str, StageResult] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.data.eval_batch_size)

    @property
    def chunk_size(self) -> int:
        return self.cfg.eval.chunk_size or self.model.chunk_size_for(self.batch_size)

    def batches(self) -> list[slice]:
        return [slice(i, i + self.batch_size) for i in range(0, len(self.x), self.batch_size)]

    @contextmanager
    def seeded(self, stage: str, batch: int = 0) -> Iterator[None]:
        """Draw from the stream named (seed, stage, batch), leaving the caller's untouched:
        the figures of a checkpoint do not depend on which stages ran before."""
        with forked_rng(self.x.device):
            torch.manual_seed(stream_seed(self.seed, stage, batch))
            yield


class Stage:
    """A stage; subclasses set ``name`` and override ``run`` (and what else applies)."""

    name: ClassVar[str]
    #: one line: what it estimates
    summary: ClassVar[str] = ""
    #: the config keys it reads
    keys: ClassVar[tuple[str, ...]] = ()
    #: stages whose results it needs: the pipeline adds them, and runs them first
    needs: ClassVar[tuple[str, ...]] = ()
    #: stages whose results it uses where they ran: it runs after them
    after: ClassVar[tuple[str, ...]] = ()

    def check(self, cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
        """Raise a ConfigError for a bad setting, before any stage does work."""

    def applies(self, ctx: Context) -> bool:
        return True

    def cost(self, ctx: Context) -> str:
        """In words, what it will compute (shown as it starts)."""
        return self.summary

    def run(self, ctx: Context) -> StageResult:
        raise NotImplementedError

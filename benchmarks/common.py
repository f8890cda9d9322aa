"""What the benchmarks share: the MNIST model and data from the real config, interleaved
timing, and the result format."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
T = TypeVar("T")

#: the MNIST model of Burda et al. (2016) and Cremer et al. (2018): 784-200-200-50, batch 100
MNIST_MODEL = {
    "data": "mnist",
    "model": "mlp",
    "model.hidden": "[200,200]",
    "latent_dim": "50",
    "posterior": "gaussian",
    "prior": "standard",
    "likelihood": "bernoulli",
    "data.batch_size": "100",
    "data.eval_batch_size": "100",
}
#: the training bar drawn (into a buffer, ``quiet_terminal``) as on a terminal, its cost counted,
#: where the bench's output, redirected, would otherwise have lines instead
TERMINAL = {"callbacks.progress_bar.bar": "true"}


def default_data_root() -> str | None:
    """$VAE_LAB_DATA, else the shared data folder beside the repository if it holds MNIST."""
    if "VAE_LAB_DATA" in os.environ:
        return os.environ["VAE_LAB_DATA"]
    shared = REPO.parent / "shared" / "data"
    return str(shared) if (shared / "mnist").is_dir() else None


def compose_config(overrides: Mapping[str, str]) -> DictConfig:
    """The MNIST model's config, with ``overrides`` (key -> value) on top."""
    merged = {**MNIST_MODEL, **TERMINAL, **overrides}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"{k}={v}" for k, v in merged.items()])


@dataclass
class Bench:
    """The composed config and the loaded data (on ``device``), shared by every benchmark."""

    cfg: DictConfig
    datamodule: InMemoryDataModule
    device: torch.device
    overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, overrides: Mapping[str, str] | None = None) -> Bench:
        overrides = dict(overrides or {})
        cfg = compose_config(overrides)
        root = default_data_root()
        if cfg.data.get("root", "") is None and root is not None:  # a file dataset, no root set
            overrides["data.root"] = root
            cfg = compose_config(overrides)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup()
        datamodule.splits = tuple(s.to(device) for s in datamodule.splits)
        return cls(cfg, datamodule, device, overrides)

    @property
    def data_dim(self) -> int:
        return self.datamodule.data_dim

    def model(self, seed: int = 0) -> VAE:
        """A freshly initialised model (the same weights for the same seed), on the device."""
        torch.manual_seed(seed)
        return VAE.from_config(self.cfg, self.data_dim).to(self.device)

    def test_points(self, n: int) -> torch.Tensor:
        """The first ``n`` test images, binarised as the test stage sees them."""
        return self.datamodule.splits[2][:n]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call, in seconds (after the device has finished)."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def rounds(fns: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Each function's results over ``repeats`` rounds, each round calling them all in turn, so
    that a change of load on a shared machine hits them alike."""
    results: dict[str, list[T]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name].append(fn())
    return results


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The median wall time of each function over interleaved ``rounds``."""
    timers = {name: (lambda fn=fn: timed(fn)) for name, fn in fns.items()}
    return {name: statistics.median(ts) for name, ts in rounds(timers, repeats).items()}


@dataclass
class Goal:
    """``figure op target``, e.g. ``speedup >= 5``."""

    figure: str
    op: str  # "<=" or ">="
    target: float

    def met(self, value: float) -> bool:
        return value <= self.target if self.op == "<=" else value >= self.target


@dataclass
class Result:
    """A benchmark's figures, its goals, and what to read them with."""

    figures: dict[str, float | int | bool | str | None]
    goals: list[Goal] = field(default_factory=list)
    note: str = ""
    available: bool = True

    @classmethod
    def unavailable(cls, why: str) -> Result:
        return cls(figures={}, note=why, available=False)

    def to_json(self) -> dict[str, object]:
        return {
            "available": self.available,
            "figures": self.figures,
            "goals": [
                {
                    "figure": g.figure,
                    "goal": f"{g.op} {g.target:g}",
                    "value": self.figures[g.figure],
                    "met": g.met(self.figures[g.figure]),
                }
                for g in self.goals
            ],
            "note": self.note,
        }

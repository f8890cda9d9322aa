"""Shared fixtures: the real Hydra config, composed and shrunk for fast tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vae_lab.build import build_datamodule, build_model
from vae_lab.data import InMemoryDataModule
from vae_lab.module import VAE

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = Path(os.environ.get("VAE_LAB_TEST_DATA", REPO.parent / "shared" / "data"))

#: shrinks any run to seconds: one short epoch, a small K, no logger
SHRINK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "eval.num_samples=20",
    "eval.chunk_size=10",
    "eval.val_num_samples=5",
    "logger=none",
]


def options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def checkpoint_model(cfg: DictConfig, ckpt: Path) -> tuple[VAE, InMemoryDataModule]:
    """The model of ``cfg`` with a checkpoint's weights (on the CPU), and its set-up data."""
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    model = build_model(cfg, datamodule.data_dim)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    return model, datamodule


def compose_config(overrides: list[str] = (), shrink: bool = True) -> DictConfig:
    """The config ``python -m vae_lab.run`` would compose, optionally shrunk for speed."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=(SHRINK if shrink else []) + list(overrides))


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """An in-process Hydra app gives the root logger a handler on the test's captured stderr;
    take it away after the test, so later tests' output is not a logging error."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def classifier_cache(tmp_path_factory) -> Iterator[Path]:
    """The suite's sample-quality classifiers go to a fresh cache ($VAE_LAB_CACHE, which
    subprocesses inherit), never the user's: no test depends on what an older run left."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("vae_lab_cache")
        patch.setenv("VAE_LAB_CACHE", str(folder))
        yield folder


@pytest.fixture
def make_config() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"the shared datasets are not at {SHARED_DATA} (set VAE_LAB_TEST_DATA)")
    return SHARED_DATA


def report_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m vae_lab.report ARGS`` as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "vae_lab.report", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

"""Shared fixtures: the real Hydra config, composed and shrunk for fast tests."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from vae_lab.components.data import Digits, InMemoryDataModule
from vae_lab.evaluation.sample_quality import ClassifierSpec, cached_classifier
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule
from vae_lab.training.subnormals import flush_subnormals
from vae_lab.training.threads import available_cores

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = Path(os.environ.get("VAE_LAB_TEST_DATA", REPO.parent / "shared" / "data"))

#: the suite computes as a run does (``use_threads``), on whichever thread a test runs it:
#: set before torch starts its threads, which take the mode from this one
flush_subnormals()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``: one worker per core), each worker
    computes on its share of the cores, and so do the runs it starts (``OMP_NUM_THREADS``,
    which ``default_threads`` reads): never more threads than cores in all."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        threads = max(1, available_cores() // worker["workercount"])
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


#: shrinks any run to seconds: debug=fast (conf/debug/fast.yaml: one short epoch, a small K, the
#: cheap test stages), on the CPU, with small IW chunks; no logger (last: tests drop it)
SHRINK = [
    "debug=fast",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "eval.chunk_size=10",
    "logger=none",
]
#: a digits feature classifier trained in a fraction of a second that still scores well enough
#: for the sample-quality checks (test accuracy 0.96; hidden=[32,8] reaches 0.70 in 200 steps)
SMALL_CLASSIFIER = {"hidden": [128, 32], "epochs": 1, "min_steps": 200}


def options(group: str) -> list[str]:
    """The options of a config group: the files of ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def own_target(group: str, option: str) -> str | None:
    """The ``_target_`` that ``conf/<group>/<option>.yaml`` itself writes; None for an option
    that only selects another in its defaults (``conf/posterior/flow.yaml``: realnvp)."""
    return OmegaConf.load(CONF_DIR / group / f"{option}.yaml").get("_target_")


def distinct_options(group: str) -> list[str]:
    """The options of a config group less those that only select another."""
    return [option for option in options(group) if own_target(group, option) is not None]


def subclass_options(group: str, base: type) -> list[str]:
    """The distinct options of a config group whose ``_target_`` is a subclass of ``base``."""
    return [
        option
        for option in distinct_options(group)
        if issubclass(get_class(own_target(group, option)), base)
    ]


@functools.cache
def option_config(group: str, option: str) -> DictConfig:
    """The config of a group's option as a run composes it (read-only: it is shared)."""
    cfg = compose_config([f"{group}={option}"])[group]
    OmegaConf.set_readonly(cfg, True)
    return cfg


def sized_option(group: str, option: str, sizes: Mapping[str, Any]) -> DictConfig:
    """A group's option with the values of ``sizes`` for those of its keys it has."""
    cfg = option_config(group, option)
    return OmegaConf.merge(cfg, {key: value for key, value in sizes.items() if key in cfg})


def sized_overrides(group: str, option: str, sizes: Mapping[str, Any]) -> list[str]:
    """The overrides choosing a group's option with the values of ``sizes`` for those of its
    keys it has."""
    cfg = option_config(group, option)
    return [f"{group}={option}", *(f"{group}.{k}={v}" for k, v in sizes.items() if k in cfg)]


def checkpoint_model(cfg: DictConfig, ckpt: Path) -> tuple[VAE, InMemoryDataModule]:
    """The model of ``cfg`` with a checkpoint's weights (on the CPU), and its set-up data."""
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    model = VAE.from_config(cfg, datamodule.data_dim)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    return model, datamodule


def compose_config(overrides: list[str] = (), shrink: bool = True) -> DictConfig:
    """The config ``python -m vae_lab.run`` would compose, optionally shrunk for speed."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=(SHRINK if shrink else []) + list(overrides))


def with_test_stage(stage: str) -> str:
    """The override that adds ``stage`` to the test stages of conf/debug/fast.yaml (the cheap
    ones, which a shrunk run has)."""
    stages = OmegaConf.load(CONF_DIR / "debug" / "fast.yaml").eval.test_stages
    return f"eval.test_stages=[{','.join([*stages, stage])}]"


#: gives a shrunk run the sample-quality figures of its test stage: test/fid_* and the rest
SAMPLE_QUALITY_STAGE = with_test_stage("sample_quality")


def classifier_spec(overrides: list[str]) -> ClassifierSpec:
    """The feature classifier's settings in the config composed with ``overrides``."""
    return instantiate(compose_config(overrides).sample_quality.classifier)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """A run in this process sets torch's threads (``use_threads``): give the next test the
    suite's own, so that no test inherits another's (more threads than cores thrash)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """An in-process Hydra app gives the root logger a handler on the test's captured stderr;
    take it away after the test, so later tests' output is not a logging error."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def no_sweep_left() -> Iterator[None]:
    """A test that starts a sweep in this process ends it (``sweep.end_sweep``, as
    ``vae_lab.run.main`` does): a ``HYDRA_FULL_ERROR`` left set is inherited by every sweep the
    process starts later, whose launcher failure is then a traceback, not one line."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    yield
    assert os.environ.get("HYDRA_FULL_ERROR") == before, "HYDRA_FULL_ERROR left set: end_sweep"


@pytest.fixture(autouse=True, scope="session")
def classifier_cache(tmp_path_factory) -> Iterator[Path]:
    """The suite's sample-quality classifiers go to a fresh cache ($VAE_LAB_CACHE, which
    subprocesses inherit), never the user's: no test depends on what an older run left."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("vae_lab_cache")
        patch.setenv("VAE_LAB_CACHE", str(folder))
        yield folder


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, for many small tensor ops, to which more threads only add
    synchronisation: on a loaded 2-core machine they made test_flows 5x slower, the training of
    SMALL_CLASSIFIER 50x (10 s against 0.2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """A module's tests on one torch thread (``one_thread``): ``pytest.mark.usefixtures``."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def small_classifier_overrides(classifier_cache: Path) -> list[str]:
    """``sample_quality.classifier`` overrides of SMALL_CLASSIFIER in the session's cache, where
    its digits classifier is trained once: the runs and evaluations given them load it."""
    settings = {**SMALL_CLASSIFIER, "cache_dir": classifier_cache}
    overrides = [f"sample_quality.classifier.{key}={value}" for key, value in settings.items()]
    with one_thread():
        cached_classifier(Digits(), classifier_spec(overrides))
    return overrides


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


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """A sweep folder of two finished runs (``sweep/0``, ``sweep/1``), made once for the whole
    session: a test copies it before it changes anything."""
    sweep = tmp_path_factory.mktemp("finished") / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", "-m", *SHRINK, "logger=csv", "seed=0,1",
         f"hydra.sweep.dir={sweep}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep

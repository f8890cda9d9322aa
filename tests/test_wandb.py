"""W&B offline: a 2-job sweep leaves, in each run folder, a W&B run with the metrics, the full
config, the sweep's group and the job's tags; the two jobs of one process never merge. The
run's metrics.json keeps the W&B run's id, by which an evaluation adds its figures to it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger
from wandb.proto import wandb_internal_pb2

from tests.conftest import REPO, SHRINK
from vae_lab import evaluate
from vae_lab.records.tracking import configuration_label, log_to_wandb, wandb_ids

FILE_HEADER = 7  # ":W&B", a 2-byte magic number, a version byte
BLOCK = 32 * 1024  # the LevelDB log format: 32 KiB blocks of chunks with 7-byte headers
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a ``run-*.wandb`` file (a LevelDB log of protobuf Records)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, pending, pos = [], b"", FILE_HEADER
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_run(job_dir: Path) -> dict:
    """What the job's offline W&B run recorded: its run record, config, summary and files."""
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    return read_wandb_run(run_dir)


def read_wandb_run(run_dir: Path) -> dict:
    """What one offline W&B run folder recorded: its run record, config, summary and files."""
    (log_file,) = run_dir.glob("run-*.wandb")
    records = read_records(log_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r, kind in zip(records, kinds, strict=True) if kind == "run"]
    config = {  # given to wandb.init, then logged as hyperparameters
        item.key: json.loads(item.value_json)
        for updates in [run.config.update]
        + [r.config.update for r, kind in zip(records, kinds, strict=True) if kind == "config"]
        for item in updates
    }
    logged = {  # logged key -> last value; a media item (images, table) -> its fields
        item.key or item.nested_key[0]: json.loads(item.value_json)
        for r, kind in zip(records, kinds, strict=True)
        if kind == "history"
        for item in r.history.item
        if len(item.nested_key) <= 1
    }
    summary = {  # summary key -> last value
        item.key: json.loads(item.value_json)
        for r, kind in zip(records, kinds, strict=True)
        if kind == "summary"
        for item in r.summary.update
    }
    exits = [r.exit.exit_code for r, kind in zip(records, kinds, strict=True) if kind == "exit"]
    return {"run": run, "config": config, "logged": logged, "summary": summary, "exits": exits,
            "dir": run_dir}  # fmt: skip


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a run logging to W&B offline, its W&B folders under ``home``."""
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory) -> Path:
    """Two jobs in one process (basic launcher), logged to W&B offline."""
    sweep_dir = tmp_path_factory.mktemp("wandb") / "sweep"
    env = offline_env(sweep_dir.parent)
    shrink = [o for o in SHRINK if not o.startswith("logger=")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_lab.run",
            "-m",
            *shrink,
            "logger=wandb",
            "trainer.log_every_n_steps=1",
            "posterior=gaussian,full_cov",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_each_job_is_its_own_run_grouped_with_its_replicates(wandb_sweep):
    runs = [wandb_run(wandb_sweep / job)["run"] for job in ("0", "1")]
    assert runs[0].run_id != runs[1].run_id  # wandb.finish() between the jobs
    groups = [run.run_group for run in runs]  # script, sweep folder, configuration
    assert groups[0] != groups[1] and all(g.startswith("run-wandb0_sweep-") for g in groups)
    for run, posterior in zip(runs, ("gaussian", "full_cov"), strict=True):
        assert run.job_type == "train"
        expected = {f"posterior:{posterior}", "prior:standard", "data:digits", "seed:0",
                    "trainer.accelerator:cpu", "eval.chunk_size:10"}  # fmt: skip
        assert expected <= set(run.tags)
        assert not any(t.startswith(("logger", "hydra", "trainer.enable_progress_bar"))
                       for t in run.tags)  # fmt: skip
        assert run.display_name.startswith(f"{posterior}-standard-")


@pytest.mark.slow  # a run and its resume: make test-full
def test_a_resumed_job_keeps_the_labels_it_started_with(wandb_sweep, tmp_path):
    """Resumed by ``resume=DIR`` (here a copy of the sweep's second job, as a run moved to
    another disk), the run is labelled by the job that started it, not by the command line."""
    run_dir = tmp_path / "moved"
    shutil.copytree(wandb_sweep / "1", run_dir, ignore=shutil.ignore_patterns("wandb"))
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", f"resume={run_dir}", "trainer.max_epochs=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    started, resumed = wandb_run(wandb_sweep / "1")["run"], wandb_run(run_dir)["run"]
    assert resumed.run_group == started.run_group
    assert resumed.display_name == started.display_name == "full_cov-standard-1"
    assert {"posterior:full_cov", "prior:standard", "seed:0"} <= set(resumed.tags)


def test_the_replicates_of_a_configuration_share_a_group():
    label = configuration_label(["posterior=flow", "seed=0", "data.root=/here"])
    assert label == configuration_label(["seed=1", "posterior=flow"])
    assert label != configuration_label(["posterior=flow", "optim.lr=0.003", "seed=0"])


@pytest.mark.slow  # a sweep in a subprocess: make test-full
def test_an_unreachable_server_means_offline_once_per_sweep(tmp_path):
    """A bogus key and a server that refuses connections: the sweep completes offline."""
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9",
               WANDB_CONFIG_DIR=str(tmp_path / "config"), WANDB_DATA_DIR=str(tmp_path / "data"),
               WANDB_CACHE_DIR=str(tmp_path / "cache"), WANDB_SILENT="true",
               OMP_NUM_THREADS="1")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "vae_lab.run", "-m", *SHRINK[:-1], "logger=wandb", "seed=0,1",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("W&B:")]
    assert said == [
        "W&B: http://127.0.0.1:9 cannot be reached (Connection refused); logging offline, upload "
        "later "
        f"with: wandb sync {sweep_dir}/*/wandb/offline-run-*"
    ]
    for job in ("0", "1"):
        assert list((sweep_dir / job / "wandb").glob("offline-run-*")), job


def test_run_has_the_full_resolved_config_and_the_choices(wandb_sweep):
    config = wandb_run(wandb_sweep / "1")["config"]
    assert config["choices"]["posterior"] == "full_cov"
    assert config["posterior"]["_target_"] == "vae_lab.components.posteriors.FullCovGaussian"
    assert config["trainer"]["max_epochs"] == 1
    assert config["eval"]["num_samples"] == 20
    assert config["num_threads"] == 1  # resolved from ${oc.env:OMP_NUM_THREADS}


def test_run_has_the_metrics_the_images_and_the_gap_table(wandb_sweep):
    run = wandb_run(wandb_sweep / "0")
    metrics = json.loads((wandb_sweep / "0" / "metrics.json").read_text())
    for key in ("train/loss", "val/elbo", "test/elbo", "test/log_px", "test/inference_gap"):
        assert key in run["logged"], key
    assert run["logged"]["test/log_px"] == pytest.approx(metrics["test/log_px"])
    assert run["exits"] == [0]
    media = run["dir"] / "files" / "media"
    (table_file,) = (media / "table").glob("gap_decomposition_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["posterior"] == "gaussian" and row["seed"] == 0
    assert row["test/inference_gap"] == pytest.approx(metrics["test/inference_gap"])
    assert {p.name.split("_")[0] for p in (media / "images").glob("*.png")} >= {
        "prior",
        "reconstructions",
    }


WANDB_CFG = OmegaConf.create({"logger": {"_target_": "vae_lab.records.tracking.wandb_logger"}})
CSV_CFG = OmegaConf.create({"logger": {"_target_": "vae_lab.records.csv_logger.CSVLogger"}})
#: an evaluation of seconds: its IW stage only
EVAL_QUICK = ["eval.stages=[iw]", "eval.gap_points=10"]


def test_metrics_json_keeps_the_id_of_the_jobs_wandb_run(wandb_sweep):
    for job in ("0", "1"):
        metrics = json.loads((wandb_sweep / job / "metrics.json").read_text())
        assert metrics["wandb_id"] == wandb_run(wandb_sweep / job)["run"].run_id
        assert metrics["wandb_mode"] == "offline"


def test_only_a_wandb_logger_has_ids(tmp_path):
    assert wandb_ids(None) == {}
    assert wandb_ids(CSVLogger(tmp_path)) == {}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch) -> None:
    """This process logs to W&B offline, its W&B folders under ``tmp_path``."""
    for key, value in offline_env(tmp_path).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)


def test_an_evaluation_is_added_to_the_run_of_the_stored_id(wandb_sweep, tmp_path, offline_wandb):
    """Evaluated (here a copy of the sweep's second job), the run's W&B run, resumed by the id
    its metrics.json keeps, gets the evaluation's figures in its summary."""
    run_dir = tmp_path / "evaluated"
    shutil.copytree(wandb_sweep / "1", run_dir)
    evaluate.main([f"run_dir={run_dir}", *EVAL_QUICK])
    wandb.teardown()  # the service writes the run's file to its end, as a process's exit does
    metrics = json.loads((run_dir / "metrics.json").read_text())
    runs = [read_wandb_run(d) for d in sorted((run_dir / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2  # the training's, then the evaluation's: one W&B run, synced as one
    assert {run["run"].run_id for run in runs} == {metrics["wandb_id"]}
    assert runs[1]["summary"]["eval/log_px"] == pytest.approx(metrics["eval/log_px"])
    assert runs[1]["exits"] == [0]


def test_a_run_without_a_stored_id_is_said_once_and_not_logged(tmp_path, offline_wandb, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.INFO, logger="vae_lab.records.tracking"):
        log_to_wandb(run_dir, WANDB_CFG, {"status": "completed"}, {"eval/log_px_ais": -90.5})
        log_to_wandb(run_dir, CSV_CFG, {"status": "completed"}, {"eval/log_px_ais": -90.5})
    assert [r.getMessage() for r in caplog.records] == [
        f"{run_dir} predates the W&B id kept in metrics.json: its evaluation is not added to W&B"
    ]
    assert not (run_dir / "wandb").exists()

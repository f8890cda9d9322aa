"""Records that cannot be lost, mixed up or mislabelled.

A run is its whole config: metrics.json records its overrides and config hash, and the report
groups runs by every key that differs among them (the seed aside). A run stopped by SIGTERM
and resumed from its folder alone ends where an uninterrupted one does. Every option of every
group, discovered from ``conf/``, composes and builds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class

from tests.conftest import REPO, SHRINK, compose_config, options, report_cli
from tests.test_sweeps import run_sweep, table_rows
from vae_lab.config.identity import config_hash, identity
from vae_lab.model.module import VAE
from vae_lab.records.collect import find_runs
from vae_lab.records.outputs import read_metrics, write_json
from vae_lab.report.table import cells, markdown_table
from vae_lab.training.build import build_datamodule


@pytest.mark.slow  # a sweep in a subprocess: make test-full
def test_a_sweep_over_any_key_gives_a_row_per_value_with_its_column(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep(sweep, "optim.lr=1e-3,3e-3", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [read_metrics(sweep / str(job)) for job in range(4)]
    assert all("optim.lr=0.001" in j["overrides"] or "optim.lr=0.003" in j["overrides"]
               for j in jobs)  # fmt: skip
    assert len({j["config_hash"] for j in jobs}) == 4  # seeds and rates: four configs
    report = report_cli(str(sweep))
    assert report.returncode == 0, report.stderr
    text = (sweep / "report.md").read_text()
    assert "| posterior | prior | optim.lr | runs |" in text
    assert [row[:4] for row in table_rows(text)] == [
        ["gaussian", "standard", "0.001", "2"],
        ["gaussian", "standard", "0.003", "2"],
    ]
    with (sweep / "report.csv").open() as file:
        assert {row["optim.lr"] for row in csv.DictReader(file)} == {"0.001", "0.003"}


def hand_made(folder: Path, overrides: list[str], seed: int, log_px: float) -> None:
    """A run folder as vae_lab.run leaves it: .hydra/ of the composed config, metrics.json."""
    cfg = compose_config([*overrides, f"seed={seed}"])
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(dict(cfg_plain(cfg))))
    choices = {"posterior": cfg.posterior._target_.rsplit(".", 1)[1].lower(), "prior": "standard"}
    hydra = {"hydra": {"runtime": {"choices": choices}}}
    (folder / ".hydra" / "hydra.yaml").write_text(json.dumps(hydra))
    write_json(folder / "metrics.json", {**choices, "seed": seed, "status": "completed",
                                         "test/log_px": log_px, "test/elbo": log_px - 1,
                                         "test/inference_gap": 1.0})  # fmt: skip


def cfg_plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def test_runs_differing_in_a_key_the_report_never_heard_of_are_never_pooled(tmp_path):
    """The case of the issue: a key added later (here ``+train_num_samples``) is swept."""
    for job, (samples, seed) in enumerate([(1, 0), (1, 1), (5, 0), (5, 1)]):
        hand_made(tmp_path / str(job), [f"+train_num_samples={samples}"], seed, -30.0 - samples)
    table = cells(find_runs([tmp_path]))
    assert [(cell.columns, len(cell.runs)) for cell in table] == [
        ((("posterior", "diagonalgaussian"), ("prior", "standard"), ("train_num_samples", "1")), 2),
        ((("posterior", "diagonalgaussian"), ("prior", "standard"), ("train_num_samples", "5")), 2),
    ]
    header = markdown_table(table, [("test/log_px", "log p(x)")]).splitlines()[0]
    assert header == "| posterior | prior | train_num_samples | runs | log p(x) |"


def test_keys_that_do_not_change_the_result_leave_the_identity_alone():
    base = compose_config(["data=mnist"])
    same = compose_config(["data=mnist", "data.root=/elsewhere", "num_threads=3", "logger=csv",
                           "trainer.enable_progress_bar=true", "eval.device=cpu",
                           "trainer.log_every_n_steps=7",
                           "callbacks.progress_bar.refresh_rate=1",
                           "eval.compile=true"])  # fmt: skip
    choices = {"posterior": "gaussian"}
    assert config_hash(identity(base, choices)) == config_hash(identity(same, choices))
    for change in ("seed=1", "optim.lr=0.01", "trainer.max_epochs=2", "kl_warmup_steps=3"):
        other = compose_config([change])
        assert config_hash(identity(other, choices)) != config_hash(identity(base, choices))
    iwae = compose_config(["objective=iwae"])  # it has no KL warm-up to read the key
    warmed = compose_config(["objective=iwae", "kl_warmup_steps=3"])
    assert config_hash(identity(iwae, choices)) == config_hash(identity(warmed, choices))


def tree_hash(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def run_cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return run_clis([argv], **env)[0]


def run_clis(commands: list[tuple[str, ...]], **env: str) -> list[subprocess.CompletedProcess]:
    """``python -m vae_lab.run ARGV`` for each argv, side by side (one thread each)."""
    processes = [
        subprocess.Popen([sys.executable, "-m", "vae_lab.run", *argv], cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
        for argv in commands
    ]  # fmt: skip
    ended = []
    for process, argv in zip(processes, commands, strict=True):
        stdout, stderr = process.communicate(timeout=600)
        ended.append(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
    return ended


def csv_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "csv" / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow  # make test-full (make test stays under 5 minutes)
def test_sigterm_then_resume_from_the_folder_alone_equals_an_uninterrupted_run(tmp_path):
    # 4 epochs of 3 steps, validation every epoch; SIGTERM after step 7, mid-way through the
    # third epoch: the resumed run starts again from the checkpoint of the second epoch
    base = [*SHRINK, "trainer.max_epochs=4",
            "trainer.log_every_n_steps=1", "trainer.deterministic=true", "logger=csv"]  # fmt: skip
    folder = tmp_path / "resumed"
    straight, stopped = run_clis([  # side by side
        (*base, f"hydra.run.dir={tmp_path / 'straight'}"),
        (*base, "+fault=sigterm", "callbacks.fault.at_step=7", f"hydra.run.dir={folder}"),
    ])  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert read_metrics(folder)["status"] == "interrupted"
    hydra_before = tree_hash(folder / ".hydra")

    resumed = run_cli(f"resume={folder}")  # the folder alone
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.strip().splitlines()[-1].endswith(f"run folder {folder}")
    assert tree_hash(folder / ".hydra") == hydra_before
    ours, theirs = read_metrics(folder), read_metrics(tmp_path / "straight")
    assert ours["status"] == "completed" and ours["seed"] == 0
    for key in ("test/log_px", "test/elbo", "test/kl", "val/elbo", "train/loss"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-6), key
    rows, straight_rows = csv_rows(folder), csv_rows(tmp_path / "straight")
    assert [(r["epoch"], r["step"]) for r in rows] == [
        (r["epoch"], r["step"]) for r in straight_rows
    ]  # every epoch and step once, none lost, none twice
    assert {r["epoch"] for r in rows if r["val/elbo"]} == {"0.0", "1.0", "2.0", "3.0"}


@pytest.mark.slow
def test_resume_extends_a_run_and_records_the_override(tmp_path):
    folder = tmp_path / "run"
    first = run_cli(*SHRINK, "logger=csv", f"hydra.run.dir={folder}")
    assert first.returncode == 0, first.stderr[-3000:]
    before = read_metrics(folder)
    extended = run_cli(f"resume={folder}", "trainer.max_epochs=2")
    assert extended.returncode == 0, extended.stderr[-3000:]
    after = read_metrics(folder)
    assert after["overrides"] == [*before["overrides"], "trainer.max_epochs=2"]
    assert after["run_id"] == before["run_id"] and after["config_hash"] != before["config_hash"]
    assert "max_epochs: 2" in (folder / ".hydra" / "config.yaml").read_text()
    assert {r["epoch"] for r in csv_rows(folder) if r.get("val/elbo")} == {"0.0", "1.0"}


@pytest.mark.slow
def test_a_requeued_slurm_job_resumes_its_folder_by_itself(tmp_path):
    folder = tmp_path / "run"
    argv = [*SHRINK, "trainer.max_epochs=3", "+fault=sigterm", "callbacks.fault.at_step=4",
            f"hydra.run.dir={folder}"]  # fmt: skip
    assert run_cli(*argv).returncode == 143
    run_id = read_metrics(folder)["run_id"]
    requeued = run_cli(*argv, SLURM_RESTART_COUNT="1")  # the same command, run again by SLURM
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    record = read_metrics(folder)
    assert record["status"] == "completed" and record["run_id"] == run_id
    assert not list((folder / "checkpoints").glob("*-v1.ckpt"))


@pytest.mark.parametrize("group", ["posterior", "prior", "likelihood", "data", "model"])
def test_every_option_composes_and_builds(group):
    """Each option of ``conf/<group>/`` with the defaults elsewhere (and what it needs)."""
    needs = {  # options that only make sense with another option
        "linear_gaussian": ["likelihood=gaussian", "model=linear"],
    }
    for option in options(group):
        cfg = compose_config([f"{group}={option}", *needs.get(option, [])])
        assert get_class(cfg[group]._target_) if group != "model" else cfg.model._target_
        if group == "data" and option not in ("digits", "linear_gaussian"):
            continue  # a file dataset: read in tests/test_data.py
        datamodule = build_datamodule(cfg)
        model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
        # q over one latent: cfg.latent_dim, or more (model=hierarchical's (z1, z2))
        assert model.posterior.latent_dim >= cfg.latent_dim, option
        q = model.q(torch.zeros(2, datamodule.data_dim))
        assert q.event_shape[-1] == model.posterior.latent_dim, option

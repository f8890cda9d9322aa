"""``python -m vae_lab.run``: train a VAE, then test it; writes the run folder's metrics.json.

In a sweep (``-m``) a job that fails records ``status: failed`` with its error and the sweep
goes on; a single run with a bad config or a missing data file exits with one line naming it.
A run stopped by SIGTERM records that it was interrupted; started again on the same folder with
``resume=true`` it continues from ``checkpoints/last.ckpt``; so does a SLURM job requeued after
preemption, by itself. Only the rank-0 process writes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vae_lab.build import build_datamodule, build_logger, build_model, build_trainer
from vae_lab.data import DataFileError
from vae_lab.outputs import METRICS_FILE, write_json
from vae_lab.tracking import finish_run
from vae_lab.validation import ConfigError, validate

log = logging.getLogger(__name__)

#: errors of the user's input: reported as one line, without a traceback
USER_ERRORS = (ConfigError, DataFileError)
RECORDED_CHOICES = ("posterior", "prior", "data", "likelihood", "model")


def use_threads(num_threads: int | None) -> None:
    """Give torch ``num_threads`` intra-op threads (None: keep torch's default)."""
    if num_threads:
        torch.set_num_threads(num_threads)
    log.info("torch uses %d threads", torch.get_num_threads())


def requeued() -> bool:
    """A SLURM job requeued after preemption or a time-out (its run folder is the same)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def train_and_test(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fit on the training set, test the best-validation checkpoint; the final metrics."""
    validate(cfg)
    use_threads(cfg.get("num_threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule.data_dim)
    trainer = build_trainer(cfg, run_dir, build_logger(cfg, run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = cfg.get("resume") or requeued()
    resume_from = str(last) if resume and last.exists() else None
    if resume and resume_from is None:
        log.info("resuming, but %s does not exist: starting from scratch", last)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
    return metrics


@rank_zero_only
def _record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / METRICS_FILE, record)


def execute(
    cfg: DictConfig, run_dir: Path, choices: dict[str, Any], isolate_failures: bool = False
) -> dict[str, Any]:
    """Run one job and record it in metrics.json, completed or failed."""
    record: dict[str, Any] = {**choices, "seed": cfg.seed, "status": "running"}
    _record(run_dir, record)
    start = time.perf_counter()
    try:
        record.update(train_and_test(cfg, run_dir))
        record["status"] = "completed"
    except SIGTERMException:
        record.update(
            status="failed",
            error=f"interrupted by SIGTERM: continue with resume=true hydra.run.dir={run_dir}",
        )
        _record(run_dir, record)
        raise
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        if isolate_failures:
            log.error("job failed, the sweep goes on: %s", record["error"])
        elif isinstance(err, USER_ERRORS):
            _record(run_dir, record)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        else:
            _record(run_dir, record)
            raise
    finally:
        finish_run(record)  # W&B: close this job's run, so the next job never merges into it
    record["wall_time_s"] = time.perf_counter() - start
    _record(run_dir, record)
    return record


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    choices = {group: hydra_cfg.runtime.choices.get(group) for group in RECORDED_CHOICES}
    execute(
        cfg,
        Path(hydra_cfg.runtime.output_dir),
        choices,
        isolate_failures=hydra_cfg.mode == RunMode.MULTIRUN,
    )


if __name__ == "__main__":
    main()

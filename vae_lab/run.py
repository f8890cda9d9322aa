"""``python -m vae_lab.run``: train a VAE, then test it.

The run folder is claimed, or reopened by ``resume=RUN_DIR``, by the run store
(``vae_lab.records.run_store``); training is Lightning's; the test stage is the evaluation
pipeline's cheap stages on the test split (``vae_lab.evaluation.test_stage``). A bad config or
data file gives one line and exit status 2; in a sweep (``-m``) a job that fails records
``status: failed`` with its error and the sweep goes on. SIGTERM or Ctrl-C records
``status: interrupted``, prints the resume command and exits with 128 + signal.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.config.identity import note_unused_warmup
from vae_lab.config.paths import CONF_DIR
from vae_lab.config.validation import ConfigError, validate
from vae_lab.evaluation.test_stage import run_test_stage, stages_for_test
from vae_lab.model.module import VAE
from vae_lab.records import sweep
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
from vae_lab.records.console import USER_ERRORS, quiet_third_parties
from vae_lab.records.csv_logger import CSVLogger
from vae_lab.records.interrupts import Interrupted, catching_signals, received, resume_command
from vae_lab.records.outputs import METRICS_FILE, WriteError, run_lock, write_json
from vae_lab.records.run_store import prepare, summary_line, with_resume_folder
from vae_lab.records.tracking import finish_run, wandb_ids
from vae_lab.training.build import StepTimer, build_datamodule, build_logger, build_trainer
from vae_lab.training.threads import use_threads

log = logging.getLogger(__name__)


@rank_zero_only
def _record(run_dir: Path, record: dict[str, Any]) -> None:  # metrics.json, atomically
    write_json(run_dir / METRICS_FILE, record)


def train_and_test(
    cfg: DictConfig, run_dir: Path, record: dict[str, Any], resume_from: Path | None = None
) -> dict[str, float]:
    """Fit on the training set (from ``resume_from``, a checkpoint, if given), test the
    best-validation checkpoint; the final metrics, with the seconds that fit and test took.
    The W&B run's id goes into ``record`` (and metrics.json) as soon as it is known."""
    validate(cfg)
    note_unused_warmup(cfg)
    use_threads(cfg.get("num_threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    stages = stages_for_test(cfg, datamodule)
    model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
    logger = build_logger(cfg, run_dir)
    if ids := wandb_ids(logger):
        record |= ids
        _record(run_dir, record)
    stamp = {k: record[k] for k in ("run_id", "config_hash") if k in record}
    trainer = build_trainer(cfg, run_dir, logger, stamp, AtomicCheckpointIO())
    first_step = 0
    if resume_from is not None:
        first_step = torch.load(resume_from, map_location="cpu", weights_only=True)["global_step"]
        if isinstance(logger, CSVLogger):
            logger.keep_until(first_step)  # the steps after the checkpoint are trained again
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    # this session's training (a resumed run's earlier sessions are not in it)
    metrics["fit_time_s"] = time.perf_counter() - start
    metrics["fit_steps"] = trainer.global_step - first_step
    metrics["steps_time_s"] = next(c for c in trainer.callbacks if isinstance(c, StepTimer)).seconds
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path or None
        start = time.perf_counter()

        def written(figures: dict[str, float], _: dict[str, Any]) -> None:  # as a stage ends
            record.update(metrics | figures)
            _record(run_dir, record)

        metrics |= run_test_stage(stages, cfg, model, datamodule, run_dir, best, written)
        metrics["test_time_s"] = time.perf_counter() - start
        if logger is not None:
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")})
            logger.save()
    return metrics


def execute(
    cfg: DictConfig,
    run_dir: Path,
    fields: dict[str, Any],
    isolate_failures: bool = False,
    resume_from: Path | None = None,
    sweep_dir: Path | None = None,
) -> dict[str, Any]:
    """Run one job and record it in metrics.json: completed, failed or interrupted.

    ``fields`` start the record (options, seed, overrides, hash, id). A user error ends a
    single run with one line and exit status 2 (1 for a diverged run); in a sweep
    (``isolate_failures``) it is recorded and the sweep goes on. A signal raises Interrupted.
    """
    record: dict[str, Any] = {"seed": cfg.seed, **fields, "status": "running"}
    record.pop("error", None)
    _record(run_dir, record)
    start = time.perf_counter()
    with catching_signals():
        try:
            record.update(train_and_test(cfg, run_dir, record, resume_from))
            record["status"] = "completed"
        except BaseException as err:
            signum = received()
            if signum is None and not isinstance(err, Exception):
                raise
            if signum is not None:
                name = signal.Signals(signum).name
                record.update(
                    status="interrupted",
                    error=f"interrupted by {name}: continue with {resume_command(run_dir)}",
                )
            else:
                record.update(status="failed", error=f"{type(err).__name__}: {err}")
            record["wall_time_s"] = time.perf_counter() - start
            try:
                _record(run_dir, record)
            except WriteError as unwritten:  # a full disk: say both
                raise WriteError(f"{record['error']}; and {unwritten}") from None
            finish_run(record)  # W&B: close this job's run, so the next job never merges into it
            if signum is not None:
                raise Interrupted(signum, run_dir, sweep_dir) from None
            if isolate_failures:
                log.error("job failed, the sweep goes on: %s", record["error"])
                return record
            if isinstance(err, USER_ERRORS):
                print(f"error: {err}", file=sys.stderr)
                sys.exit(1 if isinstance(err, FloatingPointError) else 2)
            raise
    record["wall_time_s"] = time.perf_counter() - start
    _record(run_dir, record)
    finish_run(record)
    return record


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> dict[str, Any] | None:
    quiet_third_parties()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with ExitStack() as held:
        try:  # one writer a folder: the others of a DDP run write nothing
            held.enter_context(run_lock(run_dir) if rank_zero_only.rank == 0 else nullcontext())
            overrides = list(hydra_cfg.overrides.task)
            cfg, fields, resume_from = prepare(cfg, run_dir, overrides, multirun)
            sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
            record = execute(cfg, run_dir, fields, multirun, resume_from, sweep_dir)
        except (ConfigError, WriteError) as err:  # a job refused, or a record not written
            if multirun:  # a folder not its own is left untouched; the sweep goes on
                log.error("job %s: %s", hydra_cfg.job.num, err)
                return None
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    if not multirun:
        print(summary_line(record, run_dir))
    return record


def main() -> None:
    """The command line: Hydra's app, with interruptions turned into exit status 128 + signal
    and a sweep's launcher failure into one line and the sweep summary."""
    sys.argv = with_resume_folder(sys.argv)
    try:
        app()
    except Interrupted as stop:
        if stop.sweep_dir is not None:
            sweep.log_sweep_summary(stop.sweep_dir)
        name = signal.Signals(stop.signum).name
        print(f"interrupted by {name}: continue with {resume_command(stop.run_dir)}",
              file=sys.stderr)  # fmt: skip
        sys.exit(stop.exit_status)
    except Exception as err:  # a sweep's launcher, after a job's process died
        if not sweep.catches_launcher_errors():
            raise
        sys.exit(sweep.launcher_stopped(err))
    finally:
        sweep.end_sweep()


if __name__ == "__main__":
    main()

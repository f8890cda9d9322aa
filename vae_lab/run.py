"""``python -m vae_lab.run``: train a VAE, then test it; the run folder's records.

A run folder holds one run: its ``.hydra/`` (the composed config, written here once the folder
is known to hold no other run), ``checkpoints/``, ``metrics.json`` (status, chosen options,
seed, overrides, ``config_hash``, ``run_id``, final metrics) and logs. A bad config or data
file gives one line and exit status 2; in a sweep (``-m``) a job that fails records
``status: failed`` with its error and the sweep goes on.

SIGTERM or Ctrl-C records ``status: interrupted``, prints the resume command and exits with
128 + signal. ``python -m vae_lab.run resume=RUN_DIR`` continues that run from
``checkpoints/last.ckpt`` under its saved config; only ``EXTENDABLE`` keys may be overridden
(``trainer.max_epochs=200`` extends it). A SLURM job requeued after preemption resumes its
folder by itself. Only the rank-0 process writes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.build import (
    StepTimer,
    build_datamodule,
    build_logger,
    build_model,
    build_trainer,
)
from vae_lab.console import quiet_third_parties
from vae_lab.csv_logger import CSVLogger
from vae_lab.data import DataFileError
from vae_lab.identity import choices_of, config_hash, identity, warmup_unused
from vae_lab.interrupts import Interrupted, catching_signals, received, resume_command
from vae_lab.outputs import (
    EVAL_LOCK,
    METRICS_FILE,
    evaluation_lock,
    read_metrics,
    retire_evaluation,
    without_evaluation,
    write_json,
    write_text,
)
from vae_lab.paths import CONF_DIR
from vae_lab.tracking import finish_run
from vae_lab.validation import ConfigError, validate

log = logging.getLogger(__name__)

#: errors of the user's input or of a diverging run: reported as one line, no traceback
USER_ERRORS = (ConfigError, DataFileError, FloatingPointError)
#: keys a resumed run may change: how long it trains, where its data is, how it runs
EXTENDABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "num_threads",
    "data.root",
    "data.download",
    "data.mirror",
)
HYDRA_DIR = ".hydra"


def use_threads(num_threads: int | None) -> None:
    """Give torch ``num_threads`` intra-op threads (None: keep torch's default)."""
    validate(OmegaConf.create({"num_threads": num_threads}))
    if num_threads:
        torch.set_num_threads(num_threads)
    log.info("torch uses %d threads", torch.get_num_threads())


def requeued() -> bool:
    """A SLURM job requeued after preemption or a time-out (its run folder is the same)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def note_unused_warmup(cfg: DictConfig) -> None:
    """Say so when the run's objective has no KL warm-up to take ``kl_warmup_steps`` (a preset's
    warm-up swept over objectives, ``experiment=objectives``); it then leaves the run's
    identity too (``vae_lab.identity``)."""
    if cfg.get("kl_warmup_steps") and warmup_unused(cfg):
        name = str(cfg.objective.get("_target_", "")).rsplit(".", 1)[-1]
        log.info("kl_warmup_steps=%s is not used: the %s objective has no KL warm-up",
                 cfg.kl_warmup_steps, name)  # fmt: skip


def train_and_test(
    cfg: DictConfig,
    run_dir: Path,
    stamp: dict[str, str] | None = None,
    resume_from: Path | None = None,
) -> dict[str, float]:
    """Fit on the training set (from ``resume_from``, a checkpoint, if given), test the
    best-validation checkpoint; the final metrics, with the seconds that fit and test took."""
    validate(cfg)
    note_unused_warmup(cfg)
    use_threads(cfg.get("num_threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule.data_dim)
    logger = build_logger(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir, logger, stamp)
    first_step = 0
    if resume_from is not None:
        first_step = torch.load(resume_from, map_location="cpu", weights_only=False)["global_step"]
        if isinstance(logger, CSVLogger):
            logger.keep_until(first_step)  # the steps after the checkpoint are trained again
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    # this session's training (a resumed run's earlier sessions are not in it)
    metrics["fit_time_s"] = time.perf_counter() - start
    metrics["fit_steps"] = trainer.global_step - first_step
    metrics["steps_time_s"] = next(c for c in trainer.callbacks if isinstance(c, StepTimer)).seconds
    best = trainer.checkpoint_callback.best_model_path or None
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
    metrics["test_time_s"] = time.perf_counter() - start
    return metrics


@rank_zero_only
def _record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / METRICS_FILE, record)


def summary_line(record: dict[str, Any], run_dir: Path) -> str:
    """One line for the end of a run: the main test figures with their stderr, the folder."""
    parts = []
    if "test/log_px" in record:
        stderr = record.get("test/log_px_stderr")
        spread = f" ± {stderr:.2f}" if isinstance(stderr, float) else ""
        parts.append(f"test log p(x) {record['test/log_px']:.2f}{spread}")
    for key, name in (("test/elbo", "ELBO"), ("test/inference_gap", "gap")):
        if isinstance(record.get(key), float):
            parts.append(f"{name} {record[key]:.2f}")
    if isinstance(record.get("test/psis_khat"), float):
        parts.append(f"k̂ {record['test/psis_khat']:.2f}")
    return f"{record.get('status')}: " + ", ".join([*parts, f"run folder {run_dir}"])


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
    stamp = {k: record[k] for k in ("run_id", "config_hash") if k in record}
    _record(run_dir, record)
    start = time.perf_counter()
    with catching_signals():
        try:
            record.update(train_and_test(cfg, run_dir, stamp, resume_from))
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
            _record(run_dir, record)
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


# -- the run folder: claimed by a new run, or resumed -------------------------------------
def claim(run_dir: Path) -> None:
    """Refuse a folder that already holds a run."""
    taken = [n for n in (METRICS_FILE, "checkpoints", HYDRA_DIR) if (run_dir / n).exists()]
    if taken:
        raise ConfigError(
            f"{run_dir} already holds a run ({taken[0]}): a run folder holds one run; "
            f"continue it with `{resume_command(run_dir)}` or choose another hydra.run.dir"
        )


def save_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """Hydra's ``.hydra/``: config.yaml, hydra.yaml and overrides.yaml."""
    folder = run_dir / HYDRA_DIR
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))


def saved_choices(run_dir: Path) -> dict[str, str]:
    """The options of the run saved in ``run_dir/.hydra/hydra.yaml``."""
    hydra_cfg = OmegaConf.load(run_dir / HYDRA_DIR / "hydra.yaml").hydra
    return choices_of(hydra_cfg.runtime.choices)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_config(
    cfg: DictConfig, folder: Path, run_dir: Path, overrides: list[str]
) -> tuple[DictConfig, dict[str, Any]]:
    """The saved config of the run in ``folder`` with the ``EXTENDABLE`` overrides of this
    command line applied (and saved); the run's record, its overrides extended."""
    if folder.resolve() != run_dir.resolve():
        raise ConfigError(
            f"resume={folder} with hydra.run.dir={run_dir}: a run continues in its own folder, "
            "give resume=RUN_DIR alone"
        )
    saved_path = folder / HYDRA_DIR / "config.yaml"
    if not saved_path.is_file() or not (folder / METRICS_FILE).is_file():
        raise ConfigError(f"resume={folder} is not a run folder (no .hydra/config.yaml)")
    changes = [o for o in overrides if _key(o) not in ("resume",) and not o.startswith("hydra")]
    if bad := [o for o in changes if _key(o) not in EXTENDABLE]:
        raise ConfigError(
            f"{bad[0]}: a resumed run keeps its saved config ({saved_path}); only "
            f"{', '.join(EXTENDABLE)} may change"
        )
    saved = OmegaConf.load(saved_path)
    record = without_evaluation(read_metrics(folder))
    kept = None
    if rank_zero_only.rank == 0:  # not under an evaluation still writing (a run ever evaluated)
        then = f"resume it ({resume_command(folder)})"
        evaluated = (folder / EVAL_LOCK).exists()
        with evaluation_lock(folder, then) if evaluated else nullcontext():
            kept = retire_evaluation(folder)
    if kept is not None:
        log.warning(
            "resuming %s: its evaluation, of the checkpoints training is about to change, is "
            "kept as %s and leaves metrics.json; evaluate the run again when it ends",
            folder,
            kept,
        )
    for override in changes:
        key = _key(override)
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    if changes:
        record["overrides"] = [*record.get("overrides", []), *changes]
    if changes and rank_zero_only.rank == 0:  # the other processes of a DDP run only read
        write_text(saved_path, OmegaConf.to_yaml(saved))
        overrides_yaml = OmegaConf.to_yaml(OmegaConf.create(record["overrides"]))
        write_text(folder / HYDRA_DIR / "overrides.yaml", overrides_yaml)
    record["config_hash"] = config_hash(identity(saved, saved_choices(folder)))
    return saved, record


def prepare(
    cfg: DictConfig, run_dir: Path, overrides: list[str], multirun: bool
) -> tuple[DictConfig, dict[str, Any], Path | None]:
    """The config to run, the record's first fields and the checkpoint to resume from."""
    resume = cfg.get("resume")
    if resume is not None and resume is not False and not isinstance(resume, str):
        raise ConfigError(f"resume={resume} is invalid: give the run folder, resume=RUN_DIR")
    if resume and multirun:
        raise ConfigError("resume continues one run: run it once per folder, without -m")
    if resume or (requeued() and (run_dir / METRICS_FILE).exists()):
        folder = Path(resume) if resume else run_dir
        cfg, record = resume_config(cfg, folder, run_dir, overrides if resume else [])
        last = folder / "checkpoints" / "last.ckpt"
        if not last.exists():
            log.info("resuming, but %s does not exist: starting from scratch", last)
        return cfg, record, last if last.exists() else None
    if rank_zero_only.rank == 0:  # the other processes of a DDP run share rank 0's folder
        claim(run_dir)
    choices = choices_of(HydraConfig.get().runtime.choices)
    record = {
        **choices,
        "seed": cfg.seed,
        "overrides": overrides,
        "config_hash": config_hash(identity(cfg, choices)),
        "run_id": uuid.uuid4().hex,
    }
    if rank_zero_only.rank == 0:
        save_config(run_dir, cfg, overrides)
    return cfg, record, None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> dict[str, Any] | None:
    quiet_third_parties()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        cfg, fields, resume_from = prepare(cfg, run_dir, list(hydra_cfg.overrides.task), multirun)
    except ConfigError as err:
        if multirun:  # this job's folder is not its own: leave it untouched, go on
            log.error("job %s not run: %s", hydra_cfg.job.num, err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sweep_dir = Path(hydra_cfg.sweep.dir) if multirun else None
    record = execute(cfg, run_dir, fields, multirun, resume_from, sweep_dir)
    if not multirun:
        print(summary_line(record, run_dir))
    return record


def with_resume_folder(argv: list[str]) -> list[str]:
    """``resume=DIR`` runs in DIR: add ``hydra.run.dir=DIR`` unless the command gives one."""
    folders = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not folders or folders[-1].lower() in ("", "null", "none", "false", "true"):
        return argv
    if any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    return [*argv, f"hydra.run.dir={folders[-1]}"]


def main() -> None:
    """The command line: Hydra's app, with interruptions turned into exit status 128 + signal."""
    sys.argv = with_resume_folder(sys.argv)
    try:
        app()
    except Interrupted as stop:
        if stop.sweep_dir is not None:
            from vae_lab.report.summary import log_sweep_summary

            log_sweep_summary(stop.sweep_dir)
        name = signal.Signals(stop.signum).name
        print(
            f"interrupted by {name}: continue with {resume_command(stop.run_dir)}",
            file=sys.stderr,
        )
        sys.exit(stop.exit_status)


if __name__ == "__main__":
    main()

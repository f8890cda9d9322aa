"""The run store: the code that claims a run folder for a new run, saves its config, and
reopens it for a resumed one.

A run folder holds one run: its ``.hydra/`` (the composed config, written once the folder is
known to hold no other run), ``checkpoints/``, ``metrics.json`` and logs. ``resume=RUN_DIR``
continues a run under its saved config; only ``EXTENDABLE`` keys may change
(``trainer.max_epochs=200`` extends it). A SLURM job requeued after preemption resumes its
folder by itself. Only the rank-0 process writes.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from vae_lab.config.compose import override_key
from vae_lab.config.identity import choices_of, config_hash, identity
from vae_lab.config.validation import ConfigError, validate
from vae_lab.model.checkpoints import check_parameterizations
from vae_lab.model.module import VAE
from vae_lab.records.interrupts import resume_command
from vae_lab.records.outputs import (
    EVAL_LOCK,
    HYDRA_DIR,
    METRICS_FILE,
    evaluation_lock,
    read_metrics,
    remove_orphans,
    retire_evaluation,
    saved_choices,
    without_evaluation,
    write_text,
)
from vae_lab.records.run_folder import (
    check_trained_under,
    read_checkpoint,
    read_saved_config,
    saved_config,
)

log = logging.getLogger(__name__)

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


def requeued() -> bool:
    """A SLURM job requeued after preemption or a time-out (its run folder is the same)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def summary_line(record: dict[str, Any], run_dir: Path) -> str:
    """One line for the end of a run: the main test figures with their stderr, the folder."""
    parts = []
    if "test/log_px" in record:
        stderr = record.get("test/log_px_stderr")
        spread = f" ± {stderr:.2g}" if isinstance(stderr, float) else ""
        parts.append(f"test log p(x) {record['test/log_px']:.2f}{spread}")
    if isinstance(record.get("test/bits_per_dim"), float):
        parts.append(f"{record['test/bits_per_dim']:.3f} bits/dim")
    for key, name in (("test/elbo", "ELBO"), ("test/inference_gap", "gap")):
        if isinstance(record.get(key), float):
            parts.append(f"{name} {record[key]:.2f}")
    if isinstance(record.get("test/psis_khat"), float):
        parts.append(f"k̂ {record['test/psis_khat']:.2f}")
    return f"{record.get('status')}: " + ", ".join([*parts, f"run folder {run_dir}"])


def claim(run_dir: Path) -> None:
    """Claim the folder for a new run, or refuse one that already holds a run. The claim is
    the creation of its ``.hydra/`` folder, which of two processes exactly one can make."""
    taken = [n for n in (METRICS_FILE, "checkpoints") if (run_dir / n).exists()]
    try:
        if not taken:
            (run_dir / HYDRA_DIR).mkdir(parents=True)
    except FileExistsError:
        taken = [HYDRA_DIR]
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


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """The epochs a checkpoint has trained: its ``epoch`` is the one it was saved in, which
    counts once Lightning's fit loop has processed it (a checkpoint saved as an epoch ends)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    processed = progress.get("current", {}).get("processed", 0)
    return max(int(checkpoint.get("epoch", 0)), int(processed))


def check_extends(
    cfg: DictConfig, checkpoint: dict[str, Any], changes: list[str], status: Any, folder: Path
) -> None:
    """Refuse a resume that would train nothing from ``checkpoint``: Lightning errors on a
    ``trainer.max_epochs`` below the epochs done and trains nothing at them, and either way
    the finished run would be recorded again (failed, or completed with the same figures).
    A ``trainer.max_epochs`` or ``trainer.max_steps`` given must go beyond what the
    checkpoint did; a completed run must have room left under both, unless SLURM requeued
    the job (it resumes its folder whatever its state). A run that ended otherwise (stopped
    in its test stage) may resume at its limit: it trains nothing and is tested."""
    done = {"trainer.max_epochs": (epochs_done(checkpoint), "epochs"),
            "trainer.max_steps": (int(checkpoint.get("global_step", 0)), "steps")}  # fmt: skip
    given = {override_key(o) for o in changes}
    reached = []
    for key, (did, unit) in done.items():
        limit = OmegaConf.select(cfg, key)
        if limit in (None, -1) or limit > did:
            continue
        if key in given:
            raise ConfigError(
                f"resume={folder}: {key}={limit} is not beyond the {did} {unit} the run has "
                "done: give a larger one"
            )
        reached.append(f"{did} {unit}, {key}={limit}: extend it with {key}=N (N > {did})")
    if reached and status == "completed" and not requeued():
        raise ConfigError(f"resume={folder} is already completed ({reached[0]})")


def resume_config(
    cfg: DictConfig, folder: Path, run_dir: Path, overrides: list[str]
) -> tuple[DictConfig, dict[str, Any]]:
    """The config to continue the run in ``folder`` with: its saved config, over today's
    defaults for keys it predates, with the ``EXTENDABLE`` overrides of this command line
    applied (and saved); the run's record, its overrides extended, less the figures of the
    checkpoints training is about to replace (test/*, eval/*).

    Every check comes before the first write, so a refused resume leaves the run as it was:
    a saved config that is not one or names code outside vae_lab's components
    (``upgraded``), a last.ckpt that does not load as weights only or was trained under
    another config (``check_trained_under``), a resume that would train nothing
    (``check_extends``). Only then is the evaluation retired and the config rewritten."""
    if folder.resolve() != run_dir.resolve():
        raise ConfigError(
            f"resume={folder} with hydra.run.dir={run_dir}: a run continues in its own folder, "
            "give resume=RUN_DIR alone"
        )
    saved_path = folder / HYDRA_DIR / "config.yaml"
    if not saved_path.is_file() or not (folder / METRICS_FILE).is_file():
        raise ConfigError(f"resume={folder} is not a run folder (no .hydra/config.yaml)")
    changes = [
        o for o in overrides if override_key(o) not in ("resume",) and not o.startswith("hydra")
    ]
    if bad := [o for o in changes if override_key(o) not in EXTENDABLE]:
        raise ConfigError(
            f"{bad[0]}: a resumed run keeps its saved config ({saved_path}); only "
            f"{', '.join(EXTENDABLE)} may change"
        )
    saved = read_saved_config(folder)
    runs_with = saved_config(folder, cfg, changes)
    record = {k: v for k, v in without_evaluation(read_metrics(folder)).items()
              if not k.startswith("test/")}  # fmt: skip
    last = folder / "checkpoints" / "last.ckpt"
    if last.is_file():
        checkpoint = read_checkpoint(last, f"resume={folder}: {last} cannot be resumed from")
        check_trained_under(checkpoint, last, folder)
        stamp = checkpoint.get("vae_lab", {})
        if "data_dim" in stamp:  # the model's families, built without data, against the file's
            model = VAE.from_config(runs_with, stamp["data_dim"], stamp.get("image_shape"))
            check_parameterizations(model, stamp, last)
        check_extends(runs_with, checkpoint, changes, record.get("status"), folder)
    kept = None
    if rank_zero_only.rank == 0:  # not under an evaluation still writing (a run ever evaluated)
        then = f"resume it ({resume_command(folder)})"
        evaluated = (folder / EVAL_LOCK).exists()
        with evaluation_lock(folder, then) if evaluated else nullcontext():
            kept = retire_evaluation(folder)
            if orphans := remove_orphans(folder):
                log.info("removed what killed writes left: %s", ", ".join(map(str, orphans)))
    if kept is not None:
        log.warning(
            "resuming %s: its evaluation, of the checkpoints training is about to change, is "
            "kept as %s and leaves metrics.json; evaluate the run again when it ends",
            folder,
            kept,
        )
    for override in changes:
        key = override_key(override)
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    if changes:
        record["overrides"] = [*record.get("overrides", []), *changes]
    if changes and rank_zero_only.rank == 0:  # the other processes of a DDP run only read
        write_text(saved_path, OmegaConf.to_yaml(saved))
        overrides_yaml = OmegaConf.to_yaml(OmegaConf.create(record["overrides"]))
        write_text(folder / HYDRA_DIR / "overrides.yaml", overrides_yaml)
    if changes or "config_hash" not in record:  # else the hash it was recorded with, which
        # a run saved before a key left the identity keeps (vae_lab.config.identity)
        record["config_hash"] = config_hash(identity(saved, saved_choices(folder)))
    return runs_with, record


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
    if not multirun:  # refused before the claim leaves a .hydra/; a sweep's job records it
        validate(cfg)
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


def with_resume_folder(argv: list[str]) -> list[str]:
    """``resume=DIR`` runs in DIR: add ``hydra.run.dir=DIR`` unless the command gives one."""
    folders = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not folders or folders[-1].lower() in ("", "null", "none", "false", "true"):
        return argv
    if any(a.startswith("hydra.run.dir=") for a in argv):
        return argv
    return [*argv, f"hydra.run.dir={folders[-1]}"]

"""Weights & Biases tracking: one W&B run per job; the replicates of a configuration in one group.

A run is identified by its whole config (``vae_lab.config.identity``), and W&B follows the same rule
as the report: a run joins the group ``<name>-<stamp>-<configuration>``, the experiment
preset's name (else the script's), the last two parts of the sweep folder (by default its date
and time) and a short hash of the job's overrides but its seed, so the seeds of one
configuration of one sweep share a group and two configurations never do. It is tagged
``posterior:NAME``, ``prior:NAME``, ``data:NAME``, ``KEY:VALUE`` for each other override that
changes what it computes, and ``seed:N``; its config is the full resolved config plus
``choices`` (the option of every group) and ``overrides``.

W&B goes online when the user is logged in and its server answers within
``PROBE_TIMEOUT_S`` seconds, offline otherwise; a sweep finds the server unreachable once,
says so in one line with the ``wandb sync`` command, and runs all its jobs offline. A server
that answers the probe may still fail or hang W&B's client: a run that W&B cannot start online
within ``init_timeout`` seconds (``INIT_TIMEOUT_S``) goes offline the same way, as does a job
whose ``WANDB_MODE`` W&B would reject (an empty one is unset), rather than fail untrained.

The run's metrics.json keeps its W&B run's id and mode (``wandb_ids``), by which an evaluation
adds its figures to that run (``log_to_wandb``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from vae_lab.config.identity import REPLICATE, outside_identity

log = logging.getLogger(__name__)

#: seconds to wait for the W&B server before logging offline
PROBE_TIMEOUT_S = 3.0
#: seconds W&B's client may take to start a run online before the job logs offline instead:
#: W&B's own default (90 s, retried) holds a job for minutes before it fails untrained
INIT_TIMEOUT_S = 20.0
#: in a sweep folder: the server was found unreachable, every job logs offline
OFFLINE_MARK = ".wandb_offline"
#: W&B's limit on the length of a tag
MAX_TAG = 64

TAGGED_CHOICES = ("posterior", "prior", "data")
#: the targets of a logger config that logs to W&B
WANDB_TARGETS = (f"{__name__}.wandb_logger", "pytorch_lightning.loggers.WandbLogger")
#: log p(x) = ELBO + inference gap: the columns of the W&B table logged at the end of a run
GAP_COLUMNS = ("test/elbo", "test/log_px", "test/inference_gap")


@dataclass(frozen=True)
class RunLabels:
    """What names a job in W&B, read from Hydra's view of the job."""

    group: str | None = None
    name: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    folder: Path | None = None  # the sweep folder of a sweep's job, else the run folder


def identity_overrides(overrides: list[str]) -> list[str]:
    """The overrides that change what a run computes: not Hydra's, not ``NOT_IDENTITY``'s."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or outside_identity(key):
            continue
        kept.append(override)
    return kept


def configuration_label(overrides: list[str]) -> str:
    """A short hash of the overrides but the seed: shared by the replicates of a configuration."""
    kept = sorted(o for o in identity_overrides(overrides) if o.split("=", 1)[0] != REPLICATE)
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:8]


def hydra_labels(run_dir: Path | None = None) -> RunLabels:
    """The job's group, name and chosen options, as Hydra saw the job that started the run:
    from ``run_dir/.hydra/hydra.yaml`` where the run saved it (so a resumed run keeps the
    labels it started with, not those of the command that resumed it), else from the live
    Hydra config; empty outside a Hydra app (e.g. in tests)."""
    saved = None if run_dir is None else run_dir / ".hydra" / "hydra.yaml"
    if saved is not None and saved.is_file():
        hydra = OmegaConf.load(saved).hydra
    elif HydraConfig.initialized():
        hydra = HydraConfig.get()
    else:
        return RunLabels()
    multirun = str(hydra.mode).rpartition(".")[2] == RunMode.MULTIRUN.name  # enum or its name
    choices = {
        group: str(option)
        for group, option in hydra.runtime.choices.items()
        if not group.startswith("hydra/") and option is not None
    }
    folder = Path(hydra.runtime.output_dir)  # resolved; the saved run.dir may read ${now:...}
    if multirun:  # the sweep's folder: output_dir less the job's subdir
        folder = folder.parents[len(Path(str(hydra.sweep.subdir)).parts) - 1]
    study = choices.get("experiment", hydra.job.name)
    name = "-".join(choices[g] for g in ("posterior", "prior") if g in choices)
    overrides = list(hydra.overrides.task)
    return RunLabels(
        group=f"{study}-{'_'.join(folder.parts[-2:])}-{configuration_label(overrides)}",
        name=f"{name}-{hydra.job.num}" if multirun else name or None,
        choices=choices,
        overrides=overrides,
        folder=folder if multirun else None,
    )


def server_reachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when W&B's server answers an HTTP request within ``timeout`` s (any status), else
    why not."""
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{url} cannot be reached ({getattr(reason, 'strerror', None) or reason})"
    return None


def env_mode() -> str | None:
    """``WANDB_MODE``, made one that W&B accepts, since W&B reads it at every start and rejects a
    bad one with a traceback: an empty one is unset (removed), and one that W&B's settings reject
    is said in one line and set to ``offline`` (so said once per process)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is None or not mode.strip():
        os.environ.pop("WANDB_MODE", None)
        return None
    import wandb

    try:
        wandb.Settings(mode=mode)
    except ValueError:  # pydantic's ValidationError
        print(
            f"W&B: WANDB_MODE={mode!r} is not a W&B mode (online, offline, disabled); "
            "logging offline",
            file=sys.stderr,
        )
        os.environ["WANDB_MODE"] = mode = "offline"
    return mode


def go_offline(problem: str, save_dir: str, labels: RunLabels) -> str:
    """Say in one line why the job logs offline, with the command that uploads, and mark a
    sweep's folder so that its other jobs go offline at once instead of trying again."""
    mark = labels.folder / OFFLINE_MARK if labels.folder is not None else None
    runs = f"{labels.folder}/*" if mark is not None else save_dir
    print(
        f"W&B: {problem}; logging offline, upload later with: "
        f"wandb sync {runs}/wandb/offline-run-*",
        file=sys.stderr,
    )
    if mark is not None:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    return "offline"


def choose_mode(mode: str, save_dir: str, labels: RunLabels) -> str:
    """online or offline; ``auto`` is online when logged in and the server answers. Going
    offline for want of a server is said once (per sweep), with the command that uploads."""
    if mode == "auto":
        mode = env_mode() or ("online" if _wandb_logged_in() else "offline")
    if mode != "online":
        if mode == "offline":
            log.info(
                "W&B is offline; upload later with: wandb sync %s/wandb/offline-run-*", save_dir
            )
        return mode
    mark = labels.folder / OFFLINE_MARK if labels.folder is not None else None
    if mark is not None and mark.exists():
        return "offline"
    problem = server_reachable()
    return "online" if problem is None else go_offline(problem, save_dir, labels)


def start_failure(err: Exception) -> str:
    """A failure of W&B's client to start a run, in one line (its message's first)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"W&B could not start the run online ({type(err).__name__}: {first[:160]})"


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


def wandb_logger(
    save_dir: str,
    project: str = "vae_lab",
    mode: str = "auto",
    group: str | None = None,
    job_type: str = "train",
    tags: list[str] | None = None,
    name: str | None = None,
    seed: int | None = None,
    init_timeout: float = INIT_TIMEOUT_S,
) -> WandbLogger:
    """A Lightning WandbLogger; ``mode`` is online, offline or auto (online when logged in).

    ``group`` and ``name`` default to the job's (see the module docstring); ``tags`` are added
    to the job's own tags: posterior, prior, data, the other overrides and, given ``seed``,
    the seed. An online run is started here, bounded by ``init_timeout`` seconds, so that a
    server that fails or hangs W&B's client sends the job offline instead of failing it.
    """
    import wandb

    env_mode()  # before W&B reads it, whatever ``mode`` is
    labels = hydra_labels(Path(save_dir))
    mode = choose_mode(mode, save_dir, labels)
    job_tags = [f"{g}:{labels.choices[g]}" for g in TAGGED_CHOICES if g in labels.choices]
    for override in identity_overrides(labels.overrides):
        key, _, value = override.lstrip("+~").partition("=")
        if key not in (*labels.choices, REPLICATE):
            job_tags.append(f"{key}:{value}"[:MAX_TAG])
    if seed is not None:
        job_tags.append(f"seed:{seed}")

    def logger(offline: bool) -> WandbLogger:
        return WandbLogger(
            project=project,
            save_dir=save_dir,
            offline=offline,
            group=group or labels.group,
            job_type=job_type,
            tags=[*job_tags, *(tags or [])],
            name=name or labels.name,
            config={"choices": labels.choices, "overrides": labels.overrides},
            settings=wandb.Settings(init_timeout=init_timeout),
            # given, not only Lightning's WANDB_MODE: W&B has read the environment already where
            # it failed to start online
            **({"mode": "offline"} if offline else {}),
        )

    if mode != "online":
        return logger(offline=mode == "offline")
    online = logger(offline=False)
    try:
        online.experiment  # noqa: B018 -- starts the run (a dummy one on a rank > 0)
    except Exception as err:  # any failure to start: W&B's errors, a timeout, a bad setting
        go_offline(start_failure(err), save_dir, labels)
        return logger(offline=True)
    return online


def finish_run(record: dict[str, Any]) -> None:
    """Close this process's W&B run, if one is open, with the job's final ``record``.

    A completed run gets its gap decomposition as a one-row W&B Table ``gap_decomposition``
    (chosen options, seed, ELBO, log p(x), inference gap); a failed one is marked failed. Then
    ``wandb.finish()``, so the next job of the same process starts a run of its own.
    """
    wandb = sys.modules.get("wandb")  # never import wandb for a job that did not use it
    if wandb is None or wandb.run is None:
        return
    completed = record.get("status") == "completed"
    if completed:
        keys = [*TAGGED_CHOICES, "seed", *GAP_COLUMNS]
        table = wandb.Table(columns=keys, data=[[record.get(k) for k in keys]])
        wandb.run.log({"gap_decomposition": table})
    else:
        wandb.run.summary["error"] = record.get("error")
    wandb.run.summary["status"] = record.get("status")
    wandb.finish(exit_code=0 if completed else 1)


def wandb_ids(logger: Any) -> dict[str, str]:
    """What metrics.json keeps of a WandbLogger's run: ``{"wandb_id": ..., "wandb_mode":
    "online" | "offline"}``; ``{}`` for another logger, None, a disabled run or a process
    that is not rank 0. Starts the logger's W&B run if it has not started yet."""
    if not isinstance(logger, WandbLogger):
        return {}
    run = logger.experiment
    run_id = getattr(run, "id", None)
    if not isinstance(run_id, str) or run.disabled:  # rank > 0: a dummy run
        return {}
    return {"wandb_id": run_id, "wandb_mode": "offline" if run.offline else "online"}


def logs_to_wandb(cfg: DictConfig) -> bool:
    """Whether the run of ``cfg`` logged to W&B: its logger config targets a WandbLogger."""
    logger = cfg.get("logger")
    return logger is not None and logger.get("_target_") in WANDB_TARGETS


def log_to_wandb(
    run_dir: Path, cfg: DictConfig, record: Mapping[str, Any], metrics: dict[str, float]
) -> None:
    """Add ``metrics`` to the summary of the run's own W&B run, resumed by the id its
    metrics.json (``record``) keeps, in the mode it ran in. A run that logged to W&B before
    metrics.json kept the id is said in one line and left out of W&B; one that W&B cannot
    resume online is added offline, said in one line."""
    run_id = record.get("wandb_id")
    if run_id is None:
        if logs_to_wandb(cfg):
            log.warning(
                "%s predates the W&B id kept in metrics.json: its evaluation is not added to W&B",
                run_dir,
            )
        return
    import wandb

    env_mode()
    logger = cfg.get("logger") or {}
    init = {
        "project": logger.get("project", "vae_lab"),
        "id": str(run_id),
        "dir": str(run_dir),
        "resume": "allow",
        "settings": wandb.Settings(init_timeout=logger.get("init_timeout", INIT_TIMEOUT_S)),
    }
    mode = str(record.get("wandb_mode", "online"))
    try:
        wandb_run = wandb.init(**init, mode=mode)
    except Exception as err:  # as in wandb_logger: an evaluation is not lost for want of W&B
        if mode == "offline":
            raise
        go_offline(start_failure(err), str(run_dir), RunLabels())
        wandb_run = wandb.init(**init, mode="offline")
    wandb_run.summary.update(metrics)
    wandb_run.finish()

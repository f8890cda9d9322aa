"""Reading a run folder that may come from elsewhere: where its runs are, its saved config
under today's code, its checkpoint as weights.

Nothing read here runs code: the config's old ``_target_`` paths are mapped to today's and
any ``_target_`` outside vae_lab's components is refused before anything is built
(``vae_lab.config.targets``), and the checkpoint is loaded with ``weights_only=True``. A
checkpoint stamped with another run's id than the folder's ``metrics.json``, or trained under
another config than the folder's ``.hydra/config.yaml`` (``check_trained_under``), is refused:
its weights would be evaluated, or trained on, as a model they are not.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lab.config.compose import compose_default, override_key
from vae_lab.config.identity import config_hash, identity
from vae_lab.config.targets import upgraded
from vae_lab.config.validation import ConfigError, validate
from vae_lab.model.checkpoints import check_parameterizations, unreadable_checkpoint
from vae_lab.model.module import VAE
from vae_lab.records.interrupts import resume_command
from vae_lab.records.outputs import (
    EVAL_FILE,
    HYDRA_DIR,
    METRICS_FILE,
    RUN_LOCK,
    held_by_another,
    read_metrics,
    saved_choices,
)

#: the config groups of conf/config.yaml's defaults list, composed with the run's options
DEFAULTS_GROUPS = ("data", "model", "posterior", "prior", "likelihood", "objective", "trainer",
                   "logger")  # fmt: skip
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"
#: the keys of the identity a resume may extend (``run_store.EXTENDABLE``): a checkpoint of the
#: run before ``trainer.max_epochs=200`` was trained under the folder's config all the same
TRAINING_LENGTH = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


@dataclass
class RunFolder:
    """A run folder and the checkpoint of it to read."""

    run_dir: Path
    ckpt_path: Path


def is_run(folder: Path) -> bool:
    return (folder / HYDRA_DIR / "config.yaml").is_file()


def locate(run_dir: str | Path | None, ckpt_path: str | Path | None = None) -> list[RunFolder]:
    """The runs named: ``ckpt_path`` (in its run folder, or ``run_dir``), the run folder
    ``run_dir`` (its ``checkpoints/best.ckpt``), or every run of the sweep folder ``run_dir``."""
    if ckpt_path is not None:
        ckpt = Path(ckpt_path).expanduser()
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={ckpt} is not a file")
        default_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        folder = Path(run_dir).expanduser() if run_dir is not None else default_dir
        if not is_run(folder):
            raise ConfigError(
                f"{folder} is not a run folder (no .hydra/config.yaml): pass run_dir=DIR as well"
            )
        return [RunFolder(folder, ckpt)]
    if run_dir is None:
        raise ConfigError("give ckpt_path=PATH (a run's checkpoint) or run_dir=DIR (a run folder)")
    folder = Path(run_dir).expanduser()
    jobs = [folder] if is_run(folder) else sorted(p.parent for p in folder.glob("*/.hydra"))
    jobs = [job for job in jobs if is_run(job)]
    if not jobs:
        raise ConfigError(f"run_dir={folder} is not a run or sweep folder (no .hydra/config.yaml)")
    runs = [RunFolder(job, job / BEST_CHECKPOINT) for job in jobs]
    if len(runs) == 1 and not runs[0].ckpt_path.is_file():
        raise ConfigError(f"run_dir={folder} has no {BEST_CHECKPOINT}")
    return runs


def read_saved_config(run_dir: Path) -> DictConfig:
    """The run's ``.hydra/config.yaml`` as written, its old ``_target_`` paths mapped to
    today's; a file that is not a config (empty, cut short, not YAML) is one ``ConfigError``:
    a resume or an evaluation of the folder cannot go on without it, and a traceback from
    deep inside the YAML parser would not name the file."""
    path = run_dir / HYDRA_DIR / "config.yaml"
    try:
        loaded = OmegaConf.load(path)
        if not isinstance(loaded, DictConfig) or not loaded:
            raise TypeError("empty, or not a mapping of the run's keys")
        return upgraded(loaded)
    except (OSError, TypeError, yaml.YAMLError, OmegaConfBaseException) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{path} is not a run's config ({first_line}): restore it from the run's "
            "checkpoint or its copy; nothing in the folder was changed"
        ) from err


def saved_config(
    run_dir: Path, request: DictConfig | None = None, overrides: Sequence[str] = ()
) -> DictConfig:
    """The run's saved config over today's defaults for its options (keys it predates), its
    old ``_target_`` paths mapped to today's, with the ``overrides`` on top, their values as
    Hydra composed and checked them in ``request``."""
    saved = read_saved_config(run_dir)
    try:
        choices = saved_choices(run_dir)
        base = compose_default([f"{g}={o}" for g, o in choices.items() if g in DEFAULTS_GROUPS])
    except Exception:  # an option that no longer exists, or no hydra.yaml: plain defaults
        base = compose_default()
    OmegaConf.set_struct(base, False)
    for group in DEFAULTS_GROUPS:  # a group of another option than today's default: as saved
        ours, theirs = base.get(group), saved.get(group)
        if (
            not isinstance(ours, DictConfig)
            or not isinstance(theirs, DictConfig)
            or (ours.get("_target_") != theirs.get("_target_"))
        ):
            base[group] = None
    cfg = OmegaConf.merge(base, saved)
    for override in overrides:
        key = override_key(override)
        OmegaConf.update(cfg, key, OmegaConf.select(request, key), force_add=True)
    validate(cfg)
    return cfg


def read_checkpoint(path: Path, named: str) -> dict[str, Any]:
    """The checkpoint at ``path`` as weights only (a pickle that would run code is refused,
    never run); any failure as one ConfigError that begins with ``named``."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise TypeError("it holds no state_dict")
    except Exception as err:  # any failure here is the checkpoint's: say so in one line
        raise ConfigError(f"{named}: {unreadable_checkpoint(err)}") from err
    return checkpoint


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The identity keys both have, but ``TRAINING_LENGTH``, whose values differ."""
    return [
        f"{key}={theirs[key]} there, {ours[key]} here"
        for key in sorted(ours.keys() & theirs.keys())
        if key not in TRAINING_LENGTH and ours[key] != theirs[key]
    ]


def check_trained_under(checkpoint: dict[str, Any], ckpt_path: Path, run_dir: Path) -> None:
    """Refuse a checkpoint trained under another config than the run folder's saved one.

    The checkpoint's ``config_hash`` (``RunStamp``) is compared with the hash of the folder's
    ``.hydra/config.yaml``; where they differ, the config the checkpoint carries is compared
    key by key with the folder's, and only a difference in a key both have, other than
    ``TRAINING_LENGTH``, is refused. So a run extended by a resume, or one saved before a key
    existed (its checkpoints since carry today's defaults for it), is its own. A checkpoint
    that carries no config is skipped: its hash, if any, is of an identity of older code
    (keys have left it since), which today's cannot reproduce."""
    stamp = checkpoint.get("vae_lab")
    if not isinstance(stamp, dict) or not isinstance(stamp.get("config"), dict):
        return
    saved_path = run_dir / HYDRA_DIR / "config.yaml"
    saved = saved_config(run_dir)  # resolved, over today's defaults for keys it predates
    try:
        choices = saved_choices(run_dir)
    except Exception:  # no hydra.yaml: the options are not part of either identity
        choices = {}
    ours = identity(saved, choices)
    if stamp.get("config_hash") in (None, config_hash(ours)):
        return
    theirs = identity(upgraded(OmegaConf.create(stamp["config"])), choices)
    if changed := _differences(ours, theirs):
        raise ConfigError(
            f"{ckpt_path} was trained under another config than {saved_path} (config_hash "
            f"{stamp['config_hash']}, the folder's {config_hash(ours)}): {changed[0]}; a "
            "checkpoint is used only under the config it was trained with"
        )


def load_model(
    cfg: DictConfig, run: RunFolder, data_dim: int, image_shape: Sequence[int] | None = None
) -> VAE:
    """The model of ``cfg`` for data of ``data_dim`` values (images of ``image_shape``, as
    ``VAE.from_config``) with the weights of the run's checkpoint (eval mode, no gradient),
    refused when the checkpoint records another run than the folder's metrics.json, or was
    trained under another config than the folder's (``check_trained_under``)."""
    named = f"ckpt_path={run.ckpt_path} is not a checkpoint of this run's model"
    checkpoint = read_checkpoint(run.ckpt_path, named)
    stamp = checkpoint.get("vae_lab", {})
    metrics_file = run.run_dir / METRICS_FILE
    own = read_metrics(run.run_dir).get("run_id") if metrics_file.is_file() else None
    if own is not None and stamp.get("run_id") not in (None, own):
        raise ConfigError(
            f"ckpt_path={run.ckpt_path} is a checkpoint of another run (run_id "
            f"{stamp['run_id']}), not of {run.run_dir} (run_id {own}): evaluate it in its own "
            "folder"
        )
    check_trained_under(checkpoint, run.ckpt_path, run.run_dir)
    model = VAE.from_config(cfg, data_dim, image_shape)
    check_parameterizations(model, stamp, run.ckpt_path)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:  # weights of other shapes or names: Lightning lists every
        # key, one a line; the first line and the counts say enough on one
        first_line = str(err).strip().splitlines()[0]
        ours, theirs = model.state_dict(), checkpoint["state_dict"]
        reshaped = [k for k in ours.keys() & theirs.keys()
                    if getattr(theirs[k], "shape", None) != ours[k].shape]  # fmt: skip
        counts = (f"{len(ours.keys() - theirs.keys())} missing, "
                  f"{len(theirs.keys() - ours.keys())} unexpected, "
                  f"{len(reshaped)} of another shape")  # fmt: skip
        raise ConfigError(f"{named}: {type(err).__name__}: {first_line} ({counts})") from err
    return model.eval().requires_grad_(False)


def check_writable(run_dir: Path) -> None:
    """Refuse, before any work, a run folder this process cannot write into."""
    try:
        with tempfile.NamedTemporaryFile(dir=run_dir, suffix=".tmp"):
            pass
        for name in (METRICS_FILE, EVAL_FILE):
            if (run_dir / name).exists() and not os.access(run_dir / name, os.W_OK):
                raise PermissionError(f"{run_dir / name} is read-only")
    except OSError as err:
        raise ConfigError(
            f"cannot write into {run_dir} ({err.strerror or err}): evaluate writes eval.json "
            "and metrics.json there; make it writable or evaluate a copy"
        ) from err


def check_trained(run_dir: Path) -> None:
    """Refuse a run that is still training: its checkpoints change under the evaluation, and
    its end rewrites metrics.json without the evaluation's figures."""
    if held_by_another(run_dir):
        raise ConfigError(f"{run_dir} is still training (another process holds its "
                          f"{RUN_LOCK}): evaluate it when it ends")  # fmt: skip
    if (run_dir / METRICS_FILE).is_file() and read_metrics(run_dir).get("status") == "running":
        raise ConfigError(
            f"{run_dir} is still training (status: running in its {METRICS_FILE}): evaluate it "
            f"when it ends; if its job was killed, finish it first with "
            f"`{resume_command(run_dir)}`"
        )

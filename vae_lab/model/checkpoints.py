"""Reading a checkpoint as data: weights only, a refusal in one line naming the code a hostile
pickle would have run, and each posterior family's parameterization checked against the one
the weights were trained under (``PosteriorFamily.parameterization``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.config.validation import ConfigError

#: the global a refused checkpoint's pickle names, in torch's weights-only error
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def unreadable_checkpoint(err: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line: the code a refused
    pickle would have run (named by torch's weights-only error), or the error's first line."""
    text = str(err)
    if unsafe := _UNSAFE_GLOBAL.search(text):
        return (
            f"refused: loading its pickle would call {unsafe[1]}; a checkpoint is loaded as "
            "weights only, never running code it holds"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if "WeightsUnpickler error" in line), None)
    return f"{type(err).__name__}: {detail or (lines[0] if lines else '')}"


def parameterizations(model: nn.Module) -> dict[str, int]:
    """The ``parameterization`` of each posterior family in ``model``, by class name."""
    return {
        type(m).__name__: m.parameterization for m in model.modules()
        if isinstance(m, PosteriorFamily)
    }  # fmt: skip


def check_parameterizations(model: nn.Module, stamp: Any, path: Path) -> None:
    """Refuse a checkpoint whose posterior weights were trained under another parameterization
    of their family than today's (one recorded before checkpoints recorded it: version 1):
    they would give another q here, and every figure of it would be silently wrong."""
    recorded = stamp.get("parameterizations", {}) if isinstance(stamp, dict) else {}
    for family, version in parameterizations(model).items():
        if recorded.get(family, 1) != version:
            raise ConfigError(
                f"{path} was trained under version {recorded.get(family, 1)} of the {family} "
                f"posterior's parameterization, and vae_lab's is now version {version}: its "
                "weights would give another q(z|x) here; train the run again (or read it with "
                "the vae_lab it was trained with)"
            )


def load_weights(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` of a checkpoint as weights only; a failure as one ConfigError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any failure to read is the file's
        raise ConfigError(f"{path} cannot be loaded: {unreadable_checkpoint(err)}") from err

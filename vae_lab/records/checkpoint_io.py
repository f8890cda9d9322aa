"""Checkpoints written as the run folder's other records are: whole or not at all.

Lightning's own writer (``TorchCheckpointIO``) stages a checkpoint in the system's temporary
folder and then moves it into the run folder. Where the two are different file systems (a
node's local ``/tmp`` and a cluster's shared disk, a ``tmpfs`` ``/tmp``), that move is a copy
that first truncates the target: a job killed at its time limit, or a disk that fills, during
the copy leaves a torn ``last.ckpt`` (and ``best.ckpt``), and a run that cannot resume. Here
the checkpoint is written beside its target and renamed over it (``write_atomically``), which
is atomic within one file system: a reader, a requeued job or a colleague's copy sees the
previous checkpoint or the new one, never half of one. The Trainer takes it as a plugin
(``Trainer(plugins=[AtomicCheckpointIO()])``, Lightning's public ``CheckpointIO`` interface);
loading is Lightning's own.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from vae_lab.records.outputs import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` in memory (as Lightning's writer does), then its bytes into a temporary
    file beside the target, renamed over it. A write that fails raises ``WriteError`` (one line
    naming the file: torch's own writer, cut short, raises a bare ``RuntimeError``) and leaves
    the target as it was."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(Path(path), buffer.getvalue())

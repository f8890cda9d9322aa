"""The test stage at the end of ``vae_lab.run``: the evaluation pipeline's stages of
``eval.test_stages`` (the cheap ones by default) on the whole test split with the
best-validation weights, recorded as ``test/*``; one line says what the other stages would
add and how to run them (``python -m vae_lab.evaluate``).

It runs in the rank-0 process after training, on ``eval.device``: the figures of a checkpoint
are those of one process, however many trained it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule
from vae_lab.evaluation import pipeline
from vae_lab.evaluation.points import eval_device
from vae_lab.evaluation.stage import Context, Stage
from vae_lab.model.module import VAE

log = logging.getLogger(__name__)

KEY = "eval.test_stages"


def stages_for_test(cfg: DictConfig, datamodule: InMemoryDataModule) -> list[Stage]:
    """The stages of the test stage, checked (before training: a bad setting fails at once)."""
    stages = pipeline.select(pipeline.requested(cfg, KEY), KEY)
    pipeline.check(stages, cfg, datamodule)
    return stages


def run_test_stage(
    stages: list[Stage],
    cfg: DictConfig,
    model: VAE,
    datamodule: InMemoryDataModule,
    run_dir: Path,
    checkpoint: str | None,
    sink: pipeline.Sink | None = None,
) -> dict[str, float]:
    """The ``test/*`` figures of the model with the weights of ``checkpoint`` (the best
    validation ELBO's; None: as trained), each stage's also to ``sink`` as it ends."""
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    device = eval_device(cfg.eval.device)
    model = model.to(device).eval()
    if cfg.eval.get("compile"):
        model.compile_estimates()
    datamodule.setup()  # the processes that trained may be others (ddp_spawn)
    datamodule.splits = tuple(split.to(device) for split in datamodule.splits)
    x = datamodule.splits[2]
    ctx = Context(model, x, datamodule, cfg, "test", cfg.eval.num_samples, cfg.seed, run_dir)
    with torch.autocast(device.type, enabled=False):
        metrics = pipeline.run(stages, ctx, sink)
    if model.compiled_log_likelihood is not None:
        log.info("eval.compile: compiling took %.1f s (of the test stage)", model.compile_seconds)
    note = pipeline.not_run_note(stages, f"python -m vae_lab.evaluate run_dir={run_dir}")
    if note:
        log.info("test stage: ran %s; %s", ", ".join(s.name for s in stages), note)
    return metrics

"""``python -m vae_lab.evaluate run_dir=DIR [KEY=VALUE ...]`` (or ``ckpt_path=PATH``):
re-evaluate a trained run and split its inference gap (Cremer, Li & Duvenaud 2018).

A Hydra app (``conf/evaluate.yaml``): the command line is composed and checked over today's
run config; the run's saved config then replaces it (``vae_lab.records.run_folder``), with only
the ``eval.*`` keys (and a few others: ``vae_lab.evaluation.rules``) of the command line on
top. ``-m run_dir=A,B`` or
``run_dir=SWEEP_DIR`` evaluates several runs, each failing alone.

On ``eval.gap_points`` points of ``eval.split`` (seeded by ``eval.seed``), on ``eval.device``,
it runs the stages of ``eval.stages`` (``vae_lab.evaluation.pipeline``; e.g.
``eval.stages=[iw,qstar]``), K = ``eval.evaluate_num_samples``, writing ``eval.json`` and the
``eval/*`` figures into ``metrics.json`` as each stage ends, and ends with a headline: the best
log p(x) and its estimator, the ELBO, the gaps, any flag.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lab.config.compose import override_key
from vae_lab.config.paths import CONF_DIR
from vae_lab.config.validation import validate
from vae_lab.evaluation import pipeline
from vae_lab.evaluation.points import eval_device, select_points
from vae_lab.evaluation.rules import EVAL_RULES, check_overrides
from vae_lab.evaluation.stage import Context
from vae_lab.records.console import USER_ERRORS, quiet_third_parties
from vae_lab.records.evaluation_record import EvaluationRecord
from vae_lab.records.interrupts import catching_signals, received
from vae_lab.records.outputs import (
    EVAL_FILE,
    evaluation_lock,
    read_metrics,
    retire_evaluation,
)
from vae_lab.records.run_folder import (
    RunFolder,
    check_trained,
    check_writable,
    load_model,
    locate,
    saved_config,
)
from vae_lab.records.tracking import log_to_wandb
from vae_lab.training.build import build_datamodule
from vae_lab.training.threads import use_threads

log = logging.getLogger(__name__)


def evaluate_run(run: RunFolder, request: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The stages of ``eval.stages`` on the run. From its first write on, the evaluation holds
    the run (``evaluation_lock``): a second evaluation of it is refused there, after its own
    checks, before it writes anything."""
    check_overrides(overrides)
    cfg = saved_config(run.run_dir, request, overrides)
    validate(cfg, EVAL_RULES)
    check_writable(run.run_dir)
    check_trained(run.run_dir)
    use_threads(cfg.get("num_threads"))
    stages = pipeline.select(pipeline.requested(cfg, "eval.stages"))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    pipeline.check(stages, cfg, datamodule)
    model = load_model(cfg, run, datamodule.data_dim, datamodule.image_shape)
    if cfg.eval.compile:
        model.compile_estimates()
    device = eval_device(cfg.eval.device)
    model.to(device)
    datamodule.splits = tuple(split.to(device) for split in datamodule.splits)
    x = select_points(datamodule, cfg.eval.split, cfg.eval.gap_points, cfg.eval.seed).to(device)
    if cfg.eval.chunk_size is None:  # the evaluating device's default, recorded in eval.json
        cfg.eval.chunk_size = model.chunk_size_for(cfg.data.eval_batch_size)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    head = {"run_dir": str(run.run_dir), "ckpt_path": str(run.ckpt_path),
            "split": cfg.eval.split, "stages": [s.name for s in stages],
            "qstar_family": settings["qstar_family"] or "own", "eval": settings}  # fmt: skip
    ctx = Context(model, x, datamodule, cfg, "eval", cfg.eval.evaluate_num_samples,
                  cfg.eval.seed, run.run_dir)  # fmt: skip
    with evaluation_lock(run.run_dir):
        retire_evaluation(run.run_dir)
        record = EvaluationRecord(run.run_dir, head, cfg.eval.split)
        try:
            metrics = pipeline.run(stages, ctx, record.add)
        except BaseException as err:  # the stages done stay, under the evaluation's status
            if isinstance(err, KeyboardInterrupt):
                record.end("interrupted", f"interrupted by {signal_name()}")
            else:
                record.end("failed", f"{type(err).__name__}: {err}")
            raise
        if cfg.eval.compile:
            record.add({"eval/compile_s": model.compile_seconds}, {})
        ended = record.end("completed")
    log_to_wandb(run.run_dir, cfg, read_metrics(run.run_dir), metrics)
    print(pipeline.headline(metrics, ended, pipeline.flags_of(ctx)))
    return ended


_failures: list[str] = []  # the runs of this process whose evaluation failed


def evaluate_request(request: DictConfig, overrides: list[str]) -> list[dict[str, Any]]:
    """Evaluate every run the request names, each failing alone: a failure is printed as one
    line and counted, and the next run is evaluated."""
    records = []
    runs = locate(request.get("run_dir"), request.get("ckpt_path"))
    for run in runs:
        try:
            record = evaluate_run(run, request, overrides)
        except USER_ERRORS as err:
            if len(runs) == 1:
                raise
            print(f"error: {run.run_dir}: {err}", file=sys.stderr)
            _failures.append(str(run.run_dir))
            continue
        print(f"written: {run.run_dir / EVAL_FILE} (every figure, with its stderr)")
        records.append(record)
    return records


def _request_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the evaluated config: not the runs named, not Hydra's."""
    names = ("run_dir", "ckpt_path", "hydra")
    return [o for o in overrides if override_key(o) not in names and not o.startswith("hydra")]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def app(request: DictConfig) -> None:
    """``python -m vae_lab.evaluate``: the request composed by Hydra (``conf/evaluate.yaml``)."""
    quiet_third_parties()
    hydra_cfg = HydraConfig.get()
    try:
        evaluate_request(request, _request_overrides(list(hydra_cfg.overrides.task)))
    except USER_ERRORS as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(
            f"error: {request.get('run_dir') or request.get('ckpt_path')}: {err}", file=sys.stderr
        )
        _failures.append(str(request.get("run_dir")))


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The command line; given ``argv`` (tests), the same request composed with Hydra's
    compose API in this process, returning the last run's record. SIGINT and SIGTERM stop it
    with exit status 128 + signal, the run's eval.json recording the stages done."""
    _failures.clear()
    try:
        with catching_signals():
            return _main(argv)
    except KeyboardInterrupt:
        print(
            f"interrupted by {signal_name()}: eval.json keeps the stages done "
            "(status: interrupted); evaluate again to finish",
            file=sys.stderr,
        )
        sys.exit(128 + (received() or signal.SIGINT))


def signal_name() -> str:
    """The signal that stopped the evaluation: SIGTERM, or SIGINT (Ctrl-C)."""
    return signal.Signals(received() or signal.SIGINT).name


def _main(argv: list[str] | None) -> dict[str, Any] | None:
    if argv is None:
        app()
        if _failures:
            print(f"{len(_failures)} evaluation(s) failed", file=sys.stderr)
            sys.exit(1)
        return None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            request = compose("evaluate", overrides=list(argv))
            records = evaluate_request(request, _request_overrides(list(argv)))
    except (*USER_ERRORS, HydraException, OmegaConfBaseException) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    return records[-1] if records else None


if __name__ == "__main__":
    main()

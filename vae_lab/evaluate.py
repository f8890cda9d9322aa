"""``python -m vae_lab.evaluate ckpt_path=PATH [KEY=VALUE ...]`` (or ``run_dir=DIR``):
re-evaluate a trained run and split its inference gap (Cremer, Li & Duvenaud 2018).

It loads the run's saved config (``<run>/.hydra/config.yaml``), applies the command line's
``KEY=VALUE`` overrides on top (``eval`` keys the run predates take their current defaults),
rebuilds the data and the model and loads the checkpoint (with ``run_dir=``,
``checkpoints/best.ckpt``). On ``eval.gap_points`` datapoints of ``eval.split``, a subset
seeded by ``eval.seed``, it runs these stages, each timed (``eval/time_<stage>_s``):

    iw      log p(x) by importance sampling, K = eval.num_samples, and from the same weights
            ELBO(q) of the encoder, ESS/K and the Pareto k-hat (the ELBO core's estimate)
    ais     log p(x) by annealed importance sampling (vae_lab.ais)
    qstar   q*, ELBO(q*) from K samples, qstar_residual and the gap split (vae_lab.gaps)
    exact   log p(x) in closed form, when the model is probabilistic PCA
    bdmc    with eval.bdmc=true: AIS bounds from both sides on data simulated from the model
            (vae_lab.bdmc)

The gaps are measured from the exact log p(x) when it is known, else from the better of the
IW and AIS estimates (``eval/log_px_best``). With ``eval.qstar_family`` set to a family other
than the run's own, the q* figures are named ``eval/elbo_qstar_<family>``,
``eval/approximation_gap_<family>``, ``eval/time_qstar_<family>_s``, ... so they sit beside
the run's own in metrics.json (the other figures are recomputed and overwritten). A list,
``eval.qstar_family=[flow,gaussian]``, fits a q* in each family after one IW and one AIS
stage: Cremer et al.'s L[q*_flow] and L[q*_FFG] of one model in one call.

Writes ``eval.json`` in the run folder, merges its ``eval/*`` metrics into ``metrics.json`` and
adds them to the run's W&B run if it had one. This module composes the pieces; the maths is
in vae_lab.elbo, vae_lab.ais, vae_lab.gaps and vae_lab.data.linear_gaussian.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.ais import ais_log_px
from vae_lab.bdmc import bdmc_metrics
from vae_lab.build import build_datamodule, build_model
from vae_lab.data import InMemoryDataModule
from vae_lab.data.linear_gaussian import ppca_of
from vae_lab.elbo import iw_log_px
from vae_lab.estimate import Estimate, Figure
from vae_lab.gaps import (
    QStarSettings,
    fit_qstar,
    gap_split,
    moment_matched_theta,
    prior_theta,
    qstar_residual,
    warn_if_residual_matters,
)
from vae_lab.metrics import IWLogLikelihood
from vae_lab.module import VAE
from vae_lab.outputs import update_metrics, write_json
from vae_lab.posteriors import PosteriorFamily
from vae_lab.psis import warn_if_unreliable
from vae_lab.run import USER_ERRORS, use_threads
from vae_lab.validation import ConfigError, validate

log = logging.getLogger(__name__)

#: AIS this far below the IW estimate is reported: its annealing is too short for the model
AIS_SHORTFALL_NATS = 1.0

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EVAL_FILE = "eval.json"
SPLITS = ("train", "val", "test")
_MISSING = object()


# -- the run: where it is, its config, its data and model -----------------------------------
@dataclass
class Run:
    run_dir: Path
    ckpt_path: Path
    overrides: list[str]


def parse_args(argv: list[str]) -> Run:
    """``ckpt_path=PATH`` and/or ``run_dir=DIR``, then ``KEY=VALUE`` overrides."""
    if bad := [a for a in argv if "=" not in a]:
        raise ConfigError(f"arguments are KEY=VALUE, got {bad[0]!r}")
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in ("ckpt_path", "run_dir"))
    overrides = [a for a in argv if a.split("=", 1)[0] not in ("ckpt_path", "run_dir")]
    if "ckpt_path" in args:
        ckpt = Path(args["ckpt_path"]).expanduser()
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={ckpt} is not a file")
        default_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        run_dir = Path(args.get("run_dir", default_dir)).expanduser()
    elif "run_dir" in args:
        run_dir = Path(args["run_dir"]).expanduser()
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            raise ConfigError(f"run_dir={run_dir} has no checkpoints/best.ckpt")
    else:
        raise ConfigError("give ckpt_path=PATH (a run's checkpoint) or run_dir=DIR (a run folder)")
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder (no .hydra/config.yaml): pass run_dir=DIR as well"
        )
    return Run(run_dir, ckpt, overrides)


def compose_default(overrides: list[str] = ()) -> DictConfig:
    """The config ``python -m vae_lab.run`` would compose today."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def load_config(run: Run) -> DictConfig:
    """The run's saved config, with today's ``eval`` defaults beneath and the overrides on top."""
    saved = OmegaConf.load(run.run_dir / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge({"eval": compose_default().eval}, saved)
    for override in run.overrides:
        key = override.split("=", 1)[0]
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"{override} is invalid: the run's config has no key {key}")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(run.overrides))
    validate(cfg)
    return cfg


def load_model(cfg: DictConfig, ckpt_path: Path, data_dim: int) -> VAE:
    model = build_model(cfg, data_dim)
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # any failure here is the checkpoint's: say so in one line
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a checkpoint of this run's model: "
            f"{type(err).__name__}: {first_line}"
        ) from err
    return model.eval().requires_grad_(False)


def select_points(datamodule: InMemoryDataModule, split: str, num: int | None, seed: int) -> Tensor:
    """A seeded subset of ``num`` points of the split (all of it for None), binarised with the
    datamodule's fixed seed where it binarises (the training split is otherwise binarised
    afresh at every batch)."""
    data = datamodule.splits[SPLITS.index(split)]
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x = data[order[:num]]
    if split == "train" and datamodule.binarize:
        generator = torch.Generator().manual_seed(datamodule.binarize_seed)
        x = torch.bernoulli(x, generator=generator)
    return x


def qstar_families(cfg: DictConfig, model: VAE) -> list[tuple[PosteriorFamily, str]]:
    """The families q* is sought in (``eval.qstar_family``: one option, a list, or null for
    the run's own), each with the suffix of its metric names ('' for the run's own)."""
    names = cfg.eval.qstar_family
    names = [names] if names is None or isinstance(names, str) else list(names)
    options = sorted(p.stem for p in (CONF_DIR / "posterior").glob("*.yaml"))
    latent_dim = cfg.latent_dim
    families = []
    for name in names:
        if name is not None and name not in options:
            raise ConfigError(f"eval.qstar_family={name} is invalid: must be one of {options}")
        overrides = [f"posterior={name}", f"latent_dim={latent_dim}"]
        family_cfg = cfg.posterior if name is None else compose_default(overrides).posterior
        if family_cfg == cfg.posterior:
            families.append((model.posterior, ""))
            continue
        feature_dim = model.posterior.head.in_features
        family = instantiate(family_cfg, feature_dim=feature_dim, latent_dim=latent_dim)
        if any(not key.startswith("head.") for key, _ in family.named_parameters()):
            log.warning(
                "eval.qstar_family=%s has networks shared across datapoints that this run never "
                "trained; its q* moves only the per-datapoint parameters through untrained "
                "networks. For another family's flow q*, planar and sylvester have no shared "
                "weights.",
                name,
            )
        families.append((family, f"_{name}"))
    return families


# -- the stages ------------------------------------------------------------------------------
@contextmanager
def timed(metrics: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    metrics[f"eval/time_{stage}_s"] = time.perf_counter() - start
    log.info("%s took %.1f s", stage, metrics[f"eval/time_{stage}_s"])


def put(metrics: dict[str, float], name: str, figure: Figure) -> None:
    metrics[f"eval/{name}"] = figure.value
    metrics[f"eval/{name}_stderr"] = figure.stderr


def evaluate_points(
    model: VAE,
    x: Tensor,
    ev: DictConfig,
    families: list[tuple[PosteriorFamily, str]],
    batch_size: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every eval/* metric on the datapoints x, with a q* in each of ``families``; and what was
    chosen on the way."""
    metrics: dict[str, float] = {"eval/num_points": x.shape[0]}
    k, chunk = ev.num_samples, ev.chunk_size
    batches = list(range(0, x.shape[0], batch_size))
    with torch.no_grad():
        prior = model.p_z()

    def elbo_over_batches(q_of: Callable[[slice], Distribution]) -> Figure:
        parts = [
            iw_log_px(q_of(s), prior, model.log_likelihood(x[s]), k, chunk).elbo
            for s in (slice(i, i + batch_size) for i in batches)
        ]
        return Estimate.cat(parts).figure()

    with timed(metrics, "iw"), torch.inference_mode():
        summary = IWLogLikelihood()  # the test stage's summary: log p(x), ESS/K, k-hat
        elbo_parts = []
        for i in batches:
            estimate = model.iw_estimate(x[i : i + batch_size], k, chunk)
            summary.update(estimate)
            elbo_parts.append(estimate.elbo)
        values = {f"eval/{name}": float(value) for name, value in summary.compute().items()}
    metrics.update(values)
    log_px = Figure(values["eval/log_px"], values["eval/log_px_stderr"])
    elbo_q = Estimate.cat(elbo_parts).figure()
    put(metrics, "elbo", elbo_q)
    warn_if_unreliable("eval", metrics["eval/psis_khat_bad"], "eval.num_samples")

    with timed(metrics, "ais"):
        with torch.no_grad():
            q = model.q(x)
        ais = ais_log_px(
            q, prior, model.log_likelihood(x), ev.ais_steps, ev.ais_chains,
            leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains,
            progress=True,
        )  # fmt: skip
    log_px_ais = ais.log_px.figure()
    put(metrics, "log_px_ais", log_px_ais)
    metrics["eval/ais_accept_rate"] = float(ais.accept_rate.mean())
    best = max(log_px, log_px_ais, key=lambda f: f.value)
    put(metrics, "log_px_best", best)
    if log_px.value - log_px_ais.value > AIS_SHORTFALL_NATS:
        log.warning(
            "AIS (%.2f) is %.1f nats below IW (%.2f): its annealing is too short for this "
            "model; raise eval.ais_steps (log_px_best is IW's)",
            log_px_ais.value, log_px.value - log_px_ais.value, log_px.value,
        )  # fmt: skip

    reference = best
    ppca = ppca_of(model)
    if ppca is not None:
        exact = float(ppca.marginal().log_prob(x.double()).mean())
        metrics["eval/log_px_exact"] = exact
        reference = Figure(exact, 0.0)

    settings = QStarSettings(
        lr=ev.qstar_lr, num_samples=ev.qstar_samples, max_steps=ev.qstar_max_steps,
        tol=ev.qstar_tol, num_decays=ev.qstar_decays, gradient=ev.qstar_gradient,
        residual_steps=ev.qstar_residual_steps,
    )  # fmt: skip
    init = ev.qstar_init

    def qstar_stage(family: PosteriorFamily, suffix: str) -> None:
        with timed(metrics, f"qstar{suffix}"):
            with torch.no_grad():
                if init == "encoder" and family is model.posterior:
                    theta0 = model.posterior(model.encoder(x))
                else:
                    theta0 = prior_theta(family, prior, x.shape[0], settings)
                    if init == "encoder":
                        theta0 = moment_matched_theta(family, model.q(x), theta0)
            rows_likelihood = lambda rows: model.log_likelihood(x[rows])  # noqa: E731
            fit = fit_qstar(family, prior, rows_likelihood, theta0, settings, progress=True)
            with torch.inference_mode():
                elbo_qstar = elbo_over_batches(lambda s: family.distribution(fit.theta[s]))
            residual = qstar_residual(family, prior, rows_likelihood, fit, settings, k, chunk)
        put(metrics, f"elbo_qstar{suffix}", elbo_qstar)
        put(metrics, f"qstar_residual{suffix}", residual.figure())
        metrics[f"eval/qstar_converged{suffix}"] = float(fit.converged.double().mean())
        metrics[f"eval/qstar_steps{suffix}"] = fit.steps
        for name, figure in gap_split(reference, elbo_qstar, elbo_q).items():
            put(metrics, f"{name}{suffix}" if name != "inference_gap" else name, figure)
        gap_stderr = metrics[f"eval/approximation_gap{suffix}_stderr"]
        warn_if_residual_matters(residual.figure(), gap_stderr)

    for family, suffix in families:
        qstar_stage(family, suffix)
    if ev.bdmc:
        with timed(metrics, "bdmc"):
            metrics.update(bdmc_metrics(model, ev))
    chosen = {"qstar_init": init, "gap_reference": "exact" if ppca is not None else "best"}
    return metrics, chosen


# -- outputs ---------------------------------------------------------------------------------
def log_to_wandb(run_dir: Path, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Add the metrics to the run's own W&B run (resumed by its id), if it logged to one."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    if not runs or cfg.get("logger") is None:
        return
    import wandb

    folder = runs[-1].name  # run-<stamp>-<id>, or offline-run-<stamp>-<id>
    wandb_run = wandb.init(
        project=cfg.logger.get("project", "vae_lab"),
        id=folder.rsplit("-", 1)[1],
        dir=str(run_dir),
        resume="allow",
        mode="offline" if folder.startswith("offline-") else "online",
    )
    wandb_run.summary.update(metrics)
    wandb_run.finish()


def evaluate_run(run: Run) -> dict[str, Any]:
    """Every stage on the run; writes eval.json and merges the metrics into metrics.json."""
    cfg = load_config(run)
    use_threads(cfg.get("num_threads"))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    model = load_model(cfg, run.ckpt_path, datamodule.data_dim)
    families = qstar_families(cfg, model)
    torch.manual_seed(cfg.eval.seed)
    x = select_points(datamodule, cfg.eval.split, cfg.eval.gap_points, cfg.eval.seed)
    metrics, chosen = evaluate_points(model, x, cfg.eval, families, cfg.data.eval_batch_size)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    record = {
        "run_dir": str(run.run_dir),
        "ckpt_path": str(run.ckpt_path),
        "split": cfg.eval.split,
        "qstar_family": settings["qstar_family"] or "own",
        **chosen,
        "eval": settings,
        **metrics,
    }
    write_json(run.run_dir / EVAL_FILE, record)
    update_metrics(run.run_dir, metrics)
    log_to_wandb(run.run_dir, cfg, metrics)
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = evaluate_run(parse_args(sys.argv[1:] if argv is None else argv))
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for key, value in record.items():
        if key.startswith("eval/"):
            print(f"{key:40s} {value:.4f}")
    print(f"written: {Path(record['run_dir']) / EVAL_FILE}")
    return record


if __name__ == "__main__":
    main()

"""``python -m vae_lab.evaluate run_dir=DIR [KEY=VALUE ...]`` (or ``ckpt_path=PATH``):
re-evaluate a trained run and split its inference gap (Cremer, Li & Duvenaud 2018).

A Hydra app (``conf/evaluate.yaml``): the command line is composed and checked over today's
run config as ``vae_lab.run``'s is; then the run's saved config (``<run>/.hydra/config.yaml``)
replaces it, over today's defaults for the run's options (keys the run predates), and only the
``EVAL_OVERRIDABLE`` keys of the command line are applied on top. ``-m run_dir=A,B`` or
``run_dir=SWEEP_DIR`` evaluates several runs, each failing alone. It rebuilds the data and the
model and loads the checkpoint (with ``run_dir=``, ``checkpoints/best.ckpt``), refusing one
that records another run than the folder's; it checks that it can write into the folder before
any work. On ``eval.gap_points`` datapoints of ``eval.split``, a subset
seeded by ``eval.seed``, on ``eval.device`` (auto: the GPU where torch sees one), it runs
these stages, each timed (``eval/time_<stage>_s``):

    iw      log p(x) by importance sampling, K = eval.num_samples, and from the same weights
            ELBO(q) of the encoder, ESS/K and the Pareto k-hat (the ELBO core's estimate)
    refined objective=savae: the same from the q refined per datapoint as in training
            (eval/elbo_refined, eval/log_px_refined, ...), and its own amortization gap
            eval/amortization_gap_refined = ELBO(q*) - ELBO(refined q)
    qstar   q*, ELBO(q*) from K samples, and from the same weights IW with q* as the proposal
            (eval/log_px_qstar, its ESS/K and k-hat); qstar_residual (vae_lab.gaps)
    ais     log p(x) by annealed importance sampling (vae_lab.ais) from eval.ais_start: best
            = of the encoder's q and the q*s, the one with the highest ELBO (q*, as a rule)
    exact   log p(x) in closed form, when the model is probabilistic PCA
    sample quality   FID/KID/precision/recall of reconstructions and prior samples on the test
            images, and of the priors of eval.refit_prior=[mixture,flow,diffusion] refitted
            to the aggregate posterior (vae_lab.sample_quality.evaluation)
    bdmc    with eval.bdmc=true: AIS bounds from both sides on data simulated from the model
            (vae_lab.bdmc)

With ``eval.compile=true`` the estimates are compiled where no gradient is taken: the IW
stages' log-weights and log p(x|z) (``eval/compile_s``: the time spent compiling, counted in
the stages' times; vae_lab.fast_eval).

The gaps are measured from the exact log p(x) when it is known, else from the best of the IW,
IW-from-q* and AIS estimates (``eval/log_px_best``). With ``eval.qstar_family`` set to a family
other than the run's own, the q* figures are named ``eval/elbo_qstar_<family>``,
``eval/approximation_gap_<family>``, ``eval/time_qstar_<family>_s``, ... so they sit beside the
run's own in metrics.json (the other figures are recomputed and overwritten). A list,
``eval.qstar_family=[flow,gaussian]``, fits a q* in each family, with one IW and one AIS stage:
Cremer et al.'s L[q*_flow] and L[q*_FFG] of one model in one call.

Writes ``eval.json`` in the run folder and merges its ``eval/*`` metrics into ``metrics.json``
as each stage ends, and adds them to the run's W&B run if it had one; an earlier evaluation's
``eval.json`` is first kept as ``evals/<n>.json``. This module composes the
pieces; the maths is in vae_lab.elbo, vae_lab.ais, vae_lab.gaps and vae_lab.data.linear_gaussian.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.ais import ais_log_px, warn_if_biased
from vae_lab.bdmc import bdmc_metrics
from vae_lab.build import build_datamodule, build_model
from vae_lab.console import quiet_third_parties
from vae_lab.data import InMemoryDataModule
from vae_lab.data.linear_gaussian import ppca_of
from vae_lab.elbo import IWEstimate, LogLikelihood
from vae_lab.estimate import Figure
from vae_lab.gaps import (
    FALLBACK_START_STEPS,
    QStarFit,
    QStarSettings,
    fit_qstar,
    gap_split,
    mean_moved_theta,
    moment_matched_theta,
    prior_theta,
    qstar_residual,
    qstar_start,
    warn_if_residual_matters,
)
from vae_lab.interrupts import catching_signals, received, resume_command
from vae_lab.metrics import IWLogLikelihood
from vae_lab.module import VAE
from vae_lab.outputs import (
    EVAL_FILE,
    EVAL_SPLIT,
    METRICS_FILE,
    evaluation_lock,
    read_metrics,
    retire_evaluation,
    update_metrics,
    write_json,
)
from vae_lab.paths import CONF_DIR
from vae_lab.posteriors import PosteriorFamily
from vae_lab.psis import warn_if_unreliable
from vae_lab.run import HYDRA_DIR, USER_ERRORS, saved_choices, use_threads
from vae_lab.sample_quality.evaluation import check_settings, sample_quality_stage
from vae_lab.validation import (
    NON_NEGATIVE_INT,
    NON_NEGATIVE_NUMBER,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SAMPLES_WITH_STDERR,
    ConfigError,
    Rule,
    one_of,
    optional,
    validate,
)

log = logging.getLogger(__name__)

#: AIS this far below the IW estimate is reported: its annealing is too short for the model
AIS_SHORTFALL_NATS = 1.0

SPLITS = ("train", "val", "test")
#: keys an evaluation may override (a prefix ending in "." stands for every key below it)
EVAL_OVERRIDABLE = ("eval.", "sample_quality.", "refit.", "data.root", "data.download",
                    "data.mirror", "data.eval_batch_size", "num_threads")  # fmt: skip
#: the config groups of conf/config.yaml's defaults list, composed with the run's options
DEFAULTS_GROUPS = ("data", "model", "posterior", "prior", "likelihood", "objective", "trainer",
                   "logger")  # fmt: skip


def _families(v: Any) -> bool:
    if v is None or isinstance(v, str):
        return True
    return (
        isinstance(v, list | tuple | ListConfig)
        and len(v) > 0
        and all(f is None or isinstance(f, str) for f in v)
    )


#: evaluate's own keys: key -> rule
EVAL_RULES: dict[str, Rule] = {
    "eval.split": one_of(*SPLITS),
    "eval.gap_points": optional(POSITIVE_INT),
    "eval.seed": NON_NEGATIVE_INT,
    "eval.ais_steps": POSITIVE_INT,
    "eval.ais_chains": SAMPLES_WITH_STDERR,
    "eval.ais_leapfrog_steps": POSITIVE_INT,
    "eval.qstar_family": (_families, "a posterior option, a non-empty list of them, or null"),
    "eval.qstar_init": one_of("encoder", "prior"),
    "eval.qstar_lr": POSITIVE_NUMBER,
    "eval.qstar_samples": POSITIVE_INT,
    "eval.qstar_max_steps": POSITIVE_INT,
    "eval.qstar_tol": NON_NEGATIVE_NUMBER,
    "eval.ais_pilot_chains": POSITIVE_INT,
    "eval.ais_start": one_of("best", "encoder"),
    "eval.qstar_decays": NON_NEGATIVE_INT,
    "eval.qstar_gradient": one_of("stl", "reparam"),
    "eval.qstar_residual_steps": POSITIVE_INT,
    "eval.bdmc": one_of(True, False),
    "eval.bdmc_points": POSITIVE_INT,
    "eval.device": (
        lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
        "auto, cpu, cuda or cuda:N",
    ),
}


# -- the run: where it is, its config, its data and model -----------------------------------
@dataclass
class Run:
    run_dir: Path
    ckpt_path: Path


def compose_default(overrides: list[str] = ()) -> DictConfig:
    """The config ``python -m vae_lab.run`` would compose today (inside the Hydra app too)."""
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _is_run(folder: Path) -> bool:
    return (folder / HYDRA_DIR / "config.yaml").is_file()


def locate(run_dir: str | None, ckpt_path: str | None) -> list[Run]:
    """The runs to evaluate: ``ckpt_path`` (in its run folder, or ``run_dir``), the run folder
    ``run_dir`` (its ``checkpoints/best.ckpt``), or every run of the sweep folder ``run_dir``."""
    if ckpt_path is not None:
        ckpt = Path(ckpt_path).expanduser()
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={ckpt} is not a file")
        default_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        folder = Path(run_dir).expanduser() if run_dir is not None else default_dir
        if not _is_run(folder):
            raise ConfigError(
                f"{folder} is not a run folder (no .hydra/config.yaml): pass run_dir=DIR as well"
            )
        return [Run(folder, ckpt)]
    if run_dir is None:
        raise ConfigError("give ckpt_path=PATH (a run's checkpoint) or run_dir=DIR (a run folder)")
    folder = Path(run_dir).expanduser()
    jobs = [folder] if _is_run(folder) else sorted(p.parent for p in folder.glob("*/.hydra"))
    jobs = [job for job in jobs if _is_run(job)]
    if not jobs:
        raise ConfigError(f"run_dir={folder} is not a run or sweep folder (no .hydra/config.yaml)")
    runs = [Run(job, job / "checkpoints" / "best.ckpt") for job in jobs]
    if len(runs) == 1 and not runs[0].ckpt_path.is_file():
        raise ConfigError(f"run_dir={folder} has no checkpoints/best.ckpt")
    return runs


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def load_config(run: Run, request: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's saved config over today's defaults for its options (keys it predates), with
    the ``overrides`` of ``EVAL_OVERRIDABLE`` keys on top, their values as Hydra composed and
    checked them in ``request``."""
    if bad := [o for o in overrides if not _key(o).startswith(EVAL_OVERRIDABLE)]:
        raise ConfigError(
            f"{bad[0]}: evaluate keeps the run's trained model and config; only "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in EVAL_OVERRIDABLE)} may "
            "change (a q* in another family: eval.qstar_family=NAME)"
        )
    saved = OmegaConf.load(run.run_dir / HYDRA_DIR / "config.yaml")
    try:
        choices = saved_choices(run.run_dir)
        options = [f"{g}={o}" for g, o in choices.items() if g in DEFAULTS_GROUPS]
        base = compose_default(options)
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
        key = _key(override)
        OmegaConf.update(cfg, key, OmegaConf.select(request, key), force_add=True)
    validate(cfg)
    validate(cfg, EVAL_RULES)
    return cfg


def load_model(cfg: DictConfig, run: Run, data_dim: int) -> VAE:
    """The model of ``cfg`` with the weights of the run's checkpoint, refused when the
    checkpoint records another run than the folder's metrics.json."""
    model = build_model(cfg, data_dim)
    try:
        checkpoint = torch.load(run.ckpt_path, map_location="cpu", weights_only=True)
        stamp = checkpoint.get("vae_lab", {})
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as err:  # any failure here is the checkpoint's: say so in one line
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"ckpt_path={run.ckpt_path} is not a checkpoint of this run's model: "
            f"{type(err).__name__}: {first_line}"
        ) from err
    metrics_file = run.run_dir / METRICS_FILE
    own = read_metrics(run.run_dir).get("run_id") if metrics_file.is_file() else None
    if own is not None and stamp.get("run_id") not in (None, own):
        raise ConfigError(
            f"ckpt_path={run.ckpt_path} is a checkpoint of another run (run_id "
            f"{stamp['run_id']}), not of {run.run_dir} (run_id {own}): evaluate it in its own "
            "folder"
        )
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
    if (run_dir / METRICS_FILE).is_file() and read_metrics(run_dir).get("status") == "running":
        raise ConfigError(
            f"{run_dir} is still training (status: running in its {METRICS_FILE}): evaluate it "
            f"when it ends; if its job was killed, finish it first with "
            f"`{resume_command(run_dir)}`"
        )


def eval_device(name: str) -> torch.device:
    """``eval.device``: auto is the GPU where torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"eval.device={name}, but torch sees no GPU here: use eval.device=cpu")
    return torch.device(name)


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
    suffixes = [suffix for _, suffix in families]
    if len(set(suffixes)) < len(suffixes):
        raise ConfigError(
            f"eval.qstar_family=[{','.join('null' if n is None else n for n in names)}] is "
            "invalid: it names one family twice (null is the run's own option), whose figures "
            "would overwrite each other"
        )
    return families


# -- the stages ------------------------------------------------------------------------------
#: called with the figures so far when a stage starts and when it ends, so that each stage's
#: figures are written as it finishes (``evaluate_run`` sets it)
stage_sink: ContextVar[Callable[[dict[str, float]], None]] = ContextVar(
    "stage_sink", default=lambda metrics: None
)


@contextmanager
def timed(metrics: dict[str, float], stage: str) -> Iterator[None]:
    stage_sink.get()(metrics)
    start = time.perf_counter()
    yield
    metrics[f"eval/time_{stage}_s"] = time.perf_counter() - start
    log.info("%s took %.1f s", stage, metrics[f"eval/time_{stage}_s"])
    stage_sink.get()(metrics)


def put(metrics: dict[str, float], name: str, figure: Figure) -> None:
    metrics.update(figure.named(f"eval/{name}"))


@dataclass
class Start:
    """A candidate start of AIS: its ELBO, the distribution on the evaluated points, and how
    to make it on others (BDMC's simulated data)."""

    elbo: Figure
    q: Distribution
    of: Callable[[Tensor], Distribution]


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
    slices = [slice(i, i + batch_size) for i in range(0, x.shape[0], batch_size)]
    with torch.no_grad():
        prior = model.p_z()
    settings = QStarSettings(
        lr=ev.qstar_lr, num_samples=ev.qstar_samples, max_steps=ev.qstar_max_steps,
        tol=ev.qstar_tol, num_decays=ev.qstar_decays, gradient=ev.qstar_gradient,
        residual_steps=ev.qstar_residual_steps,
    )  # fmt: skip

    def iw_stage(suffix: str, estimate_of: Callable[[slice], IWEstimate]) -> tuple[Figure, Figure]:
        """IW log p(x), the ELBO of the same weights, ESS/K and k-hat as
        eval/<name><suffix>; the IW log p(x) and the ELBO as figures."""
        with torch.inference_mode():
            summary = IWLogLikelihood().to(x.device)  # the test stage's figures
            for s in slices:
                summary.update(estimate_of(s))
            for name, value in summary.compute().items():
                stderr = "_stderr" if name.endswith("_stderr") else ""
                metrics[f"eval/{name.removesuffix('_stderr')}{suffix}{stderr}"] = float(value)
        return Figure.of_named(metrics, f"eval/log_px{suffix}"), Figure.of_named(
            metrics, f"eval/elbo{suffix}"
        )

    def rows_of(points: Tensor) -> Callable[[Tensor], LogLikelihood]:
        return lambda rows: model.log_likelihood(points[rows])

    def fit_start(family: PosteriorFamily, points: Tensor) -> QStarFit:
        """q* on the points, started at the best of the encoder's q (or a member of ``family``
        matching it), the family's fit to the prior, and that fit moved to the encoder's mean
        (vae_lab.gaps; eval.qstar_init=prior: the fit to the prior)."""
        with torch.no_grad():
            own = ev.qstar_init == "encoder" and family is model.posterior  # a fallback start
            steps = min(settings.max_steps, FALLBACK_START_STEPS) if own else settings.max_steps
            theta0 = prior_theta(family, prior, points.shape[0], replace(settings, max_steps=steps))
            if ev.qstar_init == "encoder":
                near_q = (
                    model.posterior(model.encoder(points))
                    if own
                    else moment_matched_theta(family, model.q(points), theta0)
                )
                moved = mean_moved_theta(theta0, near_q, family.latent_dim)
                candidates = [near_q, theta0, moved]
                theta0 = qstar_start(family, prior, model.log_likelihood(points), candidates)
        return fit_qstar(family, prior, rows_of(points), theta0, settings, progress=True)

    with timed(metrics, "iw"):
        log_px, elbo_q = iw_stage("", lambda s: model.iw_estimate(x[s], k, chunk))
    warn_if_unreliable("eval", metrics["eval/psis_khat_bad"], "eval.num_samples")

    refines = model.objective.refines  # objective=savae: its refined q beside the encoder's
    if refines:
        with timed(metrics, "refined"):
            theta = torch.cat([model.objective.refined_theta(model, x[s]) for s in slices])
            log_px_refined, elbo_refined = iw_stage(
                "_refined",
                lambda s: model.iw_estimate(x[s], k, chunk, theta=theta[s]),
            )

    # q* in each family: ELBO(q*), and IW with q* as the proposal from the same weights
    with torch.no_grad():
        starts = {"": Start(elbo_q, model.q(x), model.q)}  # AIS's candidate starts
    qstar: dict[str, tuple[Figure, Figure, Figure]] = {}  # suffix -> IW, ELBO(q*), residual
    for family, suffix in families:
        with timed(metrics, f"qstar{suffix}"):
            fit = fit_start(family, x)
            log_px_qstar, elbo_qstar = iw_stage(
                f"_qstar{suffix}",
                lambda s, f=family, t=fit.theta: model.iw_estimate(
                    x[s], k, chunk, theta=t[s], family=f
                ),
            )
            residual = qstar_residual(family, prior, rows_of(x), fit, settings, k, chunk)
        put(metrics, f"qstar_residual{suffix}", residual.figure())
        metrics[f"eval/qstar_converged{suffix}"] = float(fit.converged.double().mean())
        metrics[f"eval/qstar_steps{suffix}"] = fit.steps
        qstar[suffix] = log_px_qstar, elbo_qstar, residual.figure()
        with torch.no_grad():
            starts[f"_qstar{suffix}"] = Start(
                elbo_qstar,
                family.distribution(fit.theta),
                lambda points, f=family: f.distribution(fit_start(f, points).theta),
            )

    # AIS from the start with the best ELBO: q* wherever it was fitted (eval.ais_start=best)
    start = "" if ev.ais_start == "encoder" else max(starts, key=lambda s: starts[s].elbo.value)
    with timed(metrics, "ais"):
        ais = ais_log_px(
            starts[start].q, prior, model.log_likelihood(x), ev.ais_steps, ev.ais_chains,
            leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains,
            progress=True,
        )  # fmt: skip
    log_px_ais = ais.log_px.figure()
    put(metrics, "log_px_ais", log_px_ais)
    metrics["eval/ais_accept_rate"] = float(ais.accept_rate.mean())
    metrics["eval/log_px_ais_bias"] = float(ais.shortfall.mean())
    metrics["eval/ais_ess_fraction"] = float(ais.ess_fraction.mean())
    biased = warn_if_biased(log_px_ais, metrics["eval/log_px_ais_bias"],
                            metrics["eval/ais_ess_fraction"])  # fmt: skip
    start_khat_bad = metrics[f"eval/psis_khat_bad{start}"]
    far = start_khat_bad > 0  # AIS's start far from the posterior at some points
    if far and not biased and not ev.bdmc:
        log.warning(
            "eval/log_px_ais: its start q is far from the posterior at %.0f%% of the points "
            "(IW's k-hat > 0.7), where AIS's bias can exceed its stderr unseen by the "
            "jackknife; certify it with eval.bdmc=true (ais_reliable = 0 until then)",
            100 * start_khat_bad,
        )  # fmt: skip
    metrics["eval/ais_reliable"] = float(not biased and not far)

    estimates = {"IW": log_px, "AIS": log_px_ais}
    if refines:
        estimates["IW from the refined q"] = log_px_refined
    estimates |= {f"IW from q*{suffix}": figures[0] for suffix, figures in qstar.items()}
    best = max(estimates.values(), key=lambda f: f.value)
    put(metrics, "log_px_best", best)
    if log_px.value - log_px_ais.value > AIS_SHORTFALL_NATS:
        log.warning(
            "AIS (%.2f) is %.1f nats below IW (%.2f): its annealing is too short for this "
            "model; raise eval.ais_steps (log_px_best is not AIS's)",
            log_px_ais.value, log_px.value - log_px_ais.value, log_px.value,
        )  # fmt: skip

    reference = best
    ppca = ppca_of(model)
    if ppca is not None:
        exact = float(ppca.marginal().log_prob(x.double()).mean())
        metrics["eval/log_px_exact"] = exact
        reference = Figure(exact, 0.0)
    for suffix, (_, elbo_qstar, residual) in qstar.items():
        for name, figure in gap_split(reference, elbo_qstar, elbo_q).items():
            put(metrics, f"{name}{suffix}" if name != "inference_gap" else name, figure)
        warn_if_residual_matters(residual, metrics[f"eval/approximation_gap{suffix}_stderr"])
    if refines and "" in qstar:
        _, elbo_qstar, _ = qstar[""]
        put(metrics, "amortization_gap_refined", elbo_qstar - elbo_refined)
        put(metrics, "inference_gap_refined", reference - elbo_refined)
    if ev.bdmc:
        with timed(metrics, "bdmc"):
            metrics.update(bdmc_metrics(model, ev, starts[start].of, log_px_ais.stderr))
        certified = bool(metrics["eval/bdmc_certified"])
        metrics["eval/ais_reliable"] = float(not biased and certified)
    chosen = {
        "qstar_init": ev.qstar_init,
        "ais_start": "encoder" if start == "" else start.lstrip("_"),
        "gap_reference": "exact" if ppca is not None else "best",
        "log_px_best": next(name for name, f in estimates.items() if f is best),
    }
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


def evaluate_run(run: Run, request: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Every stage on the run; eval.json and metrics.json are written as each stage ends.
    From its first write on, the evaluation holds the run (``evaluation_lock``): a second
    evaluation of it is refused there, after its own checks, before it writes anything."""
    cfg = load_config(run, request, overrides)
    check_writable(run.run_dir)
    check_trained(run.run_dir)
    use_threads(cfg.get("num_threads"))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    model = load_model(cfg, run, datamodule.data_dim)
    if cfg.eval.compile:
        model.compile_estimates()
    families = qstar_families(cfg, model)
    check_settings(cfg, datamodule)  # bad sample-quality settings fail before the slow stages
    x = select_points(datamodule, cfg.eval.split, cfg.eval.gap_points, cfg.eval.seed)
    device = eval_device(cfg.eval.device)
    model.to(device)
    if cfg.eval.chunk_size is None:  # the evaluating device's default, recorded in eval.json
        cfg.eval.chunk_size = model.chunk_size_for(cfg.data.eval_batch_size)
    for family, _ in families:
        family.to(device)
    x = x.to(device)
    datamodule.splits = tuple(split.to(device) for split in datamodule.splits)
    torch.manual_seed(cfg.eval.seed)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    head = {
        "run_dir": str(run.run_dir),
        "ckpt_path": str(run.ckpt_path),
        "split": cfg.eval.split,
        "qstar_family": settings["qstar_family"] or "own",
        "eval": settings,
    }

    written: dict[str, float] = {}  # the figures of the stages done

    def save(metrics: dict[str, float], status: str = "running", **chosen: Any) -> None:
        written.update(metrics)
        write_json(run.run_dir / EVAL_FILE, {**head, "status": status, **chosen, **written})
        update_metrics(run.run_dir, {**metrics, EVAL_SPLIT: cfg.eval.split})

    with evaluation_lock(run.run_dir):
        retire_evaluation(run.run_dir)
        token = stage_sink.set(save)
        try:
            batch_size = cfg.data.eval_batch_size
            metrics, chosen = evaluate_points(model, x, cfg.eval, families, batch_size)
            quality, quality_record = sample_quality_stage(cfg, model, datamodule, x, run.run_dir)
        except BaseException as err:  # the stages done stay, under the status of the evaluation
            if isinstance(err, KeyboardInterrupt):
                status, error = "interrupted", f"interrupted by {signal_name()}"
            else:
                status, error = "failed", f"{type(err).__name__}: {err}"
            ended = {**head, "status": status, "error": error, **written}
            write_json(run.run_dir / EVAL_FILE, ended)
            raise
        finally:
            stage_sink.reset(token)
        if cfg.eval.compile:
            metrics["eval/compile_s"] = model.compile_seconds
        metrics.update(quality)
        chosen.update(quality_record)
        save(metrics, "completed", **chosen)
        log_to_wandb(run.run_dir, cfg, metrics)
        return {**head, "status": "completed", **chosen, **metrics}


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
        for key, value in record.items():
            if key.startswith("eval/"):
                print(f"{key:40s} {value:.4f}")
        print(f"written: {run.run_dir / EVAL_FILE}")
        records.append(record)
    return records


def _request_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the evaluated config: not the runs named, not Hydra's."""
    return [o for o in overrides if _key(o) not in ("run_dir", "ckpt_path", "hydra")
            and not o.startswith("hydra")]  # fmt: skip


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

"""The evaluation pipeline: the stages chosen by name, run in order, each written as it ends.

``vae_lab.run`` runs it on the test split after training (``eval.test_stages``, the cheap
stages by default) and records ``test/*``; ``vae_lab.evaluate`` runs it on a seeded subset of
a split (``eval.stages``) and records ``eval/*``. A stage is one file in
``vae_lab/evaluation/stages/`` that defines ``STAGE``; the pipeline finds it there, so adding
an estimator touches no other file but its config keys.

After the stages, ``conclude`` derives what only their results together give (Cremer, Li &
Duvenaud 2018): ``log_px_best``, the largest log p(x) estimate not flagged unreliable (the
largest of all only where every one is flagged; ``log_px_best_reliable`` says which, and which
estimator gave it), and from the exact log p(x) where known, else from ``log_px_best``, the
split of the inference gap of the encoder's q into

    approximation gap = log p(x) - ELBO(q*)     amortization gap = ELBO(q*) - ELBO(q),

flagged (``gaps_reliable`` 0) where they are measured from a flagged log p(x).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_lab.components.data import InMemoryDataModule
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.gaps import gap_split, warn_if_residual_matters
from vae_lab.evaluation import stages as stages_package
from vae_lab.evaluation.bits_per_dim import add_bits_per_dim
from vae_lab.evaluation.stage import Context, Stage, StageResult

log = logging.getLogger(__name__)

#: called with each stage's metrics (prefixed) and choices as it ends
Sink = Callable[[dict[str, float], dict[str, Any]], None]


def registry() -> dict[str, type[Stage]]:
    """Stage name -> class, from the modules of ``vae_lab.evaluation.stages``."""
    found = {}
    for info in pkgutil.iter_modules(stages_package.__path__):
        module = importlib.import_module(f"{stages_package.__name__}.{info.name}")
        stage = getattr(module, "STAGE", None)
        if stage is not None:
            found[stage.name] = stage
    return found


def select(names: Sequence[str], key: str = "eval.stages") -> list[Stage]:
    """The stages named, with the stages they need, in an order where each runs after the
    stages it needs or uses; an unknown name is a one-line ConfigError naming ``key``."""
    known = registry()
    names = [names] if isinstance(names, str) else list(names)
    if bad := [n for n in names if n not in known]:
        raise ConfigError(f"{key}=[{','.join(names)}]: {bad[0]} is not a stage; the stages: "
                          f"{', '.join(sorted(known))}")  # fmt: skip
    wanted: list[str] = []

    def want(name: str) -> None:
        if name not in wanted:
            for need in known[name].needs:
                if need not in names and need not in wanted:
                    log.info("%s: %s needs %s, which runs too", key, name, need)
                want(need)
            wanted.append(name)

    for name in names:
        want(name)
    ordered: list[str] = []

    def place(name: str) -> None:
        if name in ordered:
            return
        for before in (*known[name].needs, *known[name].after):
            if before in wanted:
                place(before)
        ordered.append(name)

    for name in wanted:
        place(name)
    return [known[name]() for name in ordered]


def check(stages: Sequence[Stage], cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
    """Every stage's checks, before any stage does work."""
    for stage in stages:
        stage.check(cfg, datamodule)


def not_run_note(stages: Sequence[Stage], command: str) -> str:
    """One line: the stages that did not run, what they would add, and how to run them."""
    ran = {s.name for s in stages}
    rest = {n: cls for n, cls in registry().items() if n not in ran}
    if not rest:
        return ""
    what = "; ".join(f"{n} ({cls.summary})" for n, cls in rest.items())
    return f"not run: {what}. Run them with {command} eval.stages=[{','.join(rest)}]"


def run(stages: Sequence[Stage], ctx: Context, sink: Sink | None = None) -> dict[str, float]:
    """Run the stages in order on ``ctx``; each stage's metrics go to ``sink`` as it ends,
    then the conclusion's; returns all metrics (prefixed)."""
    metrics: dict[str, float] = {f"{ctx.prefix}/num_points": float(len(ctx.x))}
    if sink is not None:
        sink(dict(metrics), {})
    for stage in stages:
        if not stage.applies(ctx):
            log.debug("%s: nothing to do for this run", stage.name)
            continue
        log.info("%s: %s", stage.name, stage.cost(ctx))
        start = time.perf_counter()
        result = stage.run(ctx)
        add_bits_per_dim(result, ctx)
        result.values[f"time_{stage.name}_s"] = time.perf_counter() - start
        ctx.results[stage.name] = result
        metrics |= result.metrics(ctx.prefix)
        if sink is not None:
            sink(result.metrics(ctx.prefix), result.chosen)
    conclusion = conclude(ctx)
    add_bits_per_dim(conclusion, ctx)
    ctx.results["conclusion"] = conclusion
    metrics |= conclusion.metrics(ctx.prefix)
    if sink is not None:
        sink(conclusion.metrics(ctx.prefix), conclusion.chosen)
    return metrics


def conclude(ctx: Context) -> StageResult:
    """``log_px_best`` and the gap split from the stages' results (module docstring)."""
    out = StageResult()
    results = ctx.results.values()
    estimates = {label: f for r in results for label, f in r.log_px.items()}
    unreliable = {label for r in results for label in r.unreliable}
    certified = ctx.results.get("bdmc", StageResult()).state.get("certified_labels", set())
    unreliable -= certified
    if "AIS" in estimates:
        out.values["ais_reliable"] = float("AIS" not in unreliable)
    if not estimates or ctx.prefix != "eval":
        return out
    reliable = [k for k in estimates if k not in unreliable]
    label = max(reliable or estimates, key=lambda k: estimates[k].value)
    best = estimates[label]
    out.figures["log_px_best"] = best
    out.values["log_px_best_reliable"] = float(bool(reliable))
    out.chosen["log_px_best"] = label
    exact = ctx.results.get("exact")
    reference = exact.state["log_px"] if exact is not None else best
    out.chosen["gap_reference"] = "exact" if exact is not None else "best"
    out.values["gaps_reliable"] = float(exact is not None or bool(reliable))
    if not out.values["gaps_reliable"]:
        out.flags.append(f"the gaps are measured from a flagged log p(x) ({label})")
    iw, qstar = ctx.results.get("iw"), ctx.results.get("qstar")
    if iw is None or qstar is None:
        return out
    elbo_q = iw.figures["elbo"]
    for suffix, (elbo_qstar, residual) in qstar.state["families"].items():
        for name, figure in gap_split(reference, elbo_qstar, elbo_q).items():
            out.figures[f"{name}{suffix}" if name != "inference_gap" else name] = figure
        stderr = out.figures[f"approximation_gap{suffix}"].stderr
        if warn_if_residual_matters(residual, stderr):
            out.flags.append(f"q*{suffix} stopped short of the family optimum: see qstar_residual")
    refined = ctx.results.get("refined")
    if refined is not None and "" in qstar.state["families"]:
        elbo_qstar, _ = qstar.state["families"][""]
        out.figures["amortization_gap_refined"] = elbo_qstar - refined.figures["elbo_refined"]
        out.figures["inference_gap_refined"] = reference - refined.figures["elbo_refined"]
    return out


def headline(metrics: dict[str, float], chosen: dict[str, Any], flags: Sequence[str]) -> str:
    """A few lines for the end of ``evaluate``: the best log p(x) and who gave it, the ELBO,
    the gaps, and any flag; the full figures are in the files."""

    def fig(name: str) -> str:
        value, stderr = metrics.get(f"eval/{name}"), metrics.get(f"eval/{name}_stderr")
        if value is None:
            return "-"
        return f"{value:.3f} ± {stderr:.2g}" if stderr is not None else f"{value:.3f}"

    lines = []
    if "eval/log_px_best" in metrics:
        flag = "" if metrics.get("eval/log_px_best_reliable", 1.0) else " (flagged)"
        lines.append(f"log p(x)  {fig('log_px_best')} nats, by {chosen['log_px_best']}{flag}")
    elif "eval/log_px" in metrics:
        lines.append(f"log p(x)  {fig('log_px')} nats, by IW")
    if "eval/bits_per_dim" in metrics:
        lines.append(f"bits/dim  {fig('bits_per_dim')}")
    if "eval/log_px_exact" in metrics:
        lines.append(f"exact     {metrics['eval/log_px_exact']:.3f} nats (pPCA closed form)")
    lines.append(f"ELBO      {fig('elbo')}")
    if "eval/approximation_gap" in metrics:
        lines.append(f"gaps      approximation {fig('approximation_gap')}, "
                     f"amortization {fig('amortization_gap')}")  # fmt: skip
    lines += [f"flag      {f}" for f in flags]
    return "\n".join(lines)


def flags_of(ctx: Context) -> list[str]:
    return [f for r in ctx.results.values() for f in r.flags]


def requested(cfg: DictConfig, key: str) -> list[str]:
    """The stage names of ``key`` (``eval.stages`` or ``eval.test_stages``); for evaluate's
    ``eval.stages``, with its older switches as aliases: ``eval.bdmc=true`` adds ``bdmc``, a
    non-empty ``eval.refit_prior`` adds ``refit``, each said in one line."""
    names = OmegaConf.select(cfg, key)
    names = [names] if isinstance(names, str) else list(names or [])
    if key != "eval.stages":
        return names
    aliases = {"bdmc": bool(cfg.eval.get("bdmc")), "refit": bool(cfg.eval.get("refit_prior"))}
    for name, on in aliases.items():
        if on and name not in names:
            switch = "eval.bdmc=true" if name == "bdmc" else "eval.refit_prior"
            log.info("%s adds the %s stage (%s=[...,%s])", switch, name, key, name)
            names.append(name)
    return names

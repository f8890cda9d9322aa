"""``ais``: log p(x) by annealed importance sampling (Neal 2001; Wu et al. 2017 on VAEs;
``vae_lab.estimators.ais``) from ``eval.ais_start``: ``best`` = whichever of the encoder's q
and the fitted q*s has the highest ELBO (q* wherever it was fitted: a start nearer the
posterior, a smaller bias), or ``encoder``.

``log_px_ais`` with its stderr (the chains' noise), ``log_px_ais_bias`` (its stated bias: the
width of the sandwich of its chains with reverse chains started from their end states,
``log_px_ais_upper`` its top; or where larger, the jackknife's estimate, or how far AIS lies
below an IW estimate, a lower bound too: the sandwich from chains that end far from the
posterior can be narrow), the acceptance rate and ESS/C. It is flagged (``ais_reliable`` 0)
where the stated bias is above ``eval.bdmc_max_width`` nats, unless BDMC certifies it; the bdmc
stage, where it runs, states the bias from its own sandwich instead (``ais_bias_from``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch.distributions import Distribution

from vae_lab.estimators.ais import ais_log_px, warn_if_biased
from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation.stage import Context, Stage, StageResult

log = logging.getLogger(__name__)


def start_of(ctx: Context) -> tuple[str, Distribution]:
    """The name ('' for the encoder's q, else q*'s suffix) and distribution of AIS's start."""
    elbo_q = ctx.results["iw"].figures["elbo"]
    candidates: dict[str, tuple[Figure, Any]] = {"": (elbo_q, None)}
    qstar = ctx.results.get("qstar")
    if qstar is not None and ctx.cfg.eval.ais_start == "best":
        for suffix, (family, fit) in qstar.state["fits"].items():
            elbo = qstar.figures[f"elbo_qstar{suffix}"]
            candidates[f"_qstar{suffix}"] = (elbo, (family, fit))
    name = max(candidates, key=lambda s: candidates[s][0].value)
    with torch.no_grad():
        if name == "":
            return name, ctx.model.q(ctx.x)
        family, fit = candidates[name][1]
        return name, family.distribution(fit.theta)


def shortfall_below(ctx: Context, log_px: Figure) -> float:
    """How far AIS lies below the highest of the log p(x) estimates so far (IW's), less two
    stderrs of the difference: each is a stochastic lower bound, so AIS is at least that far
    below log p(x) in expectation, whatever its own chains say."""
    gaps = [
        other.value - log_px.value - 2 * math.hypot(other.stderr, log_px.stderr)
        for result in ctx.results.values()
        for other in result.log_px.values()
    ]
    return max([0.0, *gaps])


class AIS(Stage):
    name = "ais"
    summary = "log p(x) by annealed importance sampling, with its bias estimate"
    keys = ("eval.ais_steps", "eval.ais_chains", "eval.ais_leapfrog_steps",
            "eval.ais_pilot_chains", "eval.ais_start", "eval.bdmc_max_width")  # fmt: skip
    needs = ("iw",)
    after = ("qstar",)

    def cost(self, ctx: Context) -> str:
        ev = ctx.cfg.eval
        return (f"{ev.ais_chains} chains x {ev.ais_steps} steps x {ev.ais_leapfrog_steps} "
                f"leapfrog steps for each of {len(ctx.x)} points, forward and back")  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        ev, model, x = ctx.cfg.eval, ctx.model, ctx.x
        start, q = start_of(ctx)
        with ctx.seeded("ais"):
            ais = ais_log_px(
                q, model.p_z(), model.log_likelihood(x), ev.ais_steps, ev.ais_chains,
                leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains,
                progress="AIS", reverse=True,
            )  # fmt: skip
        log_px = ais.log_px.figure()
        floor = max(float(ais.shortfall.mean()), shortfall_below(ctx, log_px))
        bias = ais.bias()
        bias = Figure(max(bias.value, floor), bias.stderr)
        result = StageResult(chosen={"ais_start": "encoder" if start == "" else start[1:],
                                     "ais_bias_from": "reverse"})  # fmt: skip
        result.state["start"] = start
        result.state["bias_floor"] = floor
        result.figures["log_px_ais"] = log_px
        result.figures["log_px_ais_bias"] = bias
        width = ais.width()
        result.figures["log_px_ais_upper"] = Figure(log_px.value + width.value, width.stderr)
        result.log_px["AIS"] = log_px
        result.values["ais_accept_rate"] = float(ais.accept_rate.mean())
        result.values["ais_ess_fraction"] = float(ais.ess_fraction.mean())
        bdmc_later = ctx.prefix == "eval" and (ev.get("bdmc") or "bdmc" in ev.stages)
        if warn_if_biased(log_px, bias, ev.bdmc_max_width, suggest_bdmc=not bdmc_later):
            result.unreliable.add("AIS")
            result.flags.append(
                f"AIS may lie below log p(x) by up to {bias.value:.3g} nats (log_px_ais_bias)"
            )
        return result


STAGE = AIS

"""``ais``: log p(x) by annealed importance sampling (Neal 2001; Wu et al. 2017 on VAEs;
``vae_lab.estimators.ais``) from ``eval.ais_start``: ``best`` = whichever of the encoder's q
and the fitted q*s has the highest ELBO (q* wherever it was fitted: a start nearer the
posterior, a smaller bias), or ``encoder``.

``log_px_ais`` with its stderr (the chains' noise), ``log_px_ais_bias`` (the jackknife
estimate of its shortfall), the acceptance rate and ESS/C. It is flagged (``ais_reliable`` 0)
where the shortfall exceeds its stderr, or where its start is far from the posterior at some
points (the start's IW k-hat > 0.7), unless BDMC certifies it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.distributions import Distribution

from vae_lab.estimators.ais import ais_log_px, warn_if_biased
from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation.stage import Context, Stage, StageResult

log = logging.getLogger(__name__)

#: AIS this far below the IW estimate is reported: its annealing is too short for this model
AIS_SHORTFALL_NATS = 1.0


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


class AIS(Stage):
    name = "ais"
    summary = "log p(x) by annealed importance sampling, with its bias estimate"
    keys = ("eval.ais_steps", "eval.ais_chains", "eval.ais_leapfrog_steps",
            "eval.ais_pilot_chains", "eval.ais_start")  # fmt: skip
    needs = ("iw",)
    after = ("qstar",)

    def cost(self, ctx: Context) -> str:
        ev = ctx.cfg.eval
        return (f"{ev.ais_chains} chains x {ev.ais_steps} steps x {ev.ais_leapfrog_steps} "
                f"leapfrog steps for each of {len(ctx.x)} points")  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        ev, model, x = ctx.cfg.eval, ctx.model, ctx.x
        start, q = start_of(ctx)
        with ctx.seeded("ais"):
            ais = ais_log_px(
                q, model.p_z(), model.log_likelihood(x), ev.ais_steps, ev.ais_chains,
                leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains,
                progress="AIS",
            )  # fmt: skip
        log_px = ais.log_px.figure()
        result = StageResult(chosen={"ais_start": "encoder" if start == "" else start[1:]})
        result.state["start"] = start
        result.figures["log_px_ais"] = log_px
        result.log_px["AIS"] = log_px
        result.values["ais_accept_rate"] = float(ais.accept_rate.mean())
        result.values["log_px_ais_bias"] = float(ais.shortfall.mean())
        result.values["ais_ess_fraction"] = float(ais.ess_fraction.mean())
        biased = warn_if_biased(
            log_px, result.values["log_px_ais_bias"], result.values["ais_ess_fraction"]
        )
        results = ctx.results["qstar"] if start else ctx.results["iw"]
        far = results.values[f"psis_khat_bad{start}"] > 0  # start far from the posterior
        if far and not biased:
            log.warning(
                "%s/log_px_ais: its start q is far from the posterior at %.0f%% of the points "
                "(IW's k-hat > 0.7), where AIS's bias can exceed its stderr unseen by the "
                "jackknife; certify it with the bdmc stage (ais_reliable = 0 until then)",
                ctx.prefix, 100 * results.values[f"psis_khat_bad{start}"],
            )  # fmt: skip
        if biased or far:
            result.unreliable.add("AIS")
            result.flags.append("AIS may lie below log p(x) by more than its stderr")
        result.state["biased"] = biased
        iw = ctx.results["iw"].figures["log_px"]
        if iw.value - log_px.value > AIS_SHORTFALL_NATS:
            log.warning(
                "AIS (%.2f) is %.1f nats below IW (%.2f): its annealing is too short for this "
                "model; raise eval.ais_steps",
                log_px.value, iw.value - log_px.value, iw.value,
            )  # fmt: skip
        return result


STAGE = AIS

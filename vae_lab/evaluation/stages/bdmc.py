"""``bdmc``: bidirectional Monte Carlo (Grosse et al. 2015; ``vae_lab.estimators.bdmc``):
forward and reverse AIS, with the ``eval.ais_*`` settings and the start AIS used (q* refitted
to the simulated points where AIS started from q*), on ``eval.bdmc_points`` points simulated
from the model. ``log_px_bdmc_lower`` and ``log_px_bdmc_upper`` sandwich their log p(x),
``bdmc_gap`` is the width; ``bdmc_certified`` is 1 when both are finite and the width, two
stderrs added, is no more than ``eval.bdmc_max_width`` nats (``vae_lab.estimators.bdmc``'s
``certified``), which then certifies AIS on the real points. AIS's stated bias
(``log_px_ais_bias``) becomes that width, or where larger the AIS stage's floor of it (the
jackknife, the shortfall below IW; ``ais_bias_from`` = bdmc). For a pPCA model, the
exact mean log p(x) of the simulated points too (``log_px_bdmc_exact``).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule
from vae_lab.components.ppca import ppca_of
from vae_lab.config.validation import POSITIVE_INT, require
from vae_lab.estimators.bdmc import bdmc, certified, simulate
from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation.stage import Context, Stage, StageResult
from vae_lab.evaluation.stages.qstar import fit, settings_of


class BDMC(Stage):
    name = "bdmc"
    summary = "a sandwich of log p(x) on simulated data that certifies AIS (or not)"
    keys = ("eval.bdmc_points", "eval.bdmc_max_width", "eval.ais_steps", "eval.ais_chains")
    needs = ("ais",)

    def check(self, cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
        require("eval.bdmc_points", cfg.eval.bdmc_points, POSITIVE_INT)

    def cost(self, ctx: Context) -> str:
        ev = ctx.cfg.eval
        return (f"forward and reverse AIS, {ev.ais_chains} chains x {ev.ais_steps} steps, on "
                f"{ev.bdmc_points} simulated points")  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        ev, model = ctx.cfg.eval, ctx.model
        ais = ctx.results["ais"]
        start = ais.state["start"]
        prior = model.p_z()
        with ctx.seeded("bdmc"):
            z, x = simulate(prior, lambda z: model.likelihood(model.decoder(z)), ev.bdmc_points)
            if start:
                family, _ = ctx.results["qstar"].state["fits"][start.removeprefix("_qstar")]
                found = fit(model, family, x, settings_of(ctx.cfg), ev.qstar_init,
                            ctx.num_samples, ctx.chunk_size)  # fmt: skip
                q = family.distribution(found.theta)
            else:
                with torch.no_grad():
                    q = model.q(x)
            estimate = bdmc(
                q, prior, model.log_likelihood(x), z, ev.ais_steps, ev.ais_chains,
                leapfrog_steps=ev.ais_leapfrog_steps, pilot_chains=ev.ais_pilot_chains,
                progress="BDMC",
            )  # fmt: skip
        lower, upper = estimate.lower.figure(), estimate.upper.figure()
        width = Figure(upper.value - lower.value, upper.stderr)
        result = StageResult(
            figures={"log_px_bdmc_lower": lower, "log_px_bdmc_upper": upper, "bdmc_gap": width},
            values={
                "bdmc_points": ev.bdmc_points,
                "bdmc_ais_steps": ev.ais_steps,
                "bdmc_ais_chains": ev.ais_chains,
                "bdmc_accept_rate": float(estimate.accept_rate.mean()),
            },
        )
        certain = certified(lower, upper, ev.bdmc_max_width, ev.ais_steps)
        result.values["bdmc_certified"] = float(certain)
        floor = ais.state["bias_floor"]
        result.figures["log_px_ais_bias"] = Figure(max(width.value, floor), width.stderr)
        result.chosen["ais_bias_from"] = "bdmc"
        if certain:
            result.state["certified_labels"] = {"AIS"}
        else:
            result.flags.append(
                f"BDMC does not certify AIS: its sandwich is {width.value:.3g} nats wide, above "
                f"eval.bdmc_max_width = {ev.bdmc_max_width:g}"
            )
            result.unreliable.add("AIS")
        ppca = ppca_of(model)
        if ppca is not None:
            result.values["log_px_bdmc_exact"] = float(ppca.marginal().log_prob(x.double()).mean())
        return result


STAGE = BDMC

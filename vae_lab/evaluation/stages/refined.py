"""``refined``: for a semi-amortized run (``objective=savae``), the IW figures of the q refined
per datapoint as in training (Kim et al. 2018): ``log_px_refined``, ``elbo_refined`` and their
ESS and k-hat; the pipeline's conclusion adds ``amortization_gap_refined`` = ELBO(q*) -
ELBO(refined q) where q* was fitted."""

from __future__ import annotations

import torch

from vae_lab.evaluation.stage import Context, Stage, StageResult
from vae_lab.evaluation.stages.iw import iw_result


class Refined(Stage):
    name = "refined"
    summary = "IW log p(x) and ELBO of the semi-amortized run's refined q"
    keys = ("eval.num_samples",)

    def applies(self, ctx: Context) -> bool:
        return ctx.model.objective.refines

    def cost(self, ctx: Context) -> str:
        steps = ctx.model.objective.refine_steps
        return f"{steps} refinement steps, then K = {ctx.num_samples} samples, {len(ctx.x)} points"

    def run(self, ctx: Context) -> StageResult:
        model, x, k, chunk = ctx.model, ctx.x, ctx.num_samples, ctx.chunk_size
        with ctx.seeded("refine"):
            theta = torch.cat([model.objective.refined_theta(model, x[s]) for s in ctx.batches()])
        return iw_result(
            ctx,
            lambda rows: model.iw_estimate(x[rows], k, chunk, theta=theta[rows]),
            "_refined",
            "IW from the refined q",
        )


STAGE = Refined

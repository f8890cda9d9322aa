"""``exact``: log p(x) in closed form where the model is probabilistic PCA (an affine decoder,
a Gaussian likelihood, the N(0, I) prior: ``vae_lab.components.ppca``), in float64. The gap
split is then measured from it instead of from an estimate."""

from __future__ import annotations

from vae_lab.components.ppca import ppca_of
from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation.stage import Context, Stage, StageResult


class Exact(Stage):
    name = "exact"
    summary = "the exact log p(x) of a pPCA model (model=linear, likelihood=gaussian)"

    def applies(self, ctx: Context) -> bool:
        return ppca_of(ctx.model) is not None

    def run(self, ctx: Context) -> StageResult:
        exact = float(ppca_of(ctx.model).marginal().log_prob(ctx.x.double()).mean())
        result = StageResult(values={"log_px_exact": exact})
        result.state["log_px"] = Figure(exact, 0.0)
        return result


STAGE = Exact

"""``iw``: log p(x) by importance sampling with the encoder's q (Burda et al. 2016).

With K = ``num_samples`` weights w_k = p(x, z_k) / q(z_k|x) per datapoint, in chunks so that
memory stays bounded, and from the same weights (one set of draws, so their difference is the
gap of those draws):

    log_px = log (1/K) sum_k w_k          elbo = (1/K) sum_k log w_k
    inference_gap = log_px - elbo          recon = elbo + kl
    kl = KL(q || p(z)) (analytic where torch knows the pair, else from K draws of q)

each with its stderr, the mean ESS and ESS/K, the PSIS k-hat (its mean, and the fraction of
points above 0.7, whose estimate is unreliable) and the active units (Burda et al.'s
Cov_x(E_q[z_u]) > 0.01). Each batch draws from its own seeded stream, so the figures of a
checkpoint do not depend on the batch order or on the stages before.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from vae_lab.estimators.elbo import IWEstimate, kl_estimate
from vae_lab.estimators.estimate import Figure
from vae_lab.estimators.metrics import ActiveUnits, IWLogLikelihood, MeanEstimate
from vae_lab.estimators.psis import warn_if_unreliable
from vae_lab.evaluation.stage import Context, Stage, StageResult

#: batch rows -> the IW estimate of those rows
EstimateOf = Callable[[slice], IWEstimate]


def iw_result(ctx: Context, estimate_of: EstimateOf, suffix: str, label: str) -> StageResult:
    """IW figures of ``estimate_of`` over ctx's batches, named ``<name><suffix>``, with a
    labelled progress bar; its log p(x) is the estimate ``label``."""
    summary = IWLogLikelihood().to(ctx.x.device)
    batches = ctx.batches()
    with torch.inference_mode():
        for i, rows in enumerate(tqdm(batches, desc=label, unit="batch", leave=False)):
            with ctx.seeded(f"iw{suffix}", i):
                summary.update(estimate_of(rows))
    values = {name: float(v) for name, v in summary.compute().items()}
    result = StageResult()
    for name in ("log_px", "elbo"):
        result.figures[f"{name}{suffix}"] = Figure.of_named(values, name)
    for name in ("ess", "ess_fraction", "psis_khat", "psis_khat_bad"):
        result.values[f"{name}{suffix}"] = values[name]
    result.log_px[label] = result.figures[f"log_px{suffix}"]
    k_key = "eval.num_samples" if ctx.prefix == "test" else "eval.evaluate_num_samples"
    if warn_if_unreliable(ctx.prefix, values["psis_khat_bad"], k_key, suffix):
        result.unreliable.add(label)
    return result


class IW(Stage):
    name = "iw"
    summary = "IW log p(x) of the encoder's q, the ELBO, KL, ESS, PSIS k-hat, active units"
    keys = ("eval.num_samples", "eval.chunk_size")

    def cost(self, ctx: Context) -> str:
        return f"K = {ctx.num_samples} importance samples for each of {len(ctx.x)} points"

    def run(self, ctx: Context) -> StageResult:
        model, x, k, chunk = ctx.model, ctx.x, ctx.num_samples, ctx.chunk_size
        kl, units = MeanEstimate().to(x.device), ActiveUnits(model.posterior.latent_dim)
        units = units.to(x.device)

        def estimate_of(rows: slice) -> IWEstimate:
            with torch.autocast(x.device.type, enabled=False):
                theta = model.posterior(model.encoder(x[rows].float()))
                q = model.posterior.distribution(theta)
                kl.update(kl_estimate(q, model.p_z(), k, chunk))
                estimate = model.iw_estimate(x[rows].float(), k, chunk, theta=theta)
            units.update(estimate.z_mean)
            return estimate

        result = iw_result(ctx, estimate_of, "", "IW")
        elbo, kl_figure = result.figures["elbo"], kl.compute()
        result.figures["kl"] = kl_figure
        recon = Figure(elbo.value + kl_figure.value, math.hypot(elbo.stderr, kl_figure.stderr))
        result.figures["recon"] = recon
        result.figures["inference_gap"] = result.figures["log_px"] - elbo
        result.values["active_units"] = float(units.compute())
        if len(model.latent_layers) > 1:  # model=hierarchical: which layer's units are active
            layers = units.active().split(list(model.latent_layers))
            for number, active in enumerate(layers, start=1):
                result.values[f"active_units_z{number}"] = float(active.sum())
        return result


STAGE = IW

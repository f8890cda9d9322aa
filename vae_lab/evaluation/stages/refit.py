"""``refit``: the priors of ``eval.refit_prior`` (mixture, flow, diffusion) refitted to the
aggregate posterior's codes with the decoder frozen (``vae_lab.evaluation.refit``; Dai & Wipf
2019, Ghosh et al. 2020), each scored as the sample-quality stage scores the run's own:

    {fid,kid,precision,recall}_samples_refit_<name>, log_codes_refit_<name>

and for the exact densities (mixture, flow) ``log_px_refit_<name>``, the IW log p(x) of the
model with the refitted prior in place of the trained one: a valid likelihood of a different
model (same decoder, new prior). A grid of its samples goes to
``prior_samples_refit_<name>.png`` in the run folder.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule
from vae_lab.components.images import image_batch, save_image_grid
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.elbo import iw_log_px
from vae_lab.estimators.estimate import Estimate
from vae_lab.evaluation.refit import REFIT_OPTIONS, refit_prior
from vae_lab.evaluation.sample_quality.quality import score
from vae_lab.evaluation.stage import Context, Stage, StageResult

log = logging.getLogger(__name__)

GRID_IMAGES = 64
REFIT_LOG_PX_NOTE = (
    "log_px_refit_<name>: IW log p(x) of the model with the refitted prior in place of the "
    "trained one (same decoder): a valid likelihood of a different model"
)
DIFFUSION_NOTE = "diffusion: sample metrics only; its density has no closed form"


def refit_names(cfg: DictConfig) -> list[str]:
    names = cfg.eval.get("refit_prior") or []
    names = [names] if isinstance(names, str) else list(names)
    if bad := [n for n in names if n not in REFIT_OPTIONS]:
        raise ConfigError(
            f"eval.refit_prior={bad[0]} is invalid: must be among {list(REFIT_OPTIONS)}"
        )
    return names


class Refit(Stage):
    name = "refit"
    summary = "priors refitted to the aggregate posterior (eval.refit_prior), scored alike"
    keys = ("eval.refit_prior", "refit")
    needs = ("sample_quality",)

    def check(self, cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
        if not refit_names(cfg):
            raise ConfigError("the refit stage refits the priors of eval.refit_prior: name them, "
                              f"e.g. eval.refit_prior=[{','.join(REFIT_OPTIONS)}]")  # fmt: skip

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.results.get("sample_quality", None) and
                    ctx.results["sample_quality"].state)  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        names, model, k = refit_names(ctx.cfg), ctx.model, ctx.num_samples
        shared = ctx.results["sample_quality"].state
        quality = shared["quality"]
        notes = [REFIT_LOG_PX_NOTE] + ([DIFFUSION_NOTE] if "diffusion" in names else [])
        settings = {**ctx.results["sample_quality"].chosen["sample_quality"],
                    "refit_prior": names, "notes": notes}  # fmt: skip
        result = StageResult(chosen={"sample_quality": settings})
        for name in names:
            with ctx.seeded(f"refit_{name}"):
                refitted = refit_prior(name, shared["codes"], instantiate(ctx.cfg.refit),
                                       ctx.datamodule.data_dim)  # fmt: skip
                values = score(quality, shared["metrics"], model, shared["inputs"],
                               shared["references"], ctx.batch_size, quality.seed,
                               refitted.sample)  # fmt: skip
                for key in ("fid_samples", "kid_samples", "precision_samples", "recall_samples"):
                    result.values[f"{key}_refit_{name}"] = values[key]
                if refitted.density is not None:
                    with torch.inference_mode():
                        log_codes = refitted.density.log_prob(shared["held_out"]).mean()
                        parts = [
                            iw_log_px(model.q(b), refitted.density, model.log_likelihood(b), k,
                                      ctx.chunk_size).log_px
                            for b in ctx.x.split(ctx.batch_size)
                        ]  # fmt: skip
                    result.values[f"log_codes_refit_{name}"] = float(log_codes)
                    result.figures[f"log_px_refit_{name}"] = Estimate.cat(parts).figure()
                if ctx.run_dir is not None:
                    with torch.no_grad():
                        grid = quality.render(model, refitted.sample(GRID_IMAGES))
                    path = ctx.run_dir / f"prior_samples_refit_{name}.png"
                    save_image_grid(image_batch(grid, ctx.datamodule.image_shape), path)
        return result


STAGE = Refit

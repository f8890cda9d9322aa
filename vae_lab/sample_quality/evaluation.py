"""The sample-quality stage of ``python -m vae_lab.evaluate``: the run's own prior, then each
prior of ``eval.refit_prior`` refitted to the aggregate posterior (``vae_lab.refit``).

On the first ``sample_quality.max_images`` test images (seeded draws, the same for every run):

    eval/fid_recon, eval/fid_samples, eval/kid_samples, eval/precision_samples,
    eval/recall_samples, eval/classifier_accuracy, eval/sample_quality_images

and for each refitted prior <name>: ``eval/{fid,kid,precision,recall}_samples_refit_<name>``
(the reconstructions do not change: encoder and decoder are frozen), the mean log-density of
held-out codes (validation split) under it, ``eval/log_codes_refit_<name>``, beside the trained
prior's ``eval/log_codes``; for the exact densities (mixture, flow) the IW log p(x) of the model
with the refitted prior on the evaluated points, ``eval/log_px_refit_<name>`` (+ ``_stderr``),
the likelihood of a different model. A grid of its samples goes to
``prior_samples_refit_<name>.png`` in the run folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from vae_lab.data import InMemoryDataModule, binarize
from vae_lab.elbo import iw_log_px
from vae_lab.estimate import Estimate
from vae_lab.images import save_image_grid
from vae_lab.module import VAE
from vae_lab.refit import REFIT_OPTIONS, RefittedPrior, aggregate_posterior_codes, refit_prior
from vae_lab.sample_quality.quality import RENDERINGS, SampleQuality, score
from vae_lab.validation import ConfigError

log = logging.getLogger(__name__)

GRID_IMAGES = 64
REFIT_LOG_PX_NOTE = (
    "log_px_refit_<name>: IW log p(x) of the model with the refitted prior in place of the "
    "trained one (same decoder): a valid likelihood of a different model"
)
DIFFUSION_NOTE = "diffusion: sample metrics only; its density has no closed form"


def refit_names(ev: DictConfig) -> list[str]:
    names = ev.get("refit_prior") or []
    names = [names] if isinstance(names, str) else list(names)
    if bad := [n for n in names if n not in REFIT_OPTIONS]:
        raise ConfigError(
            f"eval.refit_prior={bad[0]} is invalid: must be among {list(REFIT_OPTIONS)}"
        )
    return names


def check_settings(cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
    """Fail before the slow stages: an unknown eval.refit_prior, or a classifier that is not
    cached and cannot be (an unwritable cache folder)."""
    refit_names(cfg.eval)
    instantiate(cfg.sample_quality).check_cache(datamodule)


def refit_log_px(
    model: VAE, refitted: RefittedPrior, x: Tensor, ev: DictConfig, batch_size: int
) -> Estimate:
    with torch.inference_mode():
        parts = []
        for batch in x.split(batch_size):
            estimate = iw_log_px(
                model.q(batch), refitted.density, model.log_likelihood(batch), ev.num_samples,
                ev.chunk_size,
            )  # fmt: skip
            parts.append(estimate.log_px)
    return Estimate.cat(parts)


def sample_quality_stage(
    cfg: DictConfig, model: VAE, datamodule: InMemoryDataModule, x: Tensor, run_dir: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """The eval/* sample metrics (x: the evaluated points, for the refitted log p(x)), and
    what they were computed with (for eval.json)."""
    names = refit_names(cfg.eval)
    quality: SampleQuality = instantiate(cfg.sample_quality)
    found = quality.classifier_for(datamodule)
    if found is None:
        return {}, {}
    classifier, record = found
    train, val, _ = datamodule.splits
    metrics_of = quality.metrics(classifier).to(train.device)
    inputs, references, described = quality.test_images(datamodule)
    batch = cfg.data.eval_batch_size
    start = time.perf_counter()
    values = score(quality, metrics_of, model, inputs, references, batch, quality.seed)
    metrics = {f"eval/{name}": value for name, value in values.items()}
    metrics["eval/classifier_accuracy"] = record["accuracy"]
    torch.manual_seed(quality.seed)
    if datamodule.binarize:
        train = binarize(train)  # the training images as the model saw them
    codes = aggregate_posterior_codes(model, train, cfg.refit.codes_per_point)
    held_out = aggregate_posterior_codes(model, val)
    with torch.no_grad():
        metrics["eval/log_codes"] = float(model.p_z().log_prob(held_out).mean())
    metrics["eval/time_sample_quality_s"] = time.perf_counter() - start
    for name in names:
        start = time.perf_counter()
        torch.manual_seed(quality.seed)
        refitted = refit_prior(name, codes, instantiate(cfg.refit), datamodule.data_dim)
        values = score(
            quality, metrics_of, model, inputs, references, batch, quality.seed, refitted.sample
        )
        for key in ("fid_samples", "kid_samples", "precision_samples", "recall_samples"):
            metrics[f"eval/{key}_refit_{name}"] = values[key]
        if refitted.density is not None:
            with torch.no_grad():
                log_codes = refitted.density.log_prob(held_out).mean()
            metrics[f"eval/log_codes_refit_{name}"] = float(log_codes)
            figure = refit_log_px(model, refitted, x, cfg.eval, batch).figure()
            metrics.update(figure.named(f"eval/log_px_refit_{name}"))
        width = datamodule.image_shape[-1]
        with torch.no_grad():
            grid = quality.render(model, refitted.sample(GRID_IMAGES))
        save_image_grid(
            grid.reshape(GRID_IMAGES, -1, width).cpu(), run_dir / f"prior_samples_refit_{name}.png"
        )
        metrics[f"eval/time_refit_{name}_s"] = time.perf_counter() - start
        log.info("refit %s: %s", name, {k: v for k, v in metrics.items() if k.endswith(name)})
    settings = {
        "classifier": record["dataset"],
        "classifier_file": record["file"],
        "classifier_accuracy": record["accuracy"],
        "classifier_accuracy_binarized": record["accuracy_binarized"],
        "rendering": RENDERINGS[quality.rendering],
        "compared_with": described,
        "num_images": int(metrics["eval/sample_quality_images"]),
        "refit_prior": names,
    }
    if names:
        settings["notes"] = [REFIT_LOG_PX_NOTE] + ([DIFFUSION_NOTE] if "diffusion" in names else [])
    return metrics, {"sample_quality": settings}

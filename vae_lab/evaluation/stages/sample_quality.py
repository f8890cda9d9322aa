"""``sample_quality``: how blurry the model's images are, and how much of it is the prior's
(``vae_lab.evaluation.sample_quality``). On the first ``sample_quality.max_images`` test
images (seeded draws, the same for every run), in the features of a classifier trained once
per dataset:

    fid_recon, fid_samples, kid_samples, precision_samples, recall_samples,
    classifier_accuracy, sample_quality_images

and ``log_codes``, the mean log-density under the prior of held-out codes z ~ q(z|x) of the
validation split. A dataset whose class labels are not read, so that no classifier is
trained on it (linear_gaussian, data=images), is skipped with one line.
"""

from __future__ import annotations

import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vae_lab.components.data import InMemoryDataModule, binarize
from vae_lab.evaluation.refit import aggregate_posterior_codes
from vae_lab.evaluation.sample_quality.quality import RENDERINGS, SampleQuality, score
from vae_lab.evaluation.stage import Context, Stage, StageResult


class SampleQualityStage(Stage):
    name = "sample_quality"
    summary = "FID, KID, precision and recall of reconstructions and prior samples"
    keys = ("sample_quality",)

    def check(self, cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
        """An uncached classifier whose cache folder is not writable fails now."""
        instantiate(cfg.sample_quality).check_cache(datamodule)

    def cost(self, ctx: Context) -> str:
        images = min(ctx.cfg.sample_quality.max_images or math.inf, len(ctx.datamodule.splits[2]))
        return (f"{images} test images, their reconstructions and prior samples, "
                "in the features of the dataset's classifier (trained once, cached)")  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        quality: SampleQuality = instantiate(ctx.cfg.sample_quality)
        found = quality.classifier_for(ctx.datamodule)
        if found is None:
            return StageResult()
        classifier, record = found
        model, datamodule = ctx.model, ctx.datamodule
        train, val, _ = datamodule.splits
        metrics_of = quality.metrics(classifier).to(ctx.x.device)
        inputs, references, described = quality.test_images(datamodule)
        values = score(quality, metrics_of, model, inputs, references, ctx.batch_size,
                       quality.seed)  # fmt: skip
        values["classifier_accuracy"] = record["accuracy"]
        with ctx.seeded("codes"):
            if datamodule.binarize:
                train = binarize(train)  # the training images as the model saw them
            codes = aggregate_posterior_codes(model, train, ctx.cfg.refit.codes_per_point)
            held_out = aggregate_posterior_codes(model, val)
        with torch.no_grad():
            values["log_codes"] = float(model.p_z().log_prob(held_out).mean())
        settings = {
            "classifier": record["dataset"],
            "classifier_file": record["file"],
            "classifier_accuracy": record["accuracy"],
            "classifier_accuracy_binarized": record["accuracy_binarized"],
            "rendering": RENDERINGS[quality.rendering],
            "compared_with": described,
            "num_images": int(values["sample_quality_images"]),
        }
        result = StageResult(values=values, chosen={"sample_quality": settings})
        result.state = {"quality": quality, "metrics": metrics_of, "inputs": inputs,
                        "references": references, "codes": codes, "held_out": held_out}  # fmt: skip
        return result


STAGE = SampleQualityStage

"""What the sample metrics compare: test images x, reconstructions x ~ p(x|z), z ~ q(z|x), and
samples x ~ p(x|z), z ~ p(z), as many of each, rendered the same way.

FID(samples) - FID(reconstructions) is the prior's share of the blur: the decoder is the same
in both, only where z comes from differs (the aggregate posterior's codes, or the prior's
draws, which can land where the decoder has seen no code). It is the sample-quality analogue
of the split of the inference gap.

Rendering (``rendering``), matched on both sides: ``mean`` scores the decoder means E[x|z]
(grey images, what a VAE's sample grid shows) against the grey test images, of which the
binarised ones the model sees are draws (binarized MNIST has no grey originals: there the
means meet binary images, and the output says so); ``sample`` scores draws x ~ p(x|z) (binary
under a Bernoulli likelihood) against the test images as the model sees them. Gaussian draws
are clipped to [0, 1]. Reconstructions always encode the test images as the model sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vae_lab.components.data import InMemoryDataModule
from vae_lab.components.data.batches import forked_rng
from vae_lab.evaluation.sample_quality.classifier import (
    ClassifierSpec,
    FeatureClassifier,
    cached_classifier,
    check_cache,
    classifier_source,
)
from vae_lab.evaluation.sample_quality.metrics import SampleQualityMetrics
from vae_lab.model.module import VAE

log = logging.getLogger(__name__)

RENDERINGS = {"mean": "decoder means E[x|z]", "sample": "draws x ~ p(x|z)"}

#: n -> z [n, D], drawn from some prior
LatentSampler = Callable[[int], Tensor]


class SampleQuality:
    """The settings of the sample metrics (``sample_quality`` in conf/config.yaml) and the
    pieces built from them."""

    def __init__(
        self,
        rendering: str = "mean",
        max_images: int | None = 10000,
        nearest_k: int = 3,
        kid_subsets: int = 10,
        kid_subset_size: int = 1000,
        seed: int = 0,
        classifier: ClassifierSpec | dict[str, Any] | None = None,
    ) -> None:
        if rendering not in RENDERINGS:
            raise ValueError(
                f"sample_quality.rendering={rendering} is invalid: must be one of "
                f"{sorted(RENDERINGS)}"
            )
        self.rendering = rendering
        self.max_images = max_images
        self.nearest_k = nearest_k
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        if not isinstance(classifier, ClassifierSpec):
            classifier = ClassifierSpec(**(classifier or {}))
        self.classifier = classifier

    def classifier_for(
        self, datamodule: InMemoryDataModule
    ) -> tuple[FeatureClassifier, dict[str, Any]] | None:
        """The cached classifier scoring this dataset, and its record; None for a dataset whose
        class labels are not read (linear_gaussian, data=images)."""
        source = classifier_source(datamodule)
        if source is None:
            log.info("sample quality: skipped, no class labels of %s are read to train the "
                     "feature classifier on", type(datamodule).__name__)  # fmt: skip
            return None
        classifier, record = cached_classifier(source, self.classifier)
        log.info(
            "sample quality: %s images (%s) in the features of the %s classifier (test accuracy "
            "%.4f, %.4f binarised; %s)",
            type(datamodule).__name__, RENDERINGS[self.rendering], record["dataset"],
            record["accuracy"], record["accuracy_binarized"], record["file"],
        )  # fmt: skip
        return classifier, record

    def check_cache(self, datamodule: InMemoryDataModule) -> None:
        """A one-line error now, before any training, when the classifier this dataset needs is
        not cached and its cache folder is not writable."""
        if (source := classifier_source(datamodule)) is not None:
            check_cache(source, self.classifier)

    def metrics(self, classifier: FeatureClassifier) -> SampleQualityMetrics:
        return SampleQualityMetrics(
            classifier, self.nearest_k, self.kid_subsets, self.kid_subset_size
        )

    def render(self, model: VAE, z: Tensor) -> Tensor:
        """Images [N, X] in [0, 1] decoded from z [N, D]."""
        decoded = model.decoder(z)
        if self.rendering == "mean":
            return model.likelihood.mean(decoded)
        return model.likelihood(decoded).sample().clamp(0.0, 1.0)

    def test_images(self, datamodule: InMemoryDataModule) -> tuple[Tensor, Tensor, str]:
        """(inputs, references, description): the first ``max_images`` test images as the
        encoder sees them, and the aligned images the metrics compare with."""
        inputs = datamodule.splits[2][: self.max_images]
        if self.rendering == "mean" and datamodule.binarize:
            grey = datamodule.load_splits()[2][: self.max_images]
            return inputs, grey.float().to(inputs.device), "grey test images"
        if self.rendering == "mean" and datamodule.already_binary:
            return inputs, inputs, "binary test images (the dataset has no grey originals)"
        return inputs, inputs, "test images as the model sees them"

    @torch.no_grad()
    def images(
        self, model: VAE, x: Tensor, sample_z: LatentSampler | None = None
    ) -> tuple[Tensor, Tensor]:
        """(reconstructions, samples) of the batch x: one each per image, z from q(z|x) and from
        the model's prior (or ``sample_z``)."""
        recon = self.render(model, model.q(x).sample())
        z = sample_z(len(x)) if sample_z is not None else model.p_z().sample((len(x),))
        return recon, self.render(model, z)


def score(
    quality: SampleQuality,
    metrics: SampleQualityMetrics,
    model: VAE,
    inputs: Tensor,
    references: Tensor,
    batch_size: int,
    seed: int,
    sample_z: LatentSampler | None = None,
) -> dict[str, float]:
    """Sample metrics of the model (its prior, or ``sample_z``) against ``references``, the
    reconstructions encoding ``inputs``; draws seeded with ``seed`` (a forked random stream)."""
    metrics.reset()
    with forked_rng(inputs.device), torch.autocast(inputs.device.type, enabled=False):
        torch.manual_seed(seed)
        pairs = zip(inputs.split(batch_size), references.split(batch_size), strict=True)
        total = -(-len(inputs) // batch_size)
        for x, real in tqdm(pairs, "sample quality", total, leave=False, unit="batch"):
            recon, samples = quality.images(model, x.float(), sample_z)
            metrics.update(real, recon, samples)
    return metrics.compute(quality.seed)

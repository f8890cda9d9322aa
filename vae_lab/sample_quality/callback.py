"""The sample metrics at the end of a run's test: test/fid_recon, test/fid_samples,
test/kid_samples, test/precision_samples, test/recall_samples, with test/classifier_accuracy
and test/sample_quality_images (images per figure)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from vae_lab.data.batches import stream_seed
from vae_lab.module import VAE
from vae_lab.sample_quality.quality import SampleQuality, score

log = logging.getLogger(__name__)


class SampleQualityCallback(pl.Callback):
    """Scores the test images' reconstructions and as many prior samples once the test ends.
    Each rank takes every world_size-th image; the metrics aggregate across ranks. Datasets
    without images (linear_gaussian) are skipped."""

    def __init__(self, quality: SampleQuality | None = None) -> None:
        self.quality = quality or SampleQuality()

    def setup(self, trainer: pl.Trainer, pl_module: VAE, stage: str) -> None:
        """An uncached classifier with an unwritable cache fails the run before it trains."""
        self.quality.check_cache(trainer.datamodule)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: VAE) -> None:
        found = self.quality.classifier_for(trainer.datamodule)
        if found is None:
            return
        classifier, record = found
        metrics = self.quality.metrics(classifier).to(pl_module.device)
        inputs, references, described = self.quality.test_images(trainer.datamodule)
        log.info("sample quality against the %s", described)
        rank = trainer.global_rank
        rows = slice(rank, None, trainer.world_size)
        seed = stream_seed(pl_module.test_seed, "sample_quality", rank)
        values = score(
            self.quality, metrics, pl_module, inputs[rows], references[rows],
            trainer.datamodule.eval_batch_size, seed,
        )  # fmt: skip
        values["classifier_accuracy"] = record["accuracy"]
        for name, value in values.items():
            pl_module.log(f"test/{name}", value)

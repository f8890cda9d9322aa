"""The sample metrics at the end of a run's test: test/fid_recon, test/fid_samples,
test/kid_samples, test/precision_samples, test/recall_samples, with test/classifier_accuracy
and test/sample_quality_images (images per figure)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from vae_lab.module import VAE
from vae_lab.sample_quality.quality import SampleQuality

#: the sample metrics draw from their own stream: seed + this offset + global batch
SEED_OFFSET = 7919


class SampleQualityCallback(pl.Callback):
    """Scores every test batch's reconstructions and prior samples against it (all ranks; the
    metrics aggregate across them). Datasets without images (linear_gaussian) are skipped."""

    def __init__(self, quality: SampleQuality | None = None) -> None:
        self.quality = quality or SampleQuality()
        self.metrics = None
        self.record: dict = {}

    def on_test_start(self, trainer: pl.Trainer, pl_module: VAE) -> None:
        found = self.quality.classifier_for(trainer.datamodule)
        self.metrics = None
        if found is not None:
            classifier, self.record = found
            self.metrics = self.quality.metrics(classifier).to(pl_module.device)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: VAE, outputs, batch: Tensor, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self.metrics is None:
            return
        global_batch = batch_idx * trainer.world_size + trainer.global_rank
        device = pl_module.device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(pl_module.test_seed + SEED_OFFSET + global_batch)
            with torch.autocast(device.type, enabled=False):
                recon, samples = self.quality.images(pl_module, batch.float())
        self.metrics.update(batch.float(), recon, samples)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: VAE) -> None:
        if self.metrics is None:
            return
        values = self.metrics.compute(self.quality.seed)
        values["classifier_accuracy"] = self.record["accuracy"]
        for name, value in values.items():
            pl_module.log(f"test/{name}", value, sync_dist=False)
        self.metrics.reset()

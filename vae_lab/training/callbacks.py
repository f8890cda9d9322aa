"""Lightning callbacks of vae_lab, registered in ``conf/config.yaml`` under ``callbacks``."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from vae_lab.components.data.batches import forked_rng
from vae_lab.components.images import image_batch, save_image_grid
from vae_lab.model.module import VAE

PRIOR_SAMPLES_FILE = "prior_samples.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
GRID_COLUMNS = 8
RECONSTRUCTION_ROWS = ("input", "recon")


class PriorDataInit(pl.Callback):
    """Hands the training set to the prior before training (``Prior.init_from_data``).

    It runs in ``setup``, after the datamodule has loaded its splits and before Lightning
    restores a checkpoint or wraps the model for DDP, so a resumed run keeps its learned prior
    and every rank starts from the same one.
    """

    def setup(self, trainer: pl.Trainer, pl_module: VAE, stage: str) -> None:
        if stage == "fit":
            pl_module.prior.init_from_data(trainer.datamodule.splits[0])


class ImageGrids(pl.Callback):
    """At the end of training (and after every validation when logging to W&B), writes two image
    grids into the run folder (rank 0 only):

    * ``prior_samples.png``: ``num_samples`` draws z ~ p(z) decoded to E[x|z], where blurry
      versus sharp samples show what the prior has learned;
    * ``reconstructions.png``: up to ``num_reconstructions`` test images, rows of inputs
      (labelled "input"), each above the row of their reconstructions E[x|z], z ~ q(z|x)
      (labelled "recon");

    and logs both with ``log_image`` to every W&B logger of the trainer, so a dashboard shows
    them as training goes. The draws come from a forked random stream: the images never change
    the training's random numbers (a resumed run still equals an uninterrupted one).
    """

    def __init__(self, num_samples: int = 64, num_reconstructions: int = 32) -> None:
        self.num_samples = num_samples
        self.num_reconstructions = num_reconstructions

    @torch.no_grad()
    def grids(self, trainer: pl.Trainer, model: VAE) -> dict[str, tuple[Tensor, int]]:
        """File name -> images [N, X] (flattened), in [0, 1], and the grid's columns."""

        def decode(z: Tensor) -> Tensor:
            return model.likelihood.mean(model.decoder(z))

        x = next(iter(trainer.datamodule.test_dataloader()))[: self.num_reconstructions]
        columns = min(GRID_COLUMNS, len(x))
        x = x[: len(x) - len(x) % columns].to(model.device)  # whole rows
        rows = torch.stack([x, decode(model.q(x).sample())]).unflatten(1, (-1, columns))
        pairs = rows.transpose(0, 1).flatten(0, 2)  # a row of inputs above their reconstructions
        return {
            PRIOR_SAMPLES_FILE: (decode(model.p_z().sample((self.num_samples,))), GRID_COLUMNS),
            RECONSTRUCTIONS_FILE: (pairs, columns),
        }

    def on_validation_end(self, trainer: pl.Trainer, pl_module: VAE) -> None:
        """During training only for a W&B dashboard: the files alone are written at the end."""
        wandb = any(isinstance(logger, WandbLogger) for logger in trainer.loggers)
        if wandb and not trainer.sanity_checking:
            self.on_train_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: VAE) -> None:
        if not trainer.is_global_zero:
            return
        device = pl_module.device
        with forked_rng(device):
            grids = self.grids(trainer, pl_module)
        for name, (images, columns) in grids.items():
            path = Path(trainer.default_root_dir) / name
            labels = RECONSTRUCTION_ROWS if name == RECONSTRUCTIONS_FILE else ()
            save_image_grid(image_batch(images, trainer.datamodule.image_shape), path,
                            columns, labels)  # fmt: skip
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=path.stem, images=[str(path)])

"""Learning-rate schedules as Lightning callbacks, added through the ``callbacks:`` mapping."""

from __future__ import annotations

import pytorch_lightning as pl


class IWAESchedule(pl.Callback):
    """The learning-rate schedule of Burda et al. (2016, section 5), kept by Cremer et al. (2018).

    Training runs in stages i = 0, 1, 2, ...; stage i lasts ``growth``^i epochs at learning rate
    lr0 * ``decay``^i, lr0 being the optimizer's initial learning rate. With the defaults
    (growth 3, decay 10^(-1/7)) the stages i = 0..7 take 3,280 epochs and end at lr0 / 10.
    Stages past the last epoch of a shorter run are never reached. The learning rate is set at
    the start of every epoch, so a run resumed from a checkpoint continues the schedule.
    """

    def __init__(self, growth: int = 3, decay: float = 10 ** (-1 / 7)) -> None:
        self.growth = growth
        self.decay = decay

    def stage(self, epoch: int) -> int:
        """The stage i of the epoch (counted from 0): stage i starts at sum_{j<i} growth^j."""
        stage, end = 0, 1
        while epoch >= end:
            stage += 1
            end += self.growth**stage
        return stage

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        factor = self.decay ** self.stage(trainer.current_epoch)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor

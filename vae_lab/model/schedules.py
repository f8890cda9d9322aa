"""Learning-rate schedules as torch LR schedulers, chosen with the top-level ``lr_schedule``
key (a ``_partial_`` config taking the optimizer) and stepped by Lightning once per epoch, so
their state is saved in checkpoints and a resumed run continues the schedule."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def iwae_stage(epoch: int, growth: int = 3) -> int:
    """The stage i of the epoch (counted from 0): stage i starts at sum_{j<i} growth^j."""
    stage, end = 0, 1
    while epoch >= end:
        stage += 1
        end += growth**stage
    return stage


class IWAESchedule(LambdaLR):
    """The learning-rate schedule of Burda et al. (2016, section 5), kept by Cremer et al. (2018).

    Training runs in stages i = 0, 1, 2, ...; stage i lasts ``growth``^i epochs at learning rate
    lr0 * ``decay``^i, lr0 being the optimizer's initial learning rate. With the defaults
    (growth 3, decay 10^(-1/7)) the stages i = 0..7 take 3,280 epochs and end at lr0 / 10.
    Stages past the last epoch of a shorter run are never reached.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, growth: int = 3, decay: float = 10 ** (-1 / 7)
    ) -> None:
        self.growth = growth
        self.decay = decay
        super().__init__(optimizer, lambda epoch: decay ** iwae_stage(epoch, growth))

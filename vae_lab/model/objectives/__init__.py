"""Training objectives, the ``objective`` config group: ELBO, IWAE bound, semi-amortized."""

from vae_lab.model.objectives.base import Objective, TrainingLoss
from vae_lab.model.objectives.elbo import ELBO
from vae_lab.model.objectives.iwae import IWAE
from vae_lab.model.objectives.savae import SemiAmortized

__all__ = ["ELBO", "IWAE", "Objective", "SemiAmortized", "TrainingLoss"]

"""The VAE LightningModule: pairs any posterior family with any prior and likelihood.

Training minimises the loss of the run's objective (``vae_lab.objectives``: the ELBO with its
KL warm-up, the IWAE bound, semi-amortized inference), which the module calls without asking
which it is. Validation reports the ELBO and an
IW estimate of log p(x) with a small K; the test stage reports the metrics of the contract,
with the IW estimate at K = ``eval_num_samples`` (Burda et al. 2016 use K = 5000). Both
stages take the ELBO from the same K importance weights as log p(x) (mean_k log w_k, with its
stderr), so ``test/inference_gap`` = log p^(x) - ELBO is the gap of one set of draws, not the
difference of a K-sample and a one-sample estimate; ``recon`` = ELBO + KL, the KL analytic
where the pair has one, else the mean over K draws of q (``vae_lab.elbo.kl_estimate``), each
with its stderr.

Reproducibility: the test-time samples of global batch i are drawn from a generator seeded
with ``stream_seed(test_seed, "test", i)`` (see ``vae_lab.data.batches``: a global batch holds
the same datapoints whatever the number of processes), so test metrics of a checkpoint are the
same on 1 or N processes; validation's with ``stream_seed(test_seed, "val", i)``, the same
draws at every epoch. Neither touches the training stream, so the validation settings (how
often, with how many samples, the sanity check) leave the trained model as it is. Checkpoints
carry the RNG state, so a resumed run continues the same random stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torchmetrics import MeanMetric

from vae_lab.data.batches import stream_seed
from vae_lab.elbo import (
    ELBOTerms,
    IWEstimate,
    LogLikelihood,
    LogWeights,
    elbo_terms,
    iw_of_weights,
    kl_estimate,
    log_importance_weights,
    log_weights_of_noise,
    reparameterize,
)
from vae_lab.estimate import Figure
from vae_lab.fast_eval import Compiled, default_chunk_size
from vae_lab.hook_overhead import CheapAttributes
from vae_lab.metrics import ActiveUnits, IWLogLikelihood, MeanEstimate
from vae_lab.objectives import ELBO, Objective
from vae_lab.posteriors import PosteriorFamily
from vae_lab.psis import warn_if_unreliable

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class VAE(CheapAttributes, pl.LightningModule):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        posterior: PosteriorFamily,
        prior: nn.Module,
        likelihood: nn.Module,
        optimizer: OptimizerFactory,
        objective: Objective | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        eval_num_samples: int = 5000,
        eval_chunk_size: int | None = None,
        eval_compile: bool = False,
        val_num_samples: int = 100,
        test_seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.prior = prior
        self.likelihood = likelihood
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.objective = objective or ELBO()
        self.eval_num_samples = eval_num_samples
        self.eval_chunk_size = eval_chunk_size
        self.eval_compile = eval_compile
        self.compiled_log_likelihood: Compiled | None = None  # after compile_estimates
        self.compiled_log_weights: Compiled | None = None
        self.val_num_samples = val_num_samples
        self.test_seed = test_seed
        self._unchecked_losses: list[Tensor] = []  # training losses not yet checked finite
        self.metrics = nn.ModuleDict(
            {f"test_{name}": MeanMetric() for name in self.objective.test_metric_names}
        )
        # the ELBO is the IW weights' (*_iw), the KL analytic or from as many draws (*_kl)
        self.val_iw, self.val_kl = IWLogLikelihood(), MeanEstimate()
        self.test_iw, self.test_kl = IWLogLikelihood(), MeanEstimate()
        self.test_active_units = ActiveUnits(posterior.latent_dim)

    # -- the model as distributions ----------------------------------------------------------
    def q(self, x: Tensor) -> Distribution:
        """q(z|x) for a batch x of shape [B, X]."""
        return self.posterior.distribution(self.posterior(self.encoder(x)))

    def encode_base(self, x: Tensor) -> Distribution:
        """The Gaussian base q0(z|x) of the posterior (q itself for Gaussian families)."""
        return self.posterior.base_distribution(self.posterior(self.encoder(x)))

    def p_z(self) -> Distribution:
        return self.prior(self.encode_base)

    def log_likelihood(self, x: Tensor) -> LogLikelihood:
        """z [S, B, D] -> log p(x|z) [S, B]; compiled where no gradient is taken, after
        ``compile_estimates`` (``vae_lab.fast_eval``)."""

        def log_px_z(z: Tensor) -> Tensor:
            compiled = self.compiled_log_likelihood
            if compiled is not None and not torch.is_grad_enabled():
                return compiled(z, x)
            return self._log_likelihood(z, x)

        return log_px_z

    def _log_likelihood(self, z: Tensor, x: Tensor) -> Tensor:
        return self.likelihood(self.decoder(z)).log_prob(x)

    def _log_weights_of_noise(
        self, family: PosteriorFamily, theta: Tensor, eps: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        q, log_likelihood = family.distribution(theta), partial(self._log_likelihood, x=x)
        return log_weights_of_noise(q, self.p_z(), log_likelihood, eps)

    def compile_estimates(self) -> None:
        """From now on, the estimates without gradient run through torch.compile: log p(x|z),
        and the IW estimate's log-weights of each chunk of noise (``vae_lab.fast_eval``)."""
        if self.compiled_log_likelihood is None:
            self.compiled_log_likelihood = Compiled(self._log_likelihood)
            self.compiled_log_weights = Compiled(self._log_weights_of_noise)

    @property
    def compile_seconds(self) -> float:
        """Wall time spent in the calls that compiled (0 before ``compile_estimates``)."""
        compiled = (self.compiled_log_likelihood, self.compiled_log_weights)
        return sum(c.seconds for c in compiled if c is not None)

    def chunk_size_for(self, batch_size: int) -> int:
        """Importance samples per datapoint drawn at once: ``eval_chunk_size``, or when that is
        None the default of the module's device (``vae_lab.fast_eval``)."""
        return self.eval_chunk_size or default_chunk_size(self.device, batch_size)

    def elbo(self, x: Tensor, num_samples: int = 1) -> ELBOTerms:
        return elbo_terms(self.q(x), self.p_z(), self.log_likelihood(x), num_samples)

    def iw_estimate(
        self,
        x: Tensor,
        num_samples: int,
        chunk_size: int | None = None,
        theta: Tensor | None = None,
        family: PosteriorFamily | None = None,
    ) -> IWEstimate:
        """The IW estimate of log p(x) with q = ``family.distribution(theta)``: by default the
        encoder's q(z|x); ``evaluate`` passes q*'s and the refined q's parameters."""
        family = self.posterior if family is None else family
        if theta is None:
            theta = self.posterior(self.encoder(x))
        chunk = chunk_size or self.chunk_size_for(x.shape[0])
        return iw_of_weights(self.log_weights(family, theta, x), num_samples, chunk)

    def log_weights(self, family: PosteriorFamily, theta: Tensor, x: Tensor) -> LogWeights:
        """n -> n fresh log-weights of each datapoint and their z, under q = family(theta);
        compiled where no gradient is taken after ``compile_estimates``, with the noise drawn
        outside the compiled code, as the eager path draws it."""
        q = family.distribution(theta)
        compiled = self.compiled_log_weights
        if compiled is None or torch.is_grad_enabled():
            return partial(log_importance_weights, q, self.p_z(), self.log_likelihood(x))
        noise = reparameterize(q).noise
        return lambda n: compiled(family, theta, noise.rsample((n,)), x)

    # -- training ----------------------------------------------------------------------------
    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        result = self.objective.loss(self, x, self.global_step)
        loss, terms = result.loss, result.terms
        self._unchecked_losses.append(loss.detach())
        if self._logs_this_step(batch_idx):
            self._check_finite()
            batch = x.shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=batch)
            self.log("train/elbo", terms.elbo.mean(), batch_size=batch)
            self.log("train/recon", terms.recon.mean(), batch_size=batch)
            self.log("train/kl", terms.kl.mean(), batch_size=batch)
        return loss

    def _check_finite(self) -> None:
        """Raise at the first NaN or infinite training loss since the last check.

        Reading a loss makes a GPU finish its step first, so the losses are kept on the device
        and read on the logging steps only (``_logs_this_step``, each epoch's last among
        them), which lets the CPU queue the steps between: a non-finite loss is reported, with
        its step, up to ``trainer.log_every_n_steps`` steps late, and before the epoch's
        checkpoint.
        """
        losses, self._unchecked_losses = torch.stack(self._unchecked_losses), []
        bad = (~torch.isfinite(losses)).nonzero()
        if bad.numel():
            first = int(bad[0])
            raise FloatingPointError(
                f"training loss is {losses[first].item()} at step "
                f"{self.global_step - len(losses) + 1 + first}: "
                "lower optim.lr, add kl_warmup_steps, or check the data"
            )

    def _logs_this_step(self, batch_idx: int) -> bool:
        """Log on the steps Lightning writes (every ``trainer.log_every_n_steps``: the step
        about to be taken is ``global_step + 1``) and on each epoch's last and the run's last (at
        ``max_steps``), which keep the final train metrics for metrics.json.

        ``self.log`` costs about 1 ms a call, a third of a small model's step on a CPU
        (``make bench``), so steps whose logs would be discarded skip it.
        """
        trainer, step = self.trainer, self.global_step + 1
        last = batch_idx == trainer.num_training_batches - 1 or step == trainer.max_steps
        every = trainer.log_every_n_steps
        return last or (every > 0 and step % every == 0)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    # -- evaluation --------------------------------------------------------------------------
    def _evaluate(self, stage: str, x: Tensor, num_samples: int) -> IWEstimate:
        """Evaluation metrics in full precision, whatever the training precision (autocast off)."""
        with torch.autocast(self.device.type, enabled=False):
            return self._evaluate_full_precision(stage, x.float(), num_samples)

    def _evaluate_full_precision(self, stage: str, x: Tensor, num_samples: int) -> IWEstimate:
        chunk, theta = self.chunk_size_for(x.shape[0]), self.posterior(self.encoder(x))
        kl = kl_estimate(self.posterior.distribution(theta), self.p_z(), num_samples, chunk)
        getattr(self, f"{stage}_kl").update(kl)
        estimate = self.iw_estimate(x, num_samples, chunk, theta=theta)
        getattr(self, f"{stage}_iw").update(estimate)
        if stage == "test":
            for name, value in self.objective.test_metrics(self, x, num_samples).items():
                self.metrics[f"test_{name}"].update(value)
        return estimate

    def _log_epoch(self, stage: str, names: tuple[str, ...]) -> dict[str, Tensor]:
        """The stage's metrics over the epoch: ``names`` (means), the IW figures, the KL, and
        the ELBO of the IW weights split as recon = ELBO + KL, each with its stderr (the KL's
        draws are independent of the IW's; analytic KL: stderr 0, floored at rounding)."""
        values = {name: self.metrics[f"{stage}_{name}"].compute() for name in names}
        values.update(getattr(self, f"{stage}_iw").compute())
        elbo, kl = Figure.of_named(values, "elbo"), getattr(self, f"{stage}_kl").compute()
        values |= kl.named("kl")
        values |= Figure(elbo.value + kl.value, math.hypot(elbo.stderr, kl.stderr)).named("recon")
        for name in names:
            self.metrics[f"{stage}_{name}"].reset()
        for metric in (getattr(self, f"{stage}_iw"), getattr(self, f"{stage}_kl")):
            metric.reset()
        return values

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        with self._seeded("val", batch_idx):
            self._evaluate("val", x, self.val_num_samples)

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val", ())
        self.log("val/elbo", values["elbo"], prog_bar=True)
        self.log("val/log_px", values["log_px"])

    @contextmanager
    def _seeded(self, stage: str, batch_idx: int) -> Iterator[None]:
        """Draw from the stream of the stage's global batch (its index among all processes',
        ``vae_lab.data.batches``), leaving the training stream untouched."""
        global_batch = batch_idx * self.trainer.world_size + self.trainer.global_rank
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(stream_seed(self.test_seed, stage, global_batch))
            yield

    def on_test_start(self) -> None:
        if self.eval_compile:
            self.compile_estimates()

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        with self._seeded("test", batch_idx):
            estimate = self._evaluate("test", x, self.eval_num_samples)
        self.test_active_units.update(estimate.z_mean)

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch("test", self.objective.test_metric_names)
        gap = Figure.of_named(values, "log_px") - Figure.of_named(values, "elbo")
        values |= gap.named("inference_gap")
        values["active_units"] = self.test_active_units.compute()
        self.test_active_units.reset()
        if self.trainer.is_global_zero:
            warn_if_unreliable("test", float(values["psis_khat_bad"]), "eval.num_samples")
        for name, value in values.items():
            self.log(f"test/{name}", value)
        if self.compiled_log_likelihood is not None and self.trainer.is_global_zero:
            log.info("eval.compile: compiling took %.1f s (of the test stage)",
                     self.compile_seconds)  # fmt: skip

"""The VAE LightningModule: pairs any posterior family with any prior and likelihood.

Training minimises the loss of the run's objective (``vae_lab.model.objectives``: the ELBO
with its KL warm-up, the IWAE bound, semi-amortized inference), which the module calls without
asking which it is. Validation reports the ELBO and an IW estimate of log p(x) with a small K
(``val_num_samples``), the ELBO from the same importance weights (mean_k log w_k); the test
figures come from the evaluation pipeline (``vae_lab.evaluation``), after training.

Reproducibility: validation's samples of global batch i are drawn from a generator seeded with
``stream_seed(seed, "val", i)`` (``vae_lab.components.data.batches``: a global batch holds the
same datapoints whatever the number of processes), the same draws at every epoch, so the
validation settings leave the trained model as it is. Checkpoints carry the RNG state, so a
resumed run continues the same random stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.distributions import Distribution

from vae_lab.components.data.batches import forked_rng, stream_seed
from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.config.instantiate import component
from vae_lab.config.targets import upgraded
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.elbo import (
    ELBOTerms,
    IWEstimate,
    LogLikelihood,
    LogWeights,
    elbo_terms,
    iw_of_weights,
    log_importance_weights,
    log_weights_of_noise,
    reparameterize,
)
from vae_lab.estimators.estimate import Estimate
from vae_lab.estimators.fast_eval import Compiled, default_chunk_size
from vae_lab.estimators.metrics import IWLogLikelihood
from vae_lab.model.checkpoints import check_parameterizations, load_weights
from vae_lab.model.objectives import ELBO, Objective
from vae_lab.model.optimizer import OptimizerFactory, build_optimizer

log = logging.getLogger(__name__)


SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class VAE(pl.LightningModule):
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
        val_num_samples: int = 100,
        seed: int = 0,
        latent_layers: Sequence[int] | None = None,
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
        self.compiled_log_likelihood: Compiled | None = None  # after compile_estimates
        self.compiled_log_weights: Compiled | None = None
        self.val_num_samples = val_num_samples
        self.seed = seed
        #: the sizes of z's layers, in order (model=hierarchical: z1's, z2's); one by default
        self.latent_layers = tuple(latent_layers or (posterior.latent_dim,))
        self._unchecked_losses: list[Tensor] = []  # training losses not yet checked finite
        self.val_iw = IWLogLikelihood()

    # -- built from a config, loaded from a checkpoint ---------------------------------------
    @classmethod
    def from_config(
        cls, cfg: DictConfig, data_dim: int, image_shape: Sequence[int] | None = None
    ) -> VAE:
        """The VAE of a run's config for data of ``data_dim`` values, each the flattened image
        of ``image_shape`` (the datamodule's; None: flat data, shape (data_dim,)), which the
        ``model`` option is built for (``vae_lab.components.networks``); an objective the
        posterior family cannot train is refused here, before training (a run made before the
        ``objective`` group trains with the ELBO)."""
        data_shape = tuple(image_shape or (data_dim,))
        if math.prod(data_shape) != data_dim:
            raise ConfigError(f"image_shape={data_shape} does not hold data_dim={data_dim} values")
        nets = component(cfg.model, "model", data_shape=data_shape, latent_dim=cfg.latent_dim)
        posterior = nets.posterior(partial(component, cfg.posterior, "posterior"))
        prior = nets.prior(partial(component, cfg.prior, "prior", data_dim=data_dim))
        objective = component(cfg.objective, "objective") if cfg.get("objective") else None
        if objective is not None:
            objective.check(posterior)
        schedule = cfg.get("lr_schedule")
        return cls(
            encoder=nets.encoder,
            decoder=nets.decoder,
            posterior=posterior,
            prior=prior,
            likelihood=component(cfg.likelihood, "likelihood", data_dim=data_dim),
            optimizer=build_optimizer(cfg),
            objective=objective,
            lr_scheduler=component(schedule, "lr_schedule") if schedule else None,
            eval_num_samples=cfg.eval.num_samples,
            eval_chunk_size=cfg.eval.chunk_size,
            val_num_samples=cfg.eval.val_num_samples,
            seed=cfg.seed,
            latent_layers=nets.layer_dims,
        )

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: str | torch.device | None = None
    ) -> VAE:
        """The trained VAE of a checkpoint, in eval mode on ``map_location`` (default: the CPU).

        The module takes built components, not hyperparameters Lightning could pass back to
        it, so it is rebuilt (``from_config``) from the resolved config, data dimension and image
        shape (absent from a checkpoint written before vae_lab stored it: flat data) the
        checkpoint carries (``checkpoint["vae_lab"]``, written by
        ``vae_lab.training.build.RunStamp``), old ``_target_`` paths mapped to today's and any
        ``_target_`` outside vae_lab's components refused before anything is built
        (``vae_lab.config.targets.upgraded``). The file is read as weights only: a checkpoint
        is data, and one whose pickle would run code is refused, never run. The RNG state the
        checkpoint carries for resuming is left unused.
        """
        path = Path(checkpoint_path).expanduser()
        checkpoint = load_weights(path, map_location or "cpu")
        stamp = checkpoint.get("vae_lab") if isinstance(checkpoint, dict) else None
        if not isinstance(stamp, dict) or not {"config", "data_dim"} <= stamp.keys():
            raise ConfigError(
                f"{path} does not carry its run's config (a checkpoint written before vae_lab "
                "stored it there): load its run with vae_lab.load(RUN_DIR), which reads the "
                "run folder's .hydra/config.yaml"
            )
        cfg = upgraded(OmegaConf.create(stamp["config"]))
        model = cls.from_config(cfg, stamp["data_dim"], stamp.get("image_shape"))
        check_parameterizations(model, stamp, path)
        model.load_state_dict(checkpoint["state_dict"])
        return model.to(map_location or "cpu").eval()

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
        ``compile_estimates`` (``vae_lab.estimators.fast_eval``)."""

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
        and the IW estimate's log-weights of each chunk of noise
        (``vae_lab.estimators.fast_eval``)."""
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
        None the default of the module's device (``vae_lab.estimators.fast_eval``)."""
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

    # -- the Python API (docs/python_api.md) -------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples [n, X] in data space (flat, as the data): z ~ p(z) decoded to the
        likelihood's mean E[x|z] (pixel probabilities of a Bernoulli likelihood), not a draw
        x ~ p(x|z), whose pixel noise would hide what the model has learned."""
        return self.likelihood.mean(self.decoder(self.p_z().sample((n,))))

    def encode(self, x: Tensor) -> Distribution:
        """q(z|x) of a batch x [B, X], taken to the model's device: a torch Distribution over
        z [B, D], with ``sample`` and ``log_prob`` for every posterior family, ``mean`` and
        ``stddev`` for the Gaussian ones (a flow's have no closed form)."""
        return self.q(x.to(self.device, self.dtype))

    @torch.no_grad()
    def log_px(self, x: Tensor, num_samples: int | None = None) -> Estimate:
        """The importance-weighted estimate of log p(x) of each row of x [B, X] (``iw_estimate``,
        Burda et al. 2016), K = ``num_samples`` draws of q(z|x) (default the run's
        ``eval.num_samples``, the K of its test/log_px), in full precision.

        Per datapoint ``value`` [B] and Monte Carlo ``variance`` [B] (stderr: its square root);
        ``.figure()`` is the batch mean with its stderr. It is a stochastic lower bound, whose
        bias, larger at smaller K, the stderr does not cover. The draws come from torch's
        global random stream: ``torch.manual_seed`` repeats an estimate.
        """
        x = x.to(self.device, self.dtype)
        with torch.autocast(self.device.type, enabled=False):
            return self.iw_estimate(x, num_samples or self.eval_num_samples).log_px

    # -- training ----------------------------------------------------------------------------
    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        result = self.objective.loss(self, x, self.global_step)
        loss, terms = result.loss, result.terms
        self._unchecked_losses.append(loss.detach())
        if self._logging_step(batch_idx):
            self._check_finite()
            batch = x.shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=batch)
            self.log("train/elbo", terms.elbo.mean(), batch_size=batch)
            self.log("train/recon", terms.recon.mean(), batch_size=batch)
            self.log("train/kl", terms.kl.mean(), batch_size=batch)
        return loss

    def _logging_step(self, batch_idx: int) -> bool:
        """Whether this training step's figures are logged: those of every
        ``trainer.log_every_n_steps``-th step, which are the ones the logger writes (Lightning
        writes a step's logged values where its count of steps taken, plus one, is a multiple
        of it), and those of each epoch's last step, which the run's record keeps. Lightning's
        bookkeeping of a ``self.log`` call is Python of the order of a small model's whole
        step (docs/speed.md), so the other steps make none."""
        every = max(self.trainer.log_every_n_steps, 1)
        last = batch_idx == self.trainer.num_training_batches - 1
        return (self.global_step + 1) % every == 0 or last

    def _check_finite(self) -> None:
        """Raise at the first NaN or infinite training loss since the last check.

        Reading a loss makes a GPU finish its step first, so the losses are kept on the device
        and read every ``trainer.log_every_n_steps`` steps and at each epoch's last, which lets
        the CPU queue the steps between: a non-finite loss is reported, with its step, up to
        that many steps late, and before the epoch's validation and checkpoint.
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

    # -- validation ------------------------------------------------------------------------
    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        """The ELBO and the IW estimate with K = ``val_num_samples``, in full precision whatever
        the training precision (autocast off); the ELBO is the IW weights' (mean_k log w_k)."""
        with self._seeded("val", batch_idx), torch.autocast(self.device.type, enabled=False):
            x, k = x.float(), self.val_num_samples
            chunk, theta = self.chunk_size_for(x.shape[0]), self.posterior(self.encoder(x))
            self.val_iw.update(self.iw_estimate(x, k, chunk, theta=theta))

    def on_validation_epoch_end(self) -> None:
        values = self.val_iw.compute()
        self.log("val/elbo", values["elbo"], prog_bar=True)
        self.log("val/log_px", values["log_px"])
        self.val_iw.reset()

    @contextmanager
    def _seeded(self, stage: str, batch_idx: int) -> Iterator[None]:
        """Draw from the stream of the stage's global batch (its index among all processes',
        ``vae_lab.components.data.batches``), leaving the training stream untouched."""
        global_batch = batch_idx * self.trainer.world_size + self.trainer.global_rank
        with forked_rng(self.device):
            torch.manual_seed(stream_seed(self.seed, stage, global_batch))
            yield

"""Training: one epoch through the VAE LightningModule and Lightning's Trainer, against a bare
PyTorch loop of the same model over the same batches.

Three loops over the same permutation of the training set (``BatchOrder``, seed + epoch 0),
binarised on the device as the datamodule does, each from the same initial weights:

    framework  ``trainer.fit`` of the VAE module as ``python -m vae_lab.run`` builds it: the
               config's Trainer, callbacks (the progress bar on, at its configured refresh
               rate), and logger (the default csv logger, into a temporary folder)
    module     ``VAE.elbo`` and Adam in a plain loop: vae_lab's distributions, no Trainer
    bare       hand-written PyTorch: the same ``nn.Module``s, the reparameterisation, the
               analytic KL and BCE-with-logits written out, as one would without vae_lab

All three step the run's optimizer (``cfg.optim``: fused Adam).

``framework / bare`` is the goal (<= 1.10): the median over rounds of each round's ratio, with
its range over rounds, since a shared machine's speed drifts by more than the goal's margin
between rounds while the loops of one round see alike load. ``framework / module`` is the
Trainer's share of the cost and ``module / bare`` that of the distributions layer. The
framework's epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end``; ``fit``'s
one-off set-up is reported apart. Validation is off (it is not a cost of a training step). The
three loops draw the same random numbers in the same order (the binarisation of a batch, then
its z), so they end on the same loss (``same_loss``, to float32 rounding): evidence that the
reference trains the same model.

The Trainer's floor: the framework and module loops again on ``FLOOR_MODEL``, a model with
almost no arithmetic (no hidden layers, one latent dimension), whose difference is the
Trainer's own cost per step (``step_ms_trainer_floor``: hooks, closure, batch transfer,
progress bar and logging), whatever the module does. ``ratio_at_trainer_floor`` = (bare +
floor) / bare is the best ``framework / bare`` any module could reach under Lightning's loop
with this bare step: with a distributions layer that cost nothing.
"""

from __future__ import annotations

import copy
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from benchmarks.common import Bench, Goal, Result, rounds, synchronize, timed
from vae_lab.components.data import binarize
from vae_lab.components.data.batches import BatchOrder
from vae_lab.components.posteriors.gaussian import MIN_SCALE
from vae_lab.model.module import VAE
from vae_lab.records.checkpoint_io import AtomicCheckpointIO
from vae_lab.training.build import build_logger, build_trainer


@dataclass
class Size:
    batches: int | None = None  # training steps per epoch; None = the whole training set
    repeats: int = 5


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(batches=3, repeats=1)

#: the model of the Trainer's floor: no hidden layers and one latent dimension
FLOOR_MODEL = {"model.hidden": "[]", "latent_dim": "1"}


@dataclass
class Epoch:
    seconds: float
    loss: float  # the last batch's loss
    fit_seconds: float = float("nan")  # trainer.fit as a whole, set-up included


class EpochTimer(pl.Callback):
    """The epoch's wall time and its last batch's loss."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        self.loss = outputs["loss"]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.seconds = time.perf_counter() - self.start


@contextmanager
def quiet_terminal() -> Iterator[None]:
    """The progress bar is drawn (its cost is measured) into a buffer, not onto the table."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        yield


def framework_epoch(bench: Bench, size: Size) -> Epoch:
    """One epoch of ``trainer.fit`` with the run's Trainer, callbacks and logger."""
    model = bench.model()
    timer = EpochTimer()
    cfg = copy.deepcopy(bench.cfg)
    overrides = {"max_epochs": 1, "limit_train_batches": size.batches, "limit_val_batches": 0,
                 "num_sanity_val_steps": 0, "enable_progress_bar": True}  # fmt: skip
    cfg.trainer = OmegaConf.merge(cfg.trainer, overrides)
    with tempfile.TemporaryDirectory() as run_dir, quiet_terminal():
        folder = Path(run_dir)
        trainer = build_trainer(cfg, folder, build_logger(cfg, folder),
                                checkpoint_io=AtomicCheckpointIO())  # fmt: skip
        trainer.callbacks.insert(0, timer)  # its epoch ends before the checkpoint's write
        fit_seconds = timed(lambda: trainer.fit(model, datamodule=bench.datamodule))
    return Epoch(timer.seconds, float(timer.loss), fit_seconds)


def epoch_batches(bench: Bench, size: Size) -> Iterator[Tensor]:
    """The batches of the framework's first epoch, binarised afresh."""
    train = bench.datamodule.splits[0]
    order = BatchOrder(train.shape[0], bench.datamodule.batch_size, True, bench.cfg.seed)
    for step, indices in enumerate(order):
        if size.batches is not None and step >= size.batches:
            return
        x = train[indices.to(train.device)]
        yield binarize(x) if bench.datamodule.binarize else x


def plain_epoch(
    bench: Bench, size: Size, make_loss: Callable[[VAE], Callable[[Tensor], Tensor]]
) -> Epoch:
    """Adam on ``make_loss(model)(x)`` over the epoch's batches, without a Trainer."""
    model = bench.model()
    loss_of = make_loss(model)
    optimizer = model.configure_optimizers()

    def epoch() -> Tensor:
        for x in epoch_batches(bench, size):
            loss = loss_of(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.detach()

    synchronize()
    start = time.perf_counter()
    loss = float(epoch())
    return Epoch(time.perf_counter() - start, loss)


def module_loss(model: VAE) -> Callable[[Tensor], Tensor]:
    """The training step's loss, -ELBO, through the VAE module's distributions."""

    def loss(x: Tensor) -> Tensor:
        terms = model.elbo(x)
        return -(terms.recon - terms.kl).mean()

    return loss


def bare_loss(model: VAE) -> Callable[[Tensor], Tensor]:
    """The same -ELBO written out in plain PyTorch, on the model's own layers."""
    encoder, head, decoder = model.encoder, model.posterior.head, model.decoder

    def loss(x: Tensor) -> Tensor:
        mu, raw_scale = head(encoder(x)).chunk(2, dim=-1)
        sigma = F.softplus(raw_scale) + MIN_SCALE
        z = mu + sigma * torch.randn_like(mu)
        recon = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log()).sum(-1)
        return (kl - recon).mean()

    return loss


def run(bench: Bench, size: Size) -> Result:
    floor = Bench.create({**bench.overrides, **FLOOR_MODEL})
    epochs = rounds(
        {
            "framework": lambda: framework_epoch(bench, size),
            "module": lambda: plain_epoch(bench, size, module_loss),
            "bare": lambda: plain_epoch(bench, size, bare_loss),
            "floor_framework": lambda: framework_epoch(floor, size),
            "floor_module": lambda: plain_epoch(floor, size, module_loss),
        },
        size.repeats,
    )
    seconds = {name: statistics.median(e.seconds for e in runs) for name, runs in epochs.items()}
    paired = [
        f.seconds / b.seconds for f, b in zip(epochs["framework"], epochs["bare"], strict=True)
    ]
    steps = sum(1 for _ in epoch_batches(bench, size))
    per_step_ms = {name: 1e3 * s / steps for name, s in seconds.items()}
    trainer_floor = per_step_ms["floor_framework"] - per_step_ms["floor_module"]
    loss = {name: epochs[name][0].loss for name in ("framework", "module", "bare")}
    figures = {
        "steps": steps,
        "epoch_s_framework": seconds["framework"],
        "epoch_s_module_no_trainer": seconds["module"],
        "epoch_s_bare_pytorch": seconds["bare"],
        "fit_s_framework": statistics.median(e.fit_seconds for e in epochs["framework"]),
        "ratio_framework_vs_bare": statistics.median(paired),
        "ratio_framework_vs_bare_range": f"{min(paired):.3f}-{max(paired):.3f}",
        "ratio_trainer_share": seconds["framework"] / seconds["module"],
        "ratio_distributions_share": seconds["module"] / seconds["bare"],
        "step_ms_bare": per_step_ms["bare"],
        "step_ms_trainer_overhead": per_step_ms["framework"] - per_step_ms["module"],
        "step_ms_distributions_overhead": per_step_ms["module"] - per_step_ms["bare"],
        "step_ms_trainer_floor": trainer_floor,
        "ratio_at_trainer_floor": (per_step_ms["bare"] + trainer_floor) / per_step_ms["bare"],
        "loss_framework": loss["framework"],
        "loss_module": loss["module"],
        "loss_bare": loss["bare"],
        "same_loss": all(abs(v - loss["bare"]) <= 1e-4 * abs(loss["bare"]) for v in loss.values()),
    }
    return Result(
        figures,
        [Goal("ratio_framework_vs_bare", "<=", 1.10)],
        note=f"median of {size.repeats} interleaved rounds; a ratio's range is over rounds",
    )

"""``qstar``: q*, the best member of a posterior family for each datapoint, fitted by
stochastic optimisation of that datapoint's ELBO (Cremer, Li & Duvenaud 2018), in the run's
own family or in those of ``eval.qstar_family`` (an option or a list: Cremer et al.'s
L[q*_flow] and L[q*_FFG] of one model in one call; another family's figures are suffixed
``_<option>``).

For each family: ``elbo_qstar`` from K samples, and from the same weights IW with q* as the
proposal (``log_px_qstar``, its ESS/K and k-hat); ``qstar_residual``, the ELBO q* still had to
gain when it stopped; ``qstar_converged`` and ``qstar_steps``. The fit starts at the best of
the encoder's q (or the member of the family matching it), the family's fit to the prior, and
that fit moved to the encoder's mean (``vae_lab.estimators.gaps``; ``eval.qstar_init=prior``:
the fit to the prior alone).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch import Tensor

from vae_lab.components.data import InMemoryDataModule
from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.config.compose import compose_default
from vae_lab.config.paths import CONF_DIR
from vae_lab.config.validation import ConfigError
from vae_lab.estimators.estimate import ROUNDING
from vae_lab.estimators.gaps import (
    FALLBACK_START_STEPS,
    QStarFit,
    QStarSettings,
    RowsLogLikelihood,
    mean_moved_theta,
    moment_matched_theta,
    prior_theta,
    qstar_start,
)
from vae_lab.estimators.residual import fit_released, qstar_residual
from vae_lab.evaluation.stage import Context, Stage, StageResult
from vae_lab.evaluation.stages.iw import iw_result
from vae_lab.model.module import VAE

log = logging.getLogger(__name__)


def family_names(value: object) -> list[str | None]:
    """``eval.qstar_family`` as a list (null: the run's own family)."""
    if value is None or isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | ListConfig) and len(value) > 0:
        return list(value)
    raise ConfigError(f"eval.qstar_family={value} is invalid: must be a posterior option, a "
                      "non-empty list of them, or null")  # fmt: skip


def family_configs(cfg: DictConfig) -> list[tuple[str | None, DictConfig, str]]:
    """Each family q* is sought in: its option (None: the run's own), config and the suffix
    of its figures ('' for the run's own option); a family named twice is refused (its
    figures would overwrite each other)."""
    names = family_names(cfg.eval.qstar_family)
    options = sorted(p.stem for p in (CONF_DIR / "posterior").glob("*.yaml"))
    found = []
    for name in names:
        if name is not None and name not in options:
            raise ConfigError(f"eval.qstar_family={name} is invalid: must be one of {options}")
        overrides = [f"posterior={name}", f"latent_dim={cfg.latent_dim}"]
        family_cfg = cfg.posterior if name is None else compose_default(overrides).posterior
        found.append((name, family_cfg, "" if family_cfg == cfg.posterior else f"_{name}"))
    suffixes = [suffix for _, _, suffix in found]
    if len(set(suffixes)) < len(suffixes):
        raise ConfigError(
            f"eval.qstar_family=[{','.join('null' if n is None else n for n in names)}] is "
            "invalid: it names one family twice (null is the run's own option), whose figures "
            "would overwrite each other"
        )
    return found


def families(cfg: DictConfig, model: VAE) -> list[tuple[PosteriorFamily, str]]:
    """The families of ``family_configs``: the run's own module, or one built for q*."""
    found = []
    for name, family_cfg, suffix in family_configs(cfg):
        if not suffix:
            found.append((model.posterior, ""))
            continue
        family = instantiate(family_cfg, feature_dim=model.posterior.head.in_features,
                             latent_dim=model.posterior.latent_dim)  # fmt: skip
        if any(not key.startswith("head.") for key, _ in family.named_parameters()):
            log.warning(
                "eval.qstar_family=%s has networks shared across datapoints that this run never "
                "trained; its q* moves only the per-datapoint parameters through untrained "
                "networks. For another family's flow q*, planar and sylvester have no shared "
                "weights.",
                name,
            )
        found.append((family, suffix))
    return found


def settings_of(cfg: DictConfig) -> QStarSettings:
    ev = cfg.eval
    return QStarSettings(
        lr=ev.qstar_lr, num_samples=ev.qstar_samples, max_steps=ev.qstar_max_steps,
        tol=ev.qstar_tol, num_decays=ev.qstar_decays, gradient=ev.qstar_gradient,
        residual_steps=ev.qstar_residual_steps, newton_steps=ev.qstar_newton_steps,
    )  # fmt: skip


def rows_of(model: VAE, points: Tensor) -> RowsLogLikelihood:
    """Row indices of ``points`` -> their log p(x|z), as q*'s fit takes it."""
    return lambda rows: model.log_likelihood(points[rows])


def fit(
    model: VAE,
    family: PosteriorFamily,
    points: Tensor,
    settings: QStarSettings,
    init: str,
    num_samples: int,
    chunk_size: int,
) -> QStarFit:
    """q* on the points from the best of its candidate starts (module docstring), released
    where it stopped short (``vae_lab.estimators.residual.fit_released``, whose probe of the
    ELBO still to gain takes ``num_samples`` draws, ``chunk_size`` at a time)."""
    prior = model.p_z()
    with torch.no_grad():
        own = init == "encoder" and family is model.posterior  # a fallback start
        steps = min(settings.max_steps, FALLBACK_START_STEPS) if own else settings.max_steps
        theta0 = prior_theta(family, prior, points.shape[0], replace(settings, max_steps=steps))
        if init == "encoder":
            near_q = (
                model.posterior(model.encoder(points))
                if own
                else moment_matched_theta(family, model.q(points), theta0)
            )
            moved = mean_moved_theta(theta0, near_q, family.latent_dim)
            candidates = [near_q, theta0, moved]
            theta0 = qstar_start(family, prior, model.log_likelihood(points), candidates)
    return fit_released(family, prior, rows_of(model, points), theta0, settings, num_samples,
                        chunk_size, progress=True)  # fmt: skip


class QStar(Stage):
    name = "qstar"
    summary = "q*, the best posterior of the family per point; ELBO(q*) and IW from q*"
    keys = ("eval.qstar_family", "eval.qstar_init", "eval.qstar_lr", "eval.qstar_samples",
            "eval.qstar_max_steps", "eval.qstar_tol", "eval.qstar_decays",
            "eval.qstar_gradient", "eval.qstar_residual_steps",
            "eval.qstar_newton_steps")  # fmt: skip

    def check(self, cfg: DictConfig, datamodule: InMemoryDataModule) -> None:
        family_configs(cfg)

    def cost(self, ctx: Context) -> str:
        ev = ctx.cfg.eval
        return (f"up to {ev.qstar_max_steps} steps of {ev.qstar_samples} samples for each of "
                f"{len(ctx.x)} points, then K = {ctx.num_samples}")  # fmt: skip

    def run(self, ctx: Context) -> StageResult:
        model, x, k, chunk = ctx.model, ctx.x, ctx.num_samples, ctx.chunk_size
        settings, init = settings_of(ctx.cfg), ctx.cfg.eval.qstar_init
        result = StageResult(chosen={"qstar_init": init})
        result.state["families"], result.state["fits"] = {}, {}
        prior = model.p_z()
        for family, suffix in families(ctx.cfg, model.to(x.device)):
            start = time.perf_counter()
            family.to(x.device)
            with ctx.seeded(f"qstar{suffix}"):
                found = fit(model, family, x, settings, init, k, chunk)
                part = iw_result(
                    ctx,
                    lambda r, f=family, t=found.theta: model.iw_estimate(
                        x[r], k, chunk, theta=t[r], family=f
                    ),
                    f"_qstar{suffix}",
                    f"IW from q*{suffix}",
                )
                rows = rows_of(model, x)
                residual = qstar_residual(family, prior, rows, found, settings, k, chunk).figure()
                # a difference of ELBOs, which float32 rounding resolves no finer than this
                elbo = part.figures[f"elbo_qstar{suffix}"]
                residual.stderr = max(residual.stderr, ROUNDING * abs(elbo.value))
            result.figures |= part.figures
            result.values |= part.values
            result.log_px |= part.log_px
            result.unreliable |= part.unreliable
            result.figures[f"qstar_residual{suffix}"] = residual
            result.values[f"qstar_converged{suffix}"] = float(found.converged.double().mean())
            result.values[f"qstar_steps{suffix}"] = found.steps
            result.state["families"][suffix] = (part.figures[f"elbo_qstar{suffix}"], residual)
            result.state["fits"][suffix] = (family, found)
            if suffix:  # the stage's time is the pipeline's time_qstar_s
                result.values[f"time_qstar{suffix}_s"] = time.perf_counter() - start
        return result


STAGE = QStar

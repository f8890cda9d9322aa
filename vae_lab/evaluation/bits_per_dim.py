"""Bits per dimension, the twin of every log p(x) figure of grey-level data (Theis et al. 2016,
"A note on the evaluation of generative models"; the unit of Kingma et al. 2016 and Salimans
et al. 2017): for D pixels,

    bits/dim = -log p(x) / (D ln 2),    stderr(bits/dim) = stderr(log p(x)) / (D ln 2),

a linear map of the same estimate, so its stderr is mapped alike, and a lower bound on
log p(x) (IW, AIS, BDMC's lower) is an upper bound on bits/dim. It is a code length of the
pixel values only where log p(x) is a log-probability of them: under a likelihood of discrete
grey levels (``grey_levels``: the discretized logistic of 8-bit data, whose log p(x) is of the
values k/255 themselves). A Gaussian likelihood's log p(x) is a density of continuous values
and has no twin.

Names: ``log_px<rest>`` has the twin ``bits_per_dim<rest>`` (``test/bits_per_dim`` beside
``test/log_px``, ``eval/bits_per_dim_ais`` beside ``eval/log_px_ais``), except in evaluate,
where ``eval/bits_per_dim`` is the twin of the headline ``eval/log_px_best`` and
``eval/bits_per_dim_iw`` that of the IW estimate ``eval/log_px``. A twin keeps its figure's
suffix, so ``_lower`` and ``_upper`` name the bound on log p(x) (``bits_per_dim_bdmc_lower``
is the upper bound on bits/dim). A ``log_px..._bias`` figure is a difference of two
log p(x), not one, and has no twin.
"""

from __future__ import annotations

import math

from vae_lab.estimators.estimate import Figure
from vae_lab.evaluation.stage import Context, StageResult

LOG_PX = "log_px"
#: twins named apart from the rule in evaluate's figures (module docstring)
EVAL_TWINS = {"log_px_best": "bits_per_dim", "log_px": "bits_per_dim_iw"}


def bits_per_dim(log_px: Figure, dims: int) -> Figure:
    """-log p(x) / (D ln 2) and its stderr, from the figure of log p(x) in nats."""
    per_nat = 1.0 / (dims * math.log(2.0))
    return Figure(-log_px.value * per_nat, log_px.stderr * per_nat)


def twin_name(name: str, prefix: str) -> str | None:
    """The bits/dim name of figure ``name`` under ``prefix``; None if it is no log p(x)."""
    if not name.startswith(LOG_PX) or name.endswith("_bias"):
        return None
    if prefix == "eval" and name in EVAL_TWINS:
        return EVAL_TWINS[name]
    return "bits_per_dim" + name.removeprefix(LOG_PX)


def add_bits_per_dim(result: StageResult, ctx: Context) -> None:
    """Give each log p(x) figure of ``result`` its bits/dim twin, where the model's likelihood
    is of discrete grey levels."""
    if ctx.model.likelihood.grey_levels is None:
        return
    dims = ctx.x.shape[-1]
    for name, figure in list(result.figures.items()):
        twin = twin_name(name, ctx.prefix)
        if twin is not None:
            result.figures[twin] = bits_per_dim(figure, dims)

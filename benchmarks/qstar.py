"""q* optimisation: ``vae_lab.estimators.gaps.fit_qstar`` on many datapoints at once against one
datapoint at a time.

fit_qstar optimises free posterior parameters theta [N, P] for N datapoints side by side (the
objective is the sum of their ELBOs). The batched run fits ``points`` datapoints (1,000, as
``eval.gap_points``); the loop fits ``loop_points`` of them one by one. Both run a fixed number
of steps from the encoder's output, with the convergence test switched off (its window is
longer than the run), so each step costs the same in both; the speed-up compares seconds per
datapoint-step (goal >= 10). Step size and samples per step are those of ``eval.qstar_*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.common import Bench, Goal, Result, interleaved
from vae_lab.estimators.gaps import QStarSettings, fit_qstar
from vae_lab.model.module import VAE


@dataclass
class Size:
    points: int = 1000
    loop_points: int = 10
    steps: int = 20
    repeats: int = 3


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(points=6, loop_points=2, steps=2, repeats=1)


def fit(model: VAE, x: torch.Tensor, settings: QStarSettings) -> None:
    with torch.no_grad():
        theta0 = model.posterior(model.encoder(x))
        prior = model.p_z()
    fit_qstar(model.posterior, prior, lambda rows: model.log_likelihood(x[rows]), theta0, settings)


def run(bench: Bench, size: Size) -> Result:
    model = bench.model()
    ev = bench.cfg.eval
    settings = QStarSettings(
        lr=ev.qstar_lr,
        num_samples=ev.qstar_samples,
        max_steps=size.steps,
        check_every=size.steps + 1,
    )
    x = bench.test_points(size.points)
    loop_x = x[: size.loop_points]
    seconds = interleaved(
        {
            "batched": lambda: fit(model, x, settings),
            "loop": lambda: [fit(model, loop_x[i : i + 1], settings) for i in range(len(loop_x))],
        },
        size.repeats,
    )
    batched = x.shape[0] * size.steps / seconds["batched"]
    loop = loop_x.shape[0] * size.steps / seconds["loop"]
    figures = {
        "points_batched": x.shape[0],
        "points_loop": loop_x.shape[0],
        "steps": size.steps,
        "samples_per_step": settings.num_samples,
        "point_steps_per_s_batched": batched,
        "point_steps_per_s_loop": loop,
        "speedup_vs_loop": batched / loop,
    }
    return Result(
        figures,
        [Goal("speedup_vs_loop", ">=", 10.0)],
        note=f"{size.steps} steps, medians of {size.repeats} interleaved runs",
    )

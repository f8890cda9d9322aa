"""AIS: ``vae_lab.estimators.ais.ais_log_px`` throughput in datapoint-chain-steps per second.

One AIS step is one HMC transition of every chain (``eval.ais_leapfrog_steps`` leapfrog steps,
each a forward and backward pass of the decoder); datapoints and chains form one batch, as in
``vae_lab.evaluate``. There is no reference to compare with; the figures give the rate and
what it means for ``vae_lab.evaluate``: seconds for 1,000 datapoints with ``eval.ais_chains``
chains over ``eval.ais_steps`` steps.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from benchmarks.common import Bench, Result, timed
from vae_lab.estimators.ais import ais_log_px
from vae_lab.model.module import VAE


@dataclass
class Size:
    points: int = 100
    steps: int = 5
    repeats: int = 2


#: a size that runs in a second or two: checks the code, not the speed
TINY = Size(points=3, steps=2, repeats=1)


def estimate(model: VAE, x: torch.Tensor, steps: int, chains: int, leapfrog: int) -> None:
    with torch.no_grad():
        q = model.q(x)
        prior = model.p_z()
    ais_log_px(q, prior, model.log_likelihood(x), steps, chains, leapfrog_steps=leapfrog)


def run(bench: Bench, size: Size) -> Result:
    model = bench.model()
    ev = bench.cfg.eval
    x = bench.test_points(size.points)
    args = (model, x, size.steps, ev.ais_chains, ev.ais_leapfrog_steps)
    seconds = statistics.median(timed(lambda: estimate(*args)) for _ in range(size.repeats))
    rate = x.shape[0] * ev.ais_chains * size.steps / seconds
    figures = {
        "points": x.shape[0],
        "chains": ev.ais_chains,
        "steps": size.steps,
        "leapfrog_steps": ev.ais_leapfrog_steps,
        "point_chain_steps_per_s": rate,
        "s_per_1000_points_at_eval_ais_steps": 1000 * ev.ais_chains * ev.ais_steps / rate,
    }
    return Result(figures, note=f"median of {size.repeats} runs")

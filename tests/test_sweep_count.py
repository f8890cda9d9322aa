"""The job count of a grid sweep (``vae_lab.records.sweep.expected_jobs``): the product of the
number of values of each swept override, from the command line and ``hydra.sweeper.params``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from omegaconf import DictConfig, OmegaConf

from vae_lab.records import sweep
from vae_lab.records.sweep import SweepSummary, expected_jobs


def sweep_config(overrides: list[str], params: dict[str, str] | None = None) -> DictConfig:
    """The part of a multirun's config that ``expected_jobs`` reads."""
    return OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": overrides},
                "sweeper": {"params": params},
                "sweep": {"dir": "/nonexistent/sweep"},
            }
        }
    )


@pytest.mark.parametrize(
    ("overrides", "jobs"),
    [
        (["posterior=gaussian,flow", "seed=0,1,2"], 6),
        (["x=[1,2],[3,4]"], 2),
        (["x='a,b'"], 1),
        (['x="a,b",c'], 2),
        (["x={a:1,b:2},{a:3}"], 2),
        (["x=a\\,b"], 1),
        (["seed=range(0,3)"], 3),
        (["seed=range(0,10,5)"], 2),
        (["seed=range(0, 3)", "posterior=gaussian,flow"], 6),
        (["+extra=1,2", "data.root=/here"], 2),
        ([], 1),
    ],
)
def test_the_jobs_of_a_sweep_are_the_product_of_its_value_counts(overrides, jobs):
    assert expected_jobs(sweep_config(overrides)) == jobs


def test_the_sweepers_params_count_and_the_command_line_replaces_them():
    params = {"posterior": "gaussian,flow,iaf", "seed": "0,1"}
    assert expected_jobs(sweep_config([], params)) == 6
    assert expected_jobs(sweep_config(["seed=0,1,2,3"], params)) == 12
    assert expected_jobs(sweep_config(["prior=standard,vamp"], params)) == 12


@pytest.mark.parametrize(
    "value",
    [
        "glob(*)",
        "choice(a,b)",
        "interval(0,1)",
        "tag(x,a,b)",
        "range(0,1,0.1)",
        "a,glob(g*)",
        "[1,2",
        "'a,b",
    ],
)
def test_a_sweep_it_cannot_count_raises(value):
    with pytest.raises(ValueError):
        expected_jobs(sweep_config([f"x={value}"]))


@pytest.fixture
def sweep_ended() -> Iterator[None]:
    """``on_multirun_start`` sets the process's sweep state and ``HYDRA_FULL_ERROR``, which the
    sweeps later tests start would inherit (a traceback where the launcher's failure is one
    line): end it as ``vae_lab.run.main`` does."""
    yield
    sweep.end_sweep()


@pytest.mark.usefixtures("sweep_ended")
def test_the_callback_counts_what_ran_when_it_cannot_count_the_sweep():
    sweep._expected_jobs[:] = [4]
    SweepSummary().on_multirun_start(sweep_config(["posterior=glob(*)"]))
    assert sweep._expected_jobs == []
    SweepSummary().on_multirun_start(sweep_config(["seed=range(0,3)", "posterior=a,b"]))
    assert sweep._expected_jobs == [6]
    sweep._expected_jobs.clear()

"""The evaluation pipeline's plumbing: which stages run, in which order, and their aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import compose_config
from vae_lab.config.validation import ConfigError
from vae_lab.evaluation import pipeline


def test_every_stage_file_is_found():
    files = {p.stem for p in (Path(pipeline.__file__).parent / "stages").glob("*.py")}
    assert set(pipeline.registry()) == files - {"__init__"}


def test_a_stage_runs_after_what_it_needs_and_uses():
    order = [s.name for s in pipeline.select(["bdmc", "qstar"])]
    assert order.index("iw") < order.index("ais") < order.index("bdmc")  # needs, added
    assert order.index("qstar") < order.index("ais")  # ais uses q* where it ran


def test_an_unknown_stage_is_one_line():
    with pytest.raises(ConfigError, match=r"^eval.stages=\[iw,nope\]: nope is not a stage"):
        pipeline.select(["iw", "nope"])


def test_the_old_switches_add_their_stages_to_evaluate_only():
    cfg = compose_config(["eval.bdmc=true", "eval.refit_prior=[mixture]"])
    assert pipeline.requested(cfg, "eval.stages")[-2:] == ["bdmc", "refit"]
    assert pipeline.requested(cfg, "eval.test_stages") == list(cfg.eval.test_stages)


def test_the_stages_configured_are_stages():
    cfg = compose_config()
    for key in ("eval.stages", "eval.test_stages"):
        names = [s.name for s in pipeline.select(pipeline.requested(cfg, key), key)]
        assert set(cfg.eval[key.split(".")[1]]) <= set(names)

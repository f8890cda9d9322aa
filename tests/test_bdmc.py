"""BDMC's warning; its bounds are checked against exact log p(x) in test_ppca_sizes.py."""

from __future__ import annotations

import logging

from vae_lab.estimators.bdmc import warn_if_uncertified
from vae_lab.estimators.estimate import Figure


def test_a_wide_bdmc_sandwich_warns_in_one_line(caplog):
    with caplog.at_level(logging.WARNING):
        assert not warn_if_uncertified(Figure(0.03, 0.02))  # not distinguishable from 0
        assert not warn_if_uncertified(Figure(0.05, 0.01), ais_stderr=0.1)  # within AIS's
        assert warn_if_uncertified(Figure(7.7, 2.9), ais_stderr=0.02)  # the 50-D case
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("eval/bdmc_gap = 7.700") and "eval.ais_steps" in message

"""BDMC's certificate; its bounds are checked against exact log p(x) in test_ppca_sizes.py
and test_self_checks.py."""

from __future__ import annotations

import logging
import math

from vae_lab.estimators.bdmc import certified
from vae_lab.estimators.estimate import Figure


def test_only_a_narrow_finite_sandwich_certifies_and_a_wide_one_says_so_in_one_line(caplog):
    lower = Figure(-155.8, 0.01)
    with caplog.at_level(logging.WARNING):
        assert certified(lower, Figure(-155.6, 0.05), 0.5, 500)  # 0.2 + 2 x 0.05 <= 0.5
        assert not certified(lower, Figure(-155.6, 0.2), 0.5, 500)  # within noise, not 0.5
        # the case: a sandwich as wide as its own (huge) stderr was certified
        assert not certified(lower, Figure(17_235.0, 10_839.0), 0.5, 500)
        assert not certified(lower, Figure(math.inf, math.nan), 0.5, 500)
        assert not certified(Figure(-math.inf, math.nan), Figure(-155.6, 0.05), 0.5, 500)
        assert not certified(Figure(-155.8, 0.6), Figure(-155.6, 0.05), 0.5, 500)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and all("\n" not in m for m in messages)
    assert "the sandwich is 1.739e+04 +- 1.1e+04 nats wide" in messages[1]
    assert "upper bound is not finite" in messages[2] and "lower bound is not" in messages[3]
    assert all("eval.bdmc_max_width = 0.5" in m and "eval.ais_steps" in m for m in messages)

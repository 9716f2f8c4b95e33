"""Intervals of reported metrics."""

from __future__ import annotations

import math

import pytest

from fl.metrics import wilson_interval


def test_wilson_interval_matches_the_formula_and_known_values():
    # 0 of 10: the upper end is z^2 / (n + z^2) (Wilson's closed form at p = 0)
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), pytest.approx(1.0))
    lo, hi = wilson_interval(29, 60)  # the demo's 0.483 on 60 prompts
    assert lo == pytest.approx(0.362, abs=5e-4) and hi == pytest.approx(0.607, abs=5e-4)  # by hand
    assert lo < 29 / 60 < hi
    a, b = wilson_interval(290, 600)  # ten times the prompts: about a third as wide
    assert (b - a) / (hi - lo) == pytest.approx(1 / math.sqrt(10), rel=0.05)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)

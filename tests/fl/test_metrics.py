"""Intervals of reported metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl.core.metrics import wilson_interval


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


# ----------------------------------------------------------------------------- paired
from fl.core.metrics import (Z95, PromptResults, mcnemar_exact_p, mean_interval,  # noqa: E402
                        newcombe_paired_interval, paired_bootstrap_interval, paired_counts,
                        paired_difference)


def _vectors(both: int, only_a: int, only_b: int, neither: int):
    """Correctness vectors of A and B with this paired 2x2 table (prompts in table order)."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


def test_newcombe_reproduces_the_published_example():
    """Newcombe (1998) Table II, example a = 36, b = 12, c = 2, d = 0 (n = 50, D = 0.2),
    method 10 (score, no continuity correction): 0.0569 to 0.3404."""
    lo, hi = newcombe_paired_interval(36, 12, 2, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.0569, 0.3404)


def test_newcombe_by_hand():
    """a, b, c, d = 10, 15, 5, 20 (n = 50), worked through the formula step by step."""
    z2 = Z95 ** 2
    assert z2 == pytest.approx(3.841459, abs=1e-6)
    # p1 = 25/50 = 0.5, p2 = 15/50 = 0.3, D = 0.2
    # Wilson of 25/50: centre (0.5 + z2/100) / (1 + z2/50) = 0.5 (p = 1/2 is symmetric);
    #   half = z * sqrt(0.25/50 + z2/10000) / (1 + z2/50) = 1.95996 * 0.0733767 / 1.0768292 = 0.1335549
    l1, u1 = 0.3664451, 0.6335549
    # Wilson of 15/50: centre (0.3 + 0.0384146) / 1.0768292 = 0.3142693;
    #   half = 1.95996 * sqrt(0.0042 + 0.000384146) / 1.0768292 = 0.1232342
    l2, u2 = 0.1910355, 0.4375035
    from fl.core.metrics import wilson_interval

    assert wilson_interval(25, 50) == (pytest.approx(l1, abs=1e-7), pytest.approx(u1, abs=1e-7))
    assert wilson_interval(15, 50) == (pytest.approx(l2, abs=1e-7), pytest.approx(u2, abs=1e-7))
    # phi = (a d - b c) / sqrt((a+b)(c+d)(a+c)(b+d)) = (200 - 75) / sqrt(25*25*15*35) = 125 / 572.822
    phi = 0.2182179
    # low:  (p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2
    #     = 0.1335549^2 - 2*0.2182179*0.1335549*0.1375035 + 0.1375035^2 = 0.0287293
    #   -> 0.2 - sqrt(0.0287293) = 0.2 - 0.1694972 = 0.0305028
    # high: (u1-p1)^2 - 2 phi (u1-p1)(p2-l2) + (p2-l2)^2
    #     = 0.1335549^2 - 2*0.2182179*0.1335549*0.1089645 + 0.1089645^2 = 0.0233588
    #   -> 0.2 + sqrt(0.0233588) = 0.2 + 0.1528359 = 0.3528359
    assert 125 / math.sqrt(25 * 25 * 15 * 35) == pytest.approx(phi, abs=1e-7)
    lo, hi = newcombe_paired_interval(10, 15, 5, 20)
    assert lo == pytest.approx(0.0305028, abs=1e-7) and hi == pytest.approx(0.3528359, abs=1e-7)


def test_newcombe_is_antisymmetric_and_inside_the_range():
    for table in [(36, 12, 2, 0), (10, 15, 5, 20), (0, 3, 0, 0), (1, 0, 0, 0), (0, 7, 9, 0)]:
        a, b, c, d = table
        lo, hi = newcombe_paired_interval(a, b, c, d)
        lo2, hi2 = newcombe_paired_interval(a, c, b, d)  # A and B swapped
        assert (lo2, hi2) == (pytest.approx(-hi), pytest.approx(-lo))
        assert -1 <= lo <= (b - c) / sum(table) <= hi <= 1


def test_newcombe_edge_cases():
    # no discordant prompts, both variants right and wrong somewhere: phi = 1, zero width
    assert newcombe_paired_interval(5, 0, 0, 5) == (0.0, 0.0)
    # no discordant prompts, all right: a margin is empty, phi = 0; +-(1 - Wilson low of 10/10)
    lo, hi = newcombe_paired_interval(10, 0, 0, 0)
    assert hi == pytest.approx(1 - 10 / (10 + Z95 ** 2)) and lo == pytest.approx(-hi)
    # all prompts discordant, all for A: D = 1, the upper end stays at 1
    lo, hi = newcombe_paired_interval(0, 10, 0, 0)
    assert hi == 1.0 and lo == pytest.approx(1 - math.hypot(1 - 10 / (10 + Z95 ** 2),
                                                            Z95 ** 2 / (10 + Z95 ** 2)))
    # n = 1: one prompt, right in both: +-(1 - 1/(1 + z^2)) = +-0.7935
    assert newcombe_paired_interval(1, 0, 0, 0) == (pytest.approx(-0.7934507), pytest.approx(0.7934507))
    assert newcombe_paired_interval(0, 1, 0, 0) == (pytest.approx(-0.1221087), 1.0)


@pytest.mark.parametrize("args, exc, match", [
    ((-1, 0, 0, 1), ValueError, r"'n_both' parameter of newcombe_paired_interval must be >= 0\. Got -1"),
    ((0, 1.5, 0, 1), TypeError, r"'n_only_a' parameter of newcombe_paired_interval must be an integer"),
    ((0, 0, 0, 0), ValueError, "at least one prompt"),
])
def test_newcombe_errors_name_the_argument(args, exc, match):
    with pytest.raises(exc, match=match):
        newcombe_paired_interval(*args)
    with pytest.raises(ValueError, match="'z' parameter"):
        newcombe_paired_interval(1, 0, 0, 0, z=0)


def test_mcnemar_exact_p_by_hand():
    # 15 vs 5 discordant: 2 * sum_{k<=5} C(20, k) / 2^20 = 2 * 21700 / 1048576
    assert sum(math.comb(20, k) for k in range(6)) == 21700
    assert mcnemar_exact_p(15, 5) == 2 * 21700 / 2 ** 20 == mcnemar_exact_p(5, 15)
    assert mcnemar_exact_p(12, 2) == 2 * (1 + 14 + 91) / 2 ** 14
    assert mcnemar_exact_p(0, 0) == 1.0  # no discordant prompts: no evidence either way
    assert mcnemar_exact_p(3, 3) == 1.0  # capped at 1
    assert mcnemar_exact_p(1, 0) == 1.0  # 2 * 1/2
    assert mcnemar_exact_p(10, 0) == 2 / 2 ** 10
    assert mcnemar_exact_p(600, 0) > 0  # big counts: exact integers, no overflow
    with pytest.raises(ValueError, match="'n_only_b' parameter of mcnemar_exact_p"):
        mcnemar_exact_p(1, -2)


def test_paired_counts_and_their_errors():
    a, b = _vectors(3, 2, 1, 4)
    assert paired_counts(a, b) == (3, 2, 1, 4)
    assert paired_counts(np.array(a, int), np.array(b, int)) == (3, 2, 1, 4)  # 0/1 as well
    with pytest.raises(ValueError, match=r"'correct_b' parameter of paired_counts has 9 prompts, "
                                         r"correct_a has 10"):
        paired_counts(a, b[:-1])
    with pytest.raises(ValueError, match=r"'correct_a' parameter of paired_counts must hold booleans"):
        paired_counts([0, 2], [0, 1])
    with pytest.raises(ValueError, match=r"'correct_a' parameter .* 1-d vector"):
        paired_counts([[True]], [[True]])


def test_paired_bootstrap_is_seeded_and_agrees_with_newcombe():
    a, b = _vectors(180, 60, 30, 130)  # n = 400, D = 0.075
    first = paired_bootstrap_interval(a, b, seed=3)
    assert paired_bootstrap_interval(a, b, seed=3) == first  # deterministic
    # the seed reaches the draws (1000 resamples: the quantiles fall between grid steps)
    assert (paired_bootstrap_interval(a, b, n_boot=1000, seed=0)
            != paired_bootstrap_interval(a, b, n_boot=1000, seed=1))
    lo, hi = newcombe_paired_interval(180, 60, 30, 130)
    assert first[0] < 0.075 < first[1]
    assert first == (pytest.approx(lo, abs=0.01), pytest.approx(hi, abs=0.01))  # large n: they agree
    # the prompts' order does not matter to the distribution, only the pairs do
    perm = np.random.default_rng(0).permutation(400)
    shuffled = paired_bootstrap_interval(np.array(a)[perm], np.array(b)[perm], seed=3)
    assert shuffled == (pytest.approx(first[0], abs=0.01), pytest.approx(first[1], abs=0.01))


def test_paired_bootstrap_edge_cases_and_errors():
    assert paired_bootstrap_interval(*_vectors(5, 0, 0, 5)) == (0.0, 0.0)  # nothing discordant
    assert paired_bootstrap_interval(*_vectors(0, 4, 0, 0)) == (1.0, 1.0)  # all for A
    assert paired_bootstrap_interval([True], [False]) == (1.0, 1.0)  # n = 1
    with pytest.raises(ValueError, match="at least one prompt"):
        paired_bootstrap_interval([], [])
    with pytest.raises(ValueError, match="'n_boot' parameter of paired_bootstrap_interval must be >= 1"):
        paired_bootstrap_interval([True], [False], n_boot=0)
    with pytest.raises(ValueError, match="'level' parameter"):
        paired_bootstrap_interval([True], [False], level=1.0)


def test_paired_difference_bundles_the_three():
    a, b = _vectors(36, 12, 2, 0)
    d = paired_difference(a, b, n_boot=2000, seed=1)
    assert (d.n, d.n_only_a, d.n_only_b) == (50, 12, 2)
    assert (d.accuracy_a, d.accuracy_b, d.difference) == (0.96, 0.76, pytest.approx(0.2))
    assert (d.lo, d.hi) == newcombe_paired_interval(36, 12, 2, 0)
    assert (d.bootstrap_lo, d.bootstrap_hi) == paired_bootstrap_interval(a, b, 2000, 1)
    assert d.p_value == mcnemar_exact_p(12, 2)
    with pytest.raises(ValueError, match="at least one prompt"):
        paired_difference([], [])


def test_mean_interval_is_the_student_t_interval():
    mean, lo, hi = mean_interval([0.4, 0.5, 0.45])
    # sd = 0.05, k = 3, t(0.975, 2) = 4.302653: half = 4.302653 * 0.05 / sqrt(3) = 0.1242069
    assert mean == pytest.approx(0.45)
    assert (lo, hi) == (pytest.approx(0.45 - 0.1242069), pytest.approx(0.45 + 0.1242069))
    assert mean_interval([0.3, 0.3]) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_interval([0.3])
    with pytest.raises(ValueError, match="must be finite"):
        mean_interval([0.3, float("nan")])


def test_prompt_results_checks_its_lengths():
    with pytest.raises(ValueError, match="PromptResults.correct has 1 entries, prompt has 2"):
        PromptResults(np.array([0, 1]), np.array([True]), np.array([0, 1]), np.array([0, 1]), ("x", "y"))

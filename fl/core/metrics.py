"""Intervals of the metrics fedwave reports (torch-free).

Every accuracy is a proportion of test prompts answered right, so it carries the Wilson
score interval (E. B. Wilson, JASA 22(158), 1927): unlike the normal approximation it stays
inside [0, 1] and keeps its coverage for small test sets and accuracies near 0 or 1.

Two variants scored on the *same* test prompts are compared pairwise: what counts is the
prompts on which they disagree (the discordant pairs), not the two accuracies apart. For
the difference of their accuracies fedwave gives

- the Newcombe interval (R. G. Newcombe, "Improved confidence intervals for the difference
  between binomial proportions based on paired data", Statistics in Medicine 17, 1998,
  2635-2650, method 10): the two Wilson intervals combined with the phi correlation of the
  paired outcomes (:func:`newcombe_paired_interval`);
- a paired bootstrap over the prompts, seeded (:func:`paired_bootstrap_interval`);
- the exact McNemar test of equal accuracies: a two-sided binomial test of the discordant
  pairs (:func:`mcnemar_exact_p`).

:func:`paired_difference` computes all three from two per-prompt correctness vectors.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Z95", "wilson_interval", "PromptResults", "paired_counts", "newcombe_paired_interval",
           "mcnemar_exact_p", "paired_bootstrap_interval", "PairedDifference", "paired_difference",
           "mean_interval"]

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of ``successes`` out of ``n`` trials.

    Raises ``ValueError`` when ``n`` < 1 or ``successes`` lies outside [0, n].
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1. Got "
                         f"successes={successes!r}, n={n!r} instead.")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PromptResults:
    """How one evaluation scored each test prompt (what pairs two runs later).

    prompt: (N,) int64, the dataset index of each test prompt.
    correct: (N,) bool, the true label ranked first.
    label, predicted: (N,) int64 label indices (the truth, the label ranked first).
    label_names: the names of the label indices.
    """

    prompt: np.ndarray
    correct: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.prompt)
        for name in ("correct", "label", "predicted"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PromptResults.{name} has {len(getattr(self, name))} entries, "
                                 f"prompt has {n}. Fix: one entry per prompt.")


def _count(name: str, func: str, value) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"The '{name}' parameter of {func} must be an integer count. Got "
                        f"{value!r} instead.") from None
    if v < 0:
        raise ValueError(f"The '{name}' parameter of {func} must be >= 0. Got {v} instead.")
    return v


def _bool_vector(name: str, func: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"The '{name}' parameter of {func} must be a 1-d vector of per-prompt "
                         f"outcomes. Got an array of shape {arr.shape} instead.")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"The '{name}' parameter of {func} must hold booleans (or 0/1). "
                             f"Got values {sorted(set(arr.tolist()) - {0, 1})[:3]} instead.")
        arr = arr.astype(bool)
    return arr


def _pair(correct_a, correct_b, func: str) -> tuple[np.ndarray, np.ndarray]:
    a = _bool_vector("correct_a", func, correct_a)
    b = _bool_vector("correct_b", func, correct_b)
    if a.shape != b.shape:
        raise ValueError(f"The 'correct_b' parameter of {func} has {b.size} prompts, correct_a "
                         f"has {a.size}: they must score the same prompts in the same order. "
                         "Fix: align them by prompt first.")
    return a, b


def paired_counts(correct_a, correct_b) -> tuple[int, int, int, int]:
    """The paired 2×2 table of two variants on the same prompts, in Newcombe's order
    ``(n_both, n_only_a, n_only_b, n_neither)`` (his a, b, c, d): right in both, right only
    in A, right only in B, right in neither.

    correct_a, correct_b: (N,) bool (or 0/1), entry i for the same prompt i.
    """
    a, b = _pair(correct_a, correct_b, "paired_counts")
    return (int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)), int(np.sum(~a & ~b)))


def newcombe_paired_interval(n_both: int, n_only_a: int, n_only_b: int, n_neither: int,
                             z: float = Z95) -> tuple[float, float]:
    """(low, high) of the difference ``accuracy_A − accuracy_B`` of paired outcomes (Newcombe
    1998, method 10: the score interval without continuity correction).

    With n = the four counts' sum, p1 = (n_both + n_only_a) / n, p2 = (n_both + n_only_b) / n,
    D = p1 − p2, the Wilson intervals (l1, u1) of p1 and (l2, u2) of p2, and
    phi = (n_both·n_neither − n_only_a·n_only_b) / sqrt of the product of the four margins
    (0 when a margin is empty):

        low  = D − sqrt((p1 − l1)² − 2·phi·(p1 − l1)·(u2 − p2) + (u2 − p2)²)
        high = D + sqrt((u1 − p1)² − 2·phi·(u1 − p1)·(p2 − l2) + (p2 − l2)²)

    Counts are numbers of prompts; the interval lies in [−1, 1] (clipped against rounding).
    """
    func = "newcombe_paired_interval"
    a, b, c, d = (_count(k, func, v) for k, v in (("n_both", n_both), ("n_only_a", n_only_a),
                                                  ("n_only_b", n_only_b), ("n_neither", n_neither)))
    n = a + b + c + d
    if n < 1:
        raise ValueError(f"{func} needs at least one prompt (the four counts sum to 0). Fix: "
                         "score at least one prompt.")
    if not z > 0:
        raise ValueError(f"The 'z' parameter of {func} must be > 0. Got {z!r} instead.")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(margins) if margins else 0.0
    diff = p1 - p2
    low = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = diff + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, low), min(1.0, high)


def mcnemar_exact_p(n_only_a: int, n_only_b: int) -> float:
    """Two-sided exact McNemar p-value of equal accuracies: under the null each of the
    ``n_only_a + n_only_b`` discordant prompts favours A or B with probability 1/2, so
    p = min(1, 2·P(X <= min(n_only_a, n_only_b))), X ~ Binomial(n_only_a + n_only_b, 1/2);
    1.0 without discordant prompts."""
    b = _count("n_only_a", "mcnemar_exact_p", n_only_a)
    c = _count("n_only_b", "mcnemar_exact_p", n_only_b)
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** m)  # exact integers, one correctly rounded division


def paired_bootstrap_interval(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of ``accuracy_A − accuracy_B`` from ``n_boot`` resamples
    of the prompts (with replacement, each keeping A's and B's outcome on it together).

    correct_a, correct_b: (N,) bool, entry i for the same prompt i. The resamples are drawn
    from ``numpy.random.default_rng(seed)`` in a fixed order: the same inputs and seed give
    the same interval.
    """
    func = "paired_bootstrap_interval"
    a, b = _pair(correct_a, correct_b, func)
    diff = a.astype(np.int8) - b.astype(np.int8)  # (N,) in {-1, 0, 1}
    n = diff.size
    if n < 1:
        raise ValueError(f"{func} needs at least one prompt. Got empty vectors.")
    n_boot = _count("n_boot", func, n_boot)
    if n_boot < 1:
        raise ValueError(f"The 'n_boot' parameter of {func} must be >= 1. Got {n_boot} instead.")
    if not 0 < level < 1:
        raise ValueError(f"The 'level' parameter of {func} must be in (0, 1). Got {level!r} instead.")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # resamples per draw: a few MB at a time
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))  # (chunk, N) resampled prompts
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    """``accuracy_a − accuracy_b`` of two variants on the same ``n`` prompts.

    n_only_a / n_only_b: prompts only A / only B answered right (the discordant pairs).
    lo, hi: Newcombe's 95 % interval (method 10); bootstrap_lo, bootstrap_hi: the paired
    bootstrap's; p_value: the exact McNemar test of equal accuracies.
    """

    n: int
    n_only_a: int
    n_only_b: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    lo: float
    hi: float
    bootstrap_lo: float
    bootstrap_hi: float
    p_value: float


def paired_difference(correct_a, correct_b, n_boot: int = 10_000, seed: int = 0) -> PairedDifference:
    """Everything :class:`PairedDifference` holds, from two per-prompt correctness vectors
    (entry i for the same prompt i; see :func:`paired_counts`)."""
    both, only_a, only_b, neither = paired_counts(correct_a, correct_b)
    n = both + only_a + only_b + neither
    if n < 1:
        raise ValueError("paired_difference needs at least one prompt. Got empty vectors.")
    lo, hi = newcombe_paired_interval(both, only_a, only_b, neither)
    blo, bhi = paired_bootstrap_interval(correct_a, correct_b, n_boot, seed)
    return PairedDifference(n=n, n_only_a=only_a, n_only_b=only_b,
                            accuracy_a=(both + only_a) / n, accuracy_b=(both + only_b) / n,
                            difference=(only_a - only_b) / n, lo=lo, hi=hi,
                            bootstrap_lo=blo, bootstrap_hi=bhi,
                            p_value=mcnemar_exact_p(only_a, only_b))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` (e.g. one final accuracy per seed) with its
    Student-t interval, mean ± t(level, k − 1)·sd/√k over the k values. It measures how much
    the result moves from seed to seed (training, data split, network), not the test-prompt
    noise of each run. Needs k >= 2."""
    vals = np.asarray(values, dtype=float)
    if vals.ndim != 1 or vals.size < 2:
        raise ValueError(f"The 'values' parameter of mean_interval needs at least 2 values (one "
                         f"per seed). Got {vals.size}. Fix: run more seeds, or report the single "
                         "run's own interval.")
    if not np.isfinite(vals).all():
        raise ValueError(f"The 'values' parameter of mean_interval must be finite. Got "
                         f"{vals.tolist()} instead.")
    if not 0 < level < 1:
        raise ValueError(f"The 'level' parameter of mean_interval must be in (0, 1). Got {level!r} instead.")
    from scipy.stats import t as student_t

    k = vals.size
    mean = float(vals.mean())
    half = float(student_t.ppf(0.5 + level / 2, k - 1) * vals.std(ddof=1) / math.sqrt(k))
    return mean, mean - half, mean + half

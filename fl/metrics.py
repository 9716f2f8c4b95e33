"""Intervals of the metrics fedwave reports (torch-free).

Every accuracy is a proportion of test prompts answered right, so it carries the Wilson
score interval (E. B. Wilson, JASA 22(158), 1927): unlike the normal approximation it stays
inside [0, 1] and keeps its coverage for small test sets and accuracies near 0 or 1.
"""

from __future__ import annotations

import math

__all__ = ["Z95", "wilson_interval"]

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

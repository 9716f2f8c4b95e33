"""What the verdict benchmarks share (bench/kd_comm.py, bench/fedsoda_vs_fedavg.py,
bench/frameworks.py): the default test split, and how accuracies and paired differences
are printed.

- **The test split.** A benchmark's default ``n_test`` is the largest the scenario's data
  allows (:func:`default_n_test`): the balanced test split (``fl.partition.holdout_split``)
  grows until one more prompt would leave some label fewer training examples than the test
  takes from it (``fl.partition.largest_test_split``, on the run's own split stream), capped
  at :data:`N_TEST_3PT`, the size that gives a ±3-point 95 % Wilson half-width at 50 %
  accuracy. On the embedded fortunes the scarcest label (unix, 44–48 fortunes) caps a
  balanced split near 120–140 prompts (±8 points), whatever ``max_per_class`` is; the
  benchmarks print this.
- **Accuracies** carry their 95 % Wilson interval (``0.412 [0.325, 0.505]``).
- **Paired differences** of final accuracy (A − B, the same test prompts, from the runs'
  ``eval.parquet``) are in accuracy points with Newcombe's 95 % interval (1998, method 10;
  :func:`sim.compare.paired_final`): ``+1.7 [-4.2, +7.5]``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["N_TEST_3PT", "default_n_test", "n_test_note", "acc_text", "points_text",
           "pct_change", "wilson_half_width"]


def wilson_half_width(n: int, p: float = 0.5) -> float:
    """Half the width of the 95 % Wilson interval of a proportion ``p`` on ``n`` prompts."""
    from fl.metrics import wilson_interval

    lo, hi = wilson_interval(round(p * n), n)
    return (hi - lo) / 2


def _n_3pt() -> int:
    n = 100
    while wilson_half_width(n) > 0.03:
        n += 1
    return n


#: Test prompts that give a ±3-point 95 % Wilson half-width at 50 % accuracy.
N_TEST_3PT = _n_3pt()


def default_n_test(scenario) -> tuple[int, str]:
    """(n_test, a sentence saying why) for ``scenario``'s ``fl.options.data``: the largest
    balanced test split its data allows (see the module docstring), at most
    :data:`N_TEST_3PT`. The split stream is the run's (``data_seed``, else the scenario's
    seed), so the answer is exact for that seed's public split."""
    import numpy as np

    from fl.data import load_dataset
    from fl.partition import largest_test_split
    from fl.seeding import numpy_stream

    opts = scenario.fl.options
    data = opts.data
    root = scenario.seed if getattr(opts, "data_seed", None) is None else opts.data_seed
    ds = load_dataset(data)
    n = largest_test_split(ds.labels, data.n_public, lambda: numpy_stream(root, "holdout"),
                           cap=N_TEST_3PT)
    if n < 1:
        raise ValueError(f"fl.options.data of {scenario.name}: no balanced test split leaves every "
                         "label at least as many training examples as it tests. Fix: widen "
                         "data.min_chars/max_chars or lower data.n_public.")
    counts = np.bincount(ds.labels, minlength=len(ds.label_names))
    k = int(np.argmin(counts))
    return n, n_test_note(n, ds.label_names[k], int(counts[k]))


def n_test_note(n: int, scarce: str | None = None, count: int | None = None) -> str:
    """The sentence a benchmark prints about its test split of ``n`` prompts."""
    half = 100 * wilson_half_width(n)
    if n >= N_TEST_3PT:
        return (f"test split: {n} prompts (±{half:.1f} points, 95 % Wilson half-width at 50 %: the "
                f"±3-point aim)")
    why = (f"the most the data allows: a larger balanced split would leave label {scarce!r} "
           f"({count} examples in all) fewer training examples than test prompts"
           if scarce is not None else "as set")
    return (f"test split: {n} prompts ({why}); ±{half:.1f} points (95 % Wilson half-width at 50 %) "
            f"— the ±3-point aim needs {N_TEST_3PT}, which this data does not allow")


def acc_text(acc: Any, lo: Any = None, hi: Any = None) -> str:
    """``0.412 [0.325, 0.505]`` (an accuracy with its 95 % Wilson interval), ``—`` for none."""
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "—"
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{acc:.3f}"
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def points_text(d) -> str:
    """A :class:`fl.metrics.PairedDifference` in accuracy points with Newcombe's 95 %
    interval: ``+1.7 [-4.2, +7.5]``."""
    return f"{100 * d.difference:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"


def pct_change(new: float, base: float) -> str:
    """``-48.2 %`` (``new`` relative to ``base``; the sign is what was measured), ``nan %``
    when there is no base."""
    if not base or math.isnan(base) or math.isnan(new):
        return "nan %"
    return f"{100 * (new / base - 1):+.1f} %"

"""What the verdict benchmarks share (bench/kd_comm.py, bench/fedsoda_vs_fedavg.py,
bench/frameworks.py): the default test split, and how accuracies and paired differences
are printed.

- **The test split.** A benchmark's default ``n_test`` is ``auto`` (:func:`default_n_test`,
  ``fl.lm.partition.auto_test_size``): up to 1,000 prompts, at most half of each label's
  examples, so no label keeps fewer training examples than it tests. On the embedded
  fortunes at 200 per label (unix: 44, startrek: 153) and 128 public prompts that is ~430 (±4.7 points);
  the benchmarks print the number.
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
    from fl.core.metrics import wilson_interval

    lo, hi = wilson_interval(round(p * n), n)
    return (hi - lo) / 2


def _n_3pt() -> int:
    n = 100
    while wilson_half_width(n) > 0.03:
        n += 1
    return n


#: Test prompts that give a ±3-point 95 % Wilson half-width at 50 % accuracy.
N_TEST_3PT = _n_3pt()


def default_n_test(scenario) -> tuple[int | str, str]:
    """(n_test, a sentence saying why) for ``scenario``'s ``fl.options.data``: ``"auto"``
    (``fl.lm.partition.auto_test_size``: up to 1,000 prompts, at most half of each label's
    examples, so no label keeps fewer training examples than it tests), with the number of
    prompts that gives on this data in the sentence."""
    from fl.lm.data import load_dataset
    from fl.lm.partition import AUTO_TEST_MAX, holdout_split
    from fl.core.seeding import numpy_stream

    data = scenario.fl.options.data
    opts = scenario.fl.options
    ds = load_dataset(data)
    root = scenario.seed if getattr(opts, "data_seed", None) is None else opts.data_seed
    try:  # the run's own split stream: the exact number
        n = len(holdout_split(ds.labels, "auto", data.n_public, numpy_stream(root, "holdout"))[2])
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"fl.options.data of {scenario.name}: no label has two examples to split "
                         "between training and test. Fix: widen data.min_chars/max_chars.")
    half = 100 * wilson_half_width(n)
    if n >= AUTO_TEST_MAX:
        return "auto", f"test split: auto, {n} prompts (±{half:.1f} points, 95 % Wilson half-width at 50 %)"
    return "auto", (f"test split: auto, {n} prompts — the most this data allows with at most half of each "
                    f"label's examples in the test; ±{half:.1f} points (95 % Wilson half-width at 50 %)")


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
    """A :class:`fl.core.metrics.PairedDifference` in accuracy points with Newcombe's 95 %
    interval: ``+1.7 [-4.2, +7.5]``."""
    return f"{100 * d.difference:+.1f} [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"


def pct_change(new: float, base: float) -> str:
    """``-48.2 %`` (``new`` relative to ``base``; the sign is what was measured), ``nan %``
    when there is no base."""
    if not base or math.isnan(base) or math.isnan(new):
        return "nan %"
    return f"{100 * (new / base - 1):+.1f} %"

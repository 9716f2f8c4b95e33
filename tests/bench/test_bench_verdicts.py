"""The verdict lines of bench/kd_comm.py, bench/fedsoda_vs_fedavg.py and bench/frameworks.py,
computed from hand-made run directories (eval.parquet) and rows: the exact formats, the paired
differences against Newcombe's interval of the counts, and the learns / does-not-learn rule.
The --quick end-to-end run of bench/frameworks.py is test_bench_frameworks.py."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fl.core.metrics import newcombe_paired_interval, paired_counts

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


kd_comm = _script("kd_comm")
soda = _script("fedsoda_vs_fedavg")
frameworks = _script("frameworks")
benchlib = sys.modules["benchlib"]

N = 120
RNG = np.random.default_rng(0)
TRUTH = RNG.integers(0, 6, size=N)


def _run(tmp_path: Path, name: str, correct: np.ndarray, prompts=None) -> str:
    """A run directory holding only eval.parquet: an untrained evaluation (round -1) and the
    final one (round 5) with ``correct``."""
    d = tmp_path / name
    d.mkdir()
    prompts = np.arange(N) * 3 if prompts is None else prompts
    rows = []
    for rnd, corr in ((-1, np.zeros(N, bool)), (5, correct)):
        pred = np.where(corr, TRUTH, (TRUTH + 1) % 6)
        rows.append(pd.DataFrame({"round": np.full(N, rnd, np.int32), "prompt": prompts, "correct": corr,
                                  "label": TRUTH, "predicted": pred}))
    pd.concat(rows).to_parquet(d / "eval.parquet")
    return str(d)


def _kd_row(run_dir: str, up: float, acc: float) -> dict:
    return {"run_dir": run_dir, "up_bits_per_round": up, "final_loss": 1.0, "best_acc": acc, "final_acc": acc,
            "initial_acc": 0.2, "k_mean": 40.0, "teacher_by_round": {}}


def _expected(a: np.ndarray, b: np.ndarray) -> str:
    lo, hi = newcombe_paired_interval(*paired_counts(a, b))
    return f"{100 * (a.mean() - b.mean()):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def test_kd_comm_verdict_line_pairs_the_final_evaluations(tmp_path):
    adaptive = RNG.random(N) < 0.45
    fixed = np.where(RNG.random(N) < 0.8, adaptive, ~adaptive)  # mostly the same prompts right
    zero_pad = RNG.random(N) < 0.30
    rows = {"full": _kd_row(_run(tmp_path, "full", adaptive), 40e6, 0.4),
            "fixed": _kd_row(_run(tmp_path, "fixed", fixed), 800e3, 0.4),
            "adaptive_zero_pad": _kd_row(_run(tmp_path, "zp", zero_pad), 404e3, 0.3),
            "adaptive_adaptive": _kd_row(_run(tmp_path, "aa", adaptive), 400e3, 0.45)}
    aims, line = kd_comm.verdict(rows)
    assert line == (f"P1 verdict: uplink -50.0 % vs fixed k, -99.0 % vs full; accuracy difference "
                    f"{_expected(adaptive, fixed)} vs fixed k; vs zero_pad {_expected(adaptive, zero_pad)}")
    assert re.fullmatch(r"P1 verdict: uplink [-+]\d+\.\d % vs fixed k, [-+]\d+\.\d % vs full; accuracy "
                        r"difference [-+]\d+\.\d \[[-+]\d+\.\d, [-+]\d+\.\d\] vs fixed k; vs zero_pad "
                        r"[-+]\d+\.\d \[[-+]\d+\.\d, [-+]\d+\.\d\]", line)
    text = "\n".join(aims)
    assert "vs full logits : uplink 99.0 % less (aim ≥ 50 %: met); accuracy +0.0 [" in text
    assert "equal bits vs zero_pad: adaptive aggregation 400 kbit/round (mean k 40.0), zero_pad 404 kbit" in text


def test_kd_comm_verdict_says_why_a_pair_is_missing(tmp_path):
    a = RNG.random(N) < 0.5
    rows = {"fixed": _kd_row(_run(tmp_path, "fixed", a, prompts=np.arange(N) * 5), 800e3, 0.5),
            "adaptive_adaptive": _kd_row(_run(tmp_path, "aa", a), 400e3, 0.5)}
    _, line = kd_comm.verdict(rows)
    assert line.startswith("P1 verdict: uplink -50.0 % vs fixed k, n/a vs full; accuracy difference n/a (")
    assert "scored on different test prompts" in line and line.endswith("vs zero_pad n/a")
    _, line = kd_comm.verdict({"fixed": rows["fixed"]})
    assert line.startswith("P1 verdict: uplink n/a vs fixed k, n/a vs full; accuracy difference n/a vs fixed k; "
                           "vs zero_pad n/a")


def test_fedsoda_verdict_line():
    pair = {"status": "paired", "difference": 0.031, "difference_lo": -0.052, "difference_hi": 0.113}
    s = {"bits_total": 29.4e6, "bits_up": 2e6, "bits_down": 27.4e6, "storage": 24.4e6}
    a = {"bits_total": 100e6, "bits_up": 7e6, "bits_down": 93e6, "storage": 100e6}
    aims, line = soda.verdict(s, a, pair)
    assert line == "P2 verdict: communication -70.6 %, storage -75.6 %, accuracy difference +3.1 [-5.2, +11.3]"
    assert aims.startswith("aims [P2]: communication ≤ −70 %: met (-70.6 %; per round: uplink -71.4 %")
    assert aims.endswith("storage ≤ −75 %: met (-75.6 %); accuracy: not significantly lower: met")
    _, line = soda.verdict({**s, "storage": 90e6}, a, {"status": "not paired", "note": "x failed"})
    assert line == "P2 verdict: communication -70.6 %, storage -10.0 %, accuracy difference n/a (x failed)"


@pytest.mark.parametrize("lo, u_hi, expect", [(0.31, 0.30, True), (0.30, 0.30, False), (0.1, 0.3, False),
                                              (0.5, math.nan, False)])
def test_learns_iff_the_final_lower_bound_is_above_the_untrained_upper_bound(lo, u_hi, expect):
    assert frameworks.learns({"lo": lo}, u_hi) is expect


def test_the_untrained_model_is_the_full_models_first_evaluation():
    rows = [{"algorithm": "fedsoda", "initial": 0.1, "initial_lo": 0.05, "initial_hi": 0.2},
            {"algorithm": "kd_topk", "initial": 0.27, "initial_lo": 0.2, "initial_hi": 0.35}]
    assert frameworks.untrained(rows) == (0.27, 0.2, 0.35, "kd_topk's first evaluation")
    assert frameworks.untrained(rows[:1]) == (0.1, 0.05, 0.2, "fedsoda's first evaluation")


def test_benchlib_test_split_sizes_and_notes():
    assert benchlib.wilson_half_width(benchlib.N_TEST_3PT) <= 0.03 < benchlib.wilson_half_width(
        benchlib.N_TEST_3PT - 1)
    assert benchlib.n_test_note(2000).startswith("test split: 2000 prompts (±2.2 points")
    note = benchlib.n_test_note(118, "unix", 44)
    assert "label 'unix' (44 examples in all)" in note and "±8.9 points" in note
    assert benchlib.pct_change(50.0, 100.0) == "-50.0 %" and benchlib.pct_change(1.0, 0.0) == "nan %"

"""sim/kernels.py: the compiled loops and their numpy twins give the same floats, bit for bit.

The simulator's outputs must not depend on whether numba is installed (``kernels.JIT``), so
every kernel is run both ways on random pools — outages (zero rates), ties, flows that
finish in the first block, in a later one or never, a last block that never ends — and the
results are compared with ``np.array_equal`` (no tolerance). Where numba is missing the
pure-Python loops (``kernels.LOOPS``, what numba compiles) stand in for the compiled ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim import kernels

PAIRS = ["plan_cum", "next_change", "settle", "equal_shares", "merge_sub", "positive"]


def _compiled(name):
    """The compiled kernel (the loop itself where numba is missing)."""
    return getattr(kernels, name) if kernels.load() else kernels.LOOPS[name]


def _twin(name):
    return getattr(kernels, f"{name}_np")


def _pool(rng, n, n_h, *, never_ends=False, outages=True):
    """A random pool: block edges from ``now`` (the first block partial), full-band rates
    with outages, the MAC's rates and time shares, and the flows' state at the plan's start."""
    now = float(rng.uniform(0, 10))
    starts = now + np.cumsum(rng.uniform(0.005, 0.05, n_h))  # ends of blocks 0..H-1
    edges = np.concatenate([[now], starts])
    if never_ends:
        edges[-1] = np.inf
    full = rng.uniform(1e5, 5e7, (n, n_h))
    if outages:
        full[rng.random((n, n_h)) < 0.2] = 0.0
    full[:, rng.integers(n_h)] = full[0, 0]  # ties across flows
    tf = (full > 0).astype(np.float64) * rng.choice([1.0, 0.5, 0.25], (n, 1))
    rate = full * tf
    bits = rng.uniform(1e4, 3e6, n).round()
    sent0 = bits * rng.uniform(0, 0.9, n)
    state = np.stack([sent0, rng.uniform(0, 2, n), rng.uniform(0, 5, n), rng.uniform(0.1, 3, n), bits])
    return now, edges, full, rate, tf, state


def _same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.array_equal(a, b, equal_nan=True), np.flatnonzero(a != b)[:5]
    else:
        assert type(a) in (type(b), float, int, bool, np.float64, np.int64, np.bool_)
        assert a == b or (a != a and b != b), (a, b)


@pytest.mark.parametrize("seed", range(40))
def test_compiled_kernels_equal_their_numpy_twins(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 5, 48]))
    n_h = int(rng.choice([1, 2, 16, 18]))
    now, edges, full, rate, tf, state = _pool(rng, n, n_h, never_ends=seed % 7 == 0, outages=seed % 5 != 0)
    for name in ("plan_cum",):
        _same(_compiled(name)(rate, edges.copy()), _twin(name)(rate, edges.copy()))
    dt, cum = _twin("plan_cum")(rate, edges.copy())
    _same(_compiled("next_change")(rate, full, cum, edges, state[0], state[4], now),
          _twin("next_change")(rate, full, cum, edges, state[0], state[4], now))
    # at the plan's start, inside a later block, on a block edge, at the end
    times = [now, float(rng.uniform(now, min(edges[-2] if n_h > 1 else now + 1, 1e6))), float(edges[min(1, n_h)])]
    for t in times:
        if np.isfinite(t):
            _same(_compiled("settle")(edges, rate, tf, dt, cum, state, t), _twin("settle")(edges, rate, tf, dt, cum, state, t))
    _same(_compiled("equal_shares")(full), _twin("equal_shares")(full))
    r, frac, _ = _twin("equal_shares")(full)
    r_sub = full * frac * rng.uniform(0.9, 1.1, full.shape)
    _same(_compiled("merge_sub")(r, frac, r_sub), _twin("merge_sub")(r, frac, r_sub))
    _same(_compiled("positive")(rate), _twin("positive")(rate))


def test_a_delivered_flow_and_a_crossing_are_found_exactly():
    """Hand-made: 2 flows, blocks of 1 s from t = 0; flow 1 needs 2.5 blocks at 1 bit/s."""
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    rate = np.array([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    state = np.array([[0.0, 0.0], [0, 0], [0, 0], [1.0, 1.0], [10.0, 2.5]])
    for fn in (_compiled("next_change"), _twin("next_change")):
        dt, cum = _twin("plan_cum")(rate, edges.copy())
        assert fn(rate, rate, cum, edges, state[0], state[4], 0.0) == 2.5  # flow 1 at 2.5 s
        done = state.copy()
        done[0, 1] = 2.5  # flow 1 delivered already: a change point now
        assert fn(rate, rate, cum, edges, done[0], done[4], 0.0) == 0.0
        out = rate.copy()
        out[0, 1:] = 0.0  # flow 0 enters outage at block 1 (t = 1 s) before flow 1 finishes
        dt, cum = _twin("plan_cum")(out, edges.copy())
        assert fn(out, out, cum, edges, state[0], state[4], 0.0) == 1.0
    h, st = _compiled("settle")(edges, rate, (rate > 0) * 1.0, dt, _twin("plan_cum")(rate, edges.copy())[1], state, 1.5)
    assert h == 1 and st[0].tolist() == [3.0, 1.5] and st[1].tolist() == [1.5, 1.5]


def test_which_one_runs_is_named():
    """kernels.JIT is True exactly when the engine's kernels are the compiled ones."""
    jit = kernels.load()
    assert kernels.JIT is jit
    if jit:
        assert kernels.plan_cum is not kernels.plan_cum_np and hasattr(kernels.plan_cum, "py_func")
    else:
        assert kernels.plan_cum is kernels.plan_cum_np


def _child(code: str, **env) -> str:
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root, **env}, check=True)
    return out.stdout.strip()


def test_numba_is_imported_at_the_first_transfer_not_with_the_cli():
    """Validating a scenario (the CLI and the engine imported) does not import numba; the
    first kernel call decides, and FEDWAVE_JIT=0 picks the numpy twins."""
    code = ("import sys, numpy as np, sim.cli, sim.network; from sim import kernels; "
            "before = 'numba' in sys.modules; "
            "kernels.plan_cum(np.ones((2, 3)), np.arange(4.0)); "
            "print(before, kernels.JIT, kernels.plan_cum is kernels.plan_cum_np)")
    assert _child(code, FEDWAVE_JIT="0") == "False False True"
    before, jit, twin = _child(code).split()
    assert before == "False" and twin == str(jit == "False")


def test_a_tree_where_numba_cannot_cache_still_compiles():
    """Where numba finds no writable cache location it refuses ``cache=True`` at decoration
    (RuntimeError); the kernel is then compiled for the process alone."""
    def fake_njit(fn=None, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'plan_cum': no locator available for file")
        return ("compiled without a cache", fn)

    loop = kernels.LOOPS["plan_cum"]
    assert kernels._compiled(fake_njit, loop) == ("compiled without a cache", loop)

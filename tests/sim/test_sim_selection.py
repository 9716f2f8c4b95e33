"""Selection policies: a contract over the registry and each policy's rule."""

from __future__ import annotations

import numpy as np
import pytest

from sim.selection import SELECTION_POLICIES, SelectionContext, make_selection


def _ctx(k=3, n=8, seed=0, deadline=None, last=None, rate=None, times=None):
    cands = np.arange(n, dtype=np.int64)
    rate = np.arange(n, dtype=float) if rate is None else np.asarray(rate, float)
    times = np.zeros(n) if times is None else np.asarray(times, float)
    return SelectionContext(
        round=5, candidates=cands, k=k, rng=np.random.default_rng(seed), deadline_s=deadline,
        last_selected=np.full(n, -1) if last is None else np.asarray(last),
        predicted_rate_bps=lambda ids: rate[ids], predicted_time_s=lambda ids: times[ids])


@pytest.mark.parametrize("kind", sorted(SELECTION_POLICIES))
def test_selection_contract(kind):
    pol = make_selection(kind)
    for k in (1, 3, 8):
        out = pol.select(_ctx(k=k))
        assert out.dtype == np.int64
        assert np.all(np.diff(out) > 0), "sorted, unique"
        assert set(out.tolist()) <= set(range(8))
        assert len(out) <= (8 if kind == "all" else k)
    a = pol.select(_ctx(seed=3))
    b = pol.select(_ctx(seed=3))
    assert np.array_equal(a, b), "same stream, same choice"


def test_unknown_selection_lists_known():
    with pytest.raises(KeyError, match="Known: all, best_rate, deadline_aware, fair, random"):
        make_selection("lottery")


def test_best_rate_takes_the_fastest():
    out = make_selection("best_rate").select(_ctx(k=3, rate=[5, 1, 9, 9, 0, 2, 7, 3]))
    assert out.tolist() == [2, 3, 6]


def test_deadline_aware_only_feasible():
    times = [1, 20, 3, 40, 5, 9.9, 10.1, 2]
    out = make_selection("deadline_aware").select(_ctx(k=8, deadline=10.0, times=times))
    assert out.tolist() == [0, 2, 4, 5, 7]
    out = make_selection("deadline_aware", {"margin": 0.5}).select(
        _ctx(k=8, deadline=10.0, times=times))
    assert out.tolist() == [0, 2, 4, 7]


def test_fair_prefers_least_recently_selected():
    last = [4, 4, -1, 3, 2, 4, 0, 1]
    out = make_selection("fair").select(_ctx(k=3, last=last))
    assert out.tolist() == [2, 6, 7]


def test_random_differs_by_seed():
    pol = make_selection("random")
    outs = {tuple(pol.select(_ctx(k=3, seed=s)).tolist()) for s in range(10)}
    assert len(outs) > 1

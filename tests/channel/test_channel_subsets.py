"""Client subsets: counter-based draws, and every stateful model evaluated for some clients
gives exactly the columns the full evaluation gives, whatever the other clients do."""

import numpy as np
import pytest
from scipy import stats

from channel import (
    MOBILITY_MODELS,
    Association,
    BlockFading,
    CorrelatedShadowing,
    LosState,
    RadioChannel,
    RandomWaypoint,
    UMa,
    drop_uniform_in_cells,
    hex_grid,
    uplink_interference_mw,
    uplink_sinr_linear,
)
from channel._keyed import KeyedStream

N_UE = 120
SUB = np.array([2, 17, 40, 41, 119])


def rngs(seed=0):
    ss = np.random.SeedSequence(seed)
    return {k: np.random.default_rng(s) for k, s in zip(("los", "shadowing", "fading"), ss.spawn(3))}


# -- counter-based draws -------------------------------------------------------------------
def test_keyed_draws_do_not_depend_on_the_batch():
    k = KeyedStream(np.array([1, 2, 3, 4], dtype=np.uint64), 7)
    batch = k.normal(np.array([9, 3, 500]), np.array([4, 0, 2]))
    assert batch.shape == (7, 3)
    assert np.array_equal(batch[:, 1:2], k.normal([3], [0]))
    assert np.array_equal(batch[:, 2:3], k.normal([500], 2))
    re, im = k.complex_normal(np.arange(10), 5)
    re2, im2 = k.complex_normal(np.array([7]), 5)
    assert np.array_equal(re[:, 7:8], re2) and np.array_equal(im[:, 7:8], im2)
    # different counter, client, purpose or seed: different values
    assert not np.array_equal(k.normal([3], [1]), batch[:, 1:2])
    assert not np.array_equal(k.normal([4], [0]), batch[:, 1:2])
    assert not np.array_equal(KeyedStream(np.array([1, 2, 3, 4], dtype=np.uint64), 7, purpose=1).normal([3], 0),
                              batch[:, 1:2])
    assert not np.array_equal(KeyedStream(np.array([1, 2, 3, 5], dtype=np.uint64), 7).normal([3], 0),
                              batch[:, 1:2])


def test_keyed_draw_statistics():
    k = KeyedStream(np.array([11], dtype=np.uint64), 21)
    z = k.normal(np.arange(10_000), 3)  # 210,000 normals
    assert abs(z.mean()) < 0.01 and z.var() == pytest.approx(1.0, abs=0.01)
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    re, im = k.complex_normal(np.arange(10_000), 1)
    p = re**2 + im**2  # |z|² ~ Exp(1)
    assert p.mean() == pytest.approx(1.0, abs=0.01) and (p < 0.1).mean() == pytest.approx(1 - np.exp(-0.1), abs=0.003)
    assert abs(np.corrcoef(re.ravel(), im.ravel())[0, 1]) < 0.01
    # neighbours in client, row and counter are uncorrelated
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(z.ravel(), k.normal(np.arange(10_000), 4).ravel())[0, 1]) < 0.01
    u = k.uniform(np.arange(1000), 0)
    assert u.min() >= 0 and u.max() < 1 and u.mean() == pytest.approx(0.5, abs=0.01)


# -- the stateful models, column by column --------------------------------------------------
def test_fading_subset_columns_equal_full():
    full = BlockFading(3, N_UE, "rician", k_factor_db=6.0, block_s=1e-3, carrier_hz=3e9, rng=np.random.default_rng(1))
    part = BlockFading(3, N_UE, "rician", k_factor_db=6.0, block_s=1e-3, carrier_hz=3e9, rng=np.random.default_rng(1))
    v = np.linspace(0.0, 30.0, N_UE)
    for k in (0, 1, 2, 7, 30):
        full.advance_to(k, v)
        part.advance_to(k, v[SUB], cols=SUB)
        assert np.array_equal(full.power_into(np.empty((3, N_UE)))[:, SUB],
                              part.power_into(np.empty((3, SUB.size)), cols=SUB))
        assert np.array_equal(full.coefficients()[:, SUB], part.coefficients(cols=SUB))
    assert part.client_block[SUB].tolist() == [30] * SUB.size and part.client_block[0] == -1
    with pytest.raises(ValueError, match="must not go back in time: the state is at block 30"):
        part.advance_to(29, 1.0, cols=SUB[:1])


def test_fading_lazy_client_jumps_with_the_lag_correlation():
    """A client left out for n blocks jumps with J0 of the whole lag (a fresh draw when it
    decorrelated), not with the per-block chain."""
    f = BlockFading(1, 40_000, block_s=1e-3, carrier_hz=3e9, rng=np.random.default_rng(2))
    ids = np.arange(0, 40_000, 2)
    f.advance_to(0, 10.0)
    h0 = f.coefficients(cols=ids).ravel()
    for k in range(1, 8):
        f.advance_to(k, 10.0, cols=np.arange(1, 40_000, 2))  # the others move on
    f.advance_to(8, 10.0, cols=ids)
    h8 = f.coefficients(cols=ids).ravel()
    want = float(f.rho(8, 10.0)[0])
    assert float(np.real(np.mean(np.conj(h0) * h8))) == pytest.approx(want, abs=0.02)


def test_shadowing_and_los_subset_columns_equal_full():
    a = CorrelatedShadowing(6.0, 37.0, 4, N_UE, np.random.default_rng(3))
    b = CorrelatedShadowing(6.0, 37.0, 4, N_UE, np.random.default_rng(3))
    la = LosState(UMa(), 4, N_UE, np.random.default_rng(4), update_m=2.0)
    lb = LosState(UMa(), 4, N_UE, np.random.default_rng(4), update_m=2.0)
    d2 = np.random.default_rng(5).uniform(20, 400, size=(4, N_UE))
    for step in (0.0, 1.5, 0.0, 3.0, 0.7, 2.0):
        disp = np.full(N_UE, step)
        disp[::3] = 0.0  # some clients stand still
        a.advance(disp)
        b.advance(disp[SUB], cols=SUB)
        assert np.array_equal(a.unit_state[:, SUB], b.unit_state[:, SUB])
        la.update(d2, 1.5, disp)
        lb.update(d2[:, SUB], 1.5, disp[SUB], cols=SUB)
        assert np.array_equal(la.los[:, SUB], lb.los[:, SUB])
        assert np.array_equal(np.intersect1d(la.last_updated, SUB), lb.last_updated)


@pytest.mark.parametrize("name", sorted(MOBILITY_MODELS))
def test_mobility_state_of_equals_rows_of_state(name):
    from test_channel_mobility import FACTORIES  # the registry's contract factories

    m, ref = FACTORIES[name](3), FACTORIES[name](3)
    idx = np.array([0, 7, m.n_ue - 1])
    for t in (0.0, 3.7, 400.0, 41.5, 41.5, 900.0):  # jumps ahead and back
        p, v = ref.state(t)
        ps, vs = m.state_of(t, idx)
        assert np.array_equal(ps, p[idx]) and np.array_equal(vs, v[idx])
    assert np.array_equal(m.state(12.0)[0], ref.state(12.0)[0])  # the subset queries left no trace


def test_association_columns_and_first_attach():
    rsrp = np.random.default_rng(6).normal(-80, 10, size=(3, 30))
    full = Association(3.0, 0.2)
    part = Association(3.0, 0.2, n_ue=30)
    ids = np.array([1, 5, 9])
    for t in (0.0, 0.1, 0.2, 0.35):
        r = rsrp + np.random.default_rng(int(t * 100)).normal(0, 4, size=rsrp.shape)
        s_full, ho_full = full.update(t, r)
        s_part, ho_part = part.update(t, r[:, ids], cols=ids)
        assert np.array_equal(s_full[ids], s_part) and np.array_equal(ho_full[ids], ho_part)
    assert part.serving[0] == -1  # never seen
    with pytest.raises(ValueError, match="needs the number of clients: pass n_ue"):
        Association().update(0.0, rsrp[:, :2], cols=[0, 1])


def test_uplink_interference_matches_the_sinr_function():
    rng = np.random.default_rng(7)
    g = rng.exponential(1e-9, size=(4, 12))
    p = rng.uniform(50, 200, 12)
    serving = rng.integers(0, 4, 12)
    tx = rng.random(12) < 0.5
    sinr = uplink_sinr_linear(g, p, serving, tx, 1e-10)
    i_bs = uplink_interference_mw(g[:, tx], p[tx], serving[tx])
    cols = np.arange(12)
    assert sinr == pytest.approx(p * g[serving, cols] / (i_bs[serving] + 1e-10), rel=1e-12)
    assert np.array_equal(uplink_interference_mw(g[:, :0], p[:0], serving[:0]), np.zeros(4))


# -- RadioChannel ---------------------------------------------------------------------------
def _channel(case, seed=0):
    lay = hex_grid(1, 1732.0 if case.get("pathloss") == "rma" else 500.0, n_sectors=case.get("n_sectors", 3),
                   height_m=35.0 if case.get("pathloss") == "rma" else 25.0)
    h = np.random.default_rng(1).uniform(1.5, 8.0, N_UE) if case.get("heights") else 1.5
    kw = {k: v for k, v in case.items() if k in ("fading", "downtilt_deg", "los_mode", "shadowing")}
    kw.setdefault("fading", {"kind": "rayleigh"})
    rc = RadioChannel(lay, case.get("pathloss", "uma"), 3.5e9, h, N_UE, rngs=rngs(seed), block_s=0.01, **kw)
    return lay, rc


CASES = [
    {},
    {"n_sectors": 1},
    {"fading": {"kind": "rician_los"}},
    {"fading": {"kind": "rician", "iid": True, "min_speed_mps": 0.5}},
    {"fading": None},
    {"downtilt_deg": 8.0},
    {"los_mode": "nlos", "shadowing": False},
    {"pathloss": "rma", "heights": True, "fading": {"kind": "rician_los"}},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_radio_subset_equals_columns_of_full(case):
    lay, full = _channel(case)
    _, part = _channel(case)
    xy = drop_uniform_in_cells(np.random.default_rng(42), lay, N_UE, min_distance_m=35.0)
    mob = RandomWaypoint(xy, lay.bounds_m, (1.0, 20.0), pause_s=(0.0, 2.0), rng=np.random.default_rng(0))
    for k in range(0, 300, 7):
        t = full.block_start_s(k)
        p, v = mob.state(t)
        speed = np.hypot(v[:, 0], v[:, 1])
        g = full.gain_db(t, p, speed)
        assert np.array_equal(part.gain_db(t, p[SUB], speed[SUB], ue_index=SUB), g[:, SUB])
        gl, ls = part.gains(t, None, None, SUB)  # same block: nothing moves again
        assert np.array_equal(gl, full.gain_linear(t, p, speed)[:, SUB])
        assert np.array_equal(ls, full.large_scale_gain_db[:, SUB])
    assert part.client_block[SUB].tolist() == [full.block] * SUB.size
    assert (part.client_block[np.setdiff1d(np.arange(N_UE), SUB)] == -1).all()


def test_radio_client_independent_of_the_others():
    """Client 5's gains are the same alone, with a few others, and in the full evaluation."""
    lay, alone = _channel({})
    _, few = _channel({})
    _, full = _channel({})
    xy = drop_uniform_in_cells(np.random.default_rng(8), lay, N_UE, min_distance_m=35.0)
    mob = RandomWaypoint(xy, lay.bounds_m, (1.0, 5.0), rng=np.random.default_rng(1))
    few_ids = np.array([0, 5, 77])
    for k in (0, 1, 5, 6, 40):
        t = alone.block_start_s(k)
        p, v = mob.state(t)
        s = np.hypot(v[:, 0], v[:, 1])
        a = alone.gain_db(t, p[[5]], s[[5]], ue_index=[5])
        b = few.gain_db_for_mobility(t, mob, ue_index=few_ids)
        c = full.gain_db(t, p, s)
        assert np.array_equal(a[:, 0], b[:, 1]) and np.array_equal(a[:, 0], c[:, 5])


def test_radio_subset_errors():
    lay, rc = _channel({})
    xy = np.zeros((2, 2)) + 100.0
    with pytest.raises(ValueError, match=r"'ue_index' parameter of RadioChannel must not repeat a client"):
        rc.gain_db(0.0, xy, 1.0, ue_index=[3, 3])
    with pytest.raises(ValueError, match=r"'ue_index' parameter of RadioChannel must hold indices in \[0, 119\]. Got 120"):
        rc.gain_db(0.0, xy, 1.0, ue_index=[3, 120])
    with pytest.raises(ValueError, match=r"'ue_xy_m' parameter of RadioChannel must have shape \(2, 2\)"):
        rc.gain_db(0.0, np.zeros((3, 2)), 1.0, ue_index=[3, 4])
    rc.gain_db(0.05, xy, 1.0, ue_index=[3, 4])
    with pytest.raises(ValueError, match=r"asked for block 4 \(t_s=0.04\) after block 5"):
        rc.gain_db(0.04, xy, 1.0, ue_index=[6, 7])

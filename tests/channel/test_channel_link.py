"""Link budget: noise, SINR against loop oracles, association, CQI tables and rate mapping."""

import math

import numpy as np
import pytest

from channel.link import (
    CQI_TABLES,
    Association,
    RateMapper,
    cqi_from_sinr_db,
    cqi_rate_bps,
    cqi_thresholds_db,
    db_to_linear,
    dbm_to_watt,
    downlink_sinr_db,
    downlink_sinr_linear,
    linear_to_db,
    predict_capacity_bits,
    rx_power_dbm,
    shannon_rate_bps,
    sinr_db,
    thermal_noise_dbm,
    uplink_sinr_db,
    uplink_sinr_linear,
    watt_to_dbm,
)


def test_conversions_and_noise():
    # −174 + 10 log10(20e6) + 9 = −174 + 73.0103 + 9 = −91.9897 dBm
    assert float(thermal_noise_dbm(20e6, 9.0)) == pytest.approx(-91.989700, abs=1e-6)
    # 10 MHz, NF 7: −174 + 70 + 7 = −97 dBm
    assert float(thermal_noise_dbm(10e6, 7.0)) == pytest.approx(-97.0, abs=1e-12)
    assert float(dbm_to_watt(30.0)) == pytest.approx(1.0) and float(watt_to_dbm(0.1)) == pytest.approx(20.0)
    assert float(db_to_linear(3.0)) == pytest.approx(1.9952623) and float(linear_to_db(100.0)) == pytest.approx(20.0)
    assert rx_power_dbm(np.array([[46.0], [40.0]]), np.full((2, 3), -100.0)).tolist() == [[-54.0] * 3, [-60.0] * 3]
    with pytest.raises(ValueError, match=r"'bandwidth_hz' parameter of thermal_noise_dbm must be > 0. Got 0 instead"):
        thermal_noise_dbm(0.0)


def dl_oracle(rx_dbm, serving, active, noise_dbm):
    n_bs, n_ue = rx_dbm.shape
    out = []
    for u in range(n_ue):
        s = 10 ** (rx_dbm[serving[u], u] / 10)
        i = 0.0
        for b in range(n_bs):
            a = active[b] if active.ndim == 1 else active[b, u]
            if b != serving[u] and a:
                i += 10 ** (rx_dbm[b, u] / 10)
        out.append(10 * math.log10(s / (i + 10 ** (noise_dbm / 10))))
    return np.array(out)


@pytest.mark.parametrize("mask_kind", ["all", "per_bs", "per_link"])
def test_downlink_sinr_matches_loop_oracle(mask_kind):
    rng = np.random.default_rng(0)
    n_bs, n_ue = 5, 30
    gain = rng.uniform(-130, -70, (n_bs, n_ue))
    p_bs = rng.uniform(30, 46, n_bs)
    serving = rng.integers(0, n_bs, n_ue)
    active = {"all": np.ones(n_bs, bool), "per_bs": rng.random(n_bs) < 0.5, "per_link": rng.random((n_bs, n_ue)) < 0.5}[
        mask_kind
    ]
    want = dl_oracle(gain + p_bs[:, None], serving, active, -95.0)
    got = downlink_sinr_db(gain, p_bs, serving, -95.0, None if mask_kind == "all" else active)
    assert got == pytest.approx(want, abs=1e-9)
    got2 = sinr_db(gain + p_bs[:, None], serving, None if mask_kind == "all" else active, -95.0)
    assert got2 == pytest.approx(want, abs=1e-9)


def test_uplink_sinr_matches_loop_oracle():
    rng = np.random.default_rng(1)
    n_bs, n_ue = 4, 40
    gain = rng.uniform(-130, -70, (n_bs, n_ue))
    p = rng.uniform(0, 23, n_ue)
    serving = rng.integers(0, n_bs, n_ue)
    tx = rng.random(n_ue) < 0.4
    w = rng.uniform(0.1, 1.0, n_ue)
    noise = -100.0
    want = []
    for u in range(n_ue):
        b = serving[u]
        s = 10 ** ((p[u] + gain[b, u]) / 10)
        i = sum(w[v] * 10 ** ((p[v] + gain[b, v]) / 10) for v in range(n_ue) if tx[v] and serving[v] != b)
        want.append(10 * math.log10(s / (i + 10 ** (noise / 10))))
    got = uplink_sinr_db(gain, p, serving, tx, noise, interference_weight=w)
    assert got == pytest.approx(np.array(want), abs=1e-9)
    # same-cell transmitters never interfere: one cell only → SNR
    one = uplink_sinr_linear(db_to_linear(gain), 1.0, np.zeros(n_ue, int), np.ones(n_ue, bool), 1e-12)
    assert one == pytest.approx(db_to_linear(gain[0]) / 1e-12)


def test_sinr_input_errors():
    g = np.zeros((3, 4))
    with pytest.raises(
        ValueError, match=r"'serving' parameter of downlink_sinr_linear must hold BS indices in \[0, 2\]. Got 3"
    ):
        downlink_sinr_linear(g, 1.0, np.array([0, 1, 2, 3]), 1.0)
    with pytest.raises(
        ValueError, match=r"'transmitting' parameter of downlink_sinr_linear must have shape \(3,\) or \(3, 4\)"
    ):
        downlink_sinr_linear(g, 1.0, np.zeros(4, int), 1.0, np.ones(5, bool))


def test_association_hysteresis_no_ping_pong_and_handover_beyond():
    a = Association(hysteresis_db=3.0)
    serving = a.initial(np.array([[-80.0], [-82.0]]))
    assert serving.tolist() == [0]
    # BS 1 better by 2 dB, then 2.9 dB: inside the band, no handover
    for t, r1 in ((1.0, -78.0), (2.0, -77.1)):
        s, ho = a.update(t, np.array([[-80.0], [r1]]))
        assert s.tolist() == [0] and not ho.any()
    # 3.5 dB better: hand over
    s, ho = a.update(3.0, np.array([[-80.0], [-76.5]]))
    assert s.tolist() == [1] and ho.tolist() == [True]
    # back and forth inside the band: stays on 1
    for t, r0 in ((4.0, -75.0), (5.0, -74.0)):
        s, ho = a.update(t, np.array([[r0], [-76.5]]))
        assert s.tolist() == [1] and not ho.any()


def test_association_time_to_trigger():
    a = Association(hysteresis_db=1.0, time_to_trigger_s=0.32)
    a.initial(np.array([[-80.0, -80.0], [-90.0, -90.0]]))
    strong = np.array([[-80.0, -80.0], [-70.0, -90.0]])  # client 0 sees BS 1 10 dB better
    for t in (0.0, 0.1, 0.2, 0.3):
        s, ho = a.update(t, strong)
        assert not ho.any()
    s, ho = a.update(0.35, strong)
    assert ho.tolist() == [True, False] and s.tolist() == [1, 0]
    # the condition must hold throughout: an interruption restarts the timer
    b = Association(hysteresis_db=1.0, time_to_trigger_s=0.32)
    b.initial(np.array([[-80.0], [-90.0]]))
    for t, r in ((0.0, -70.0), (0.2, -85.0), (0.3, -70.0), (0.5, -70.0)):
        s, ho = b.update(t, np.array([[-80.0], [r]]))
        assert not ho.any()
    s, ho = b.update(0.62, np.array([[-80.0], [-70.0]]))
    assert ho.tolist() == [True]
    with pytest.raises(ValueError, match=r"'t_s' parameter of Association.update must not decrease"):
        b.update(0.1, np.array([[-80.0], [-70.0]]))


# TS 38.214 Table 5.2.2.1-2 and 5.2.2.1-3, copied from the specification.
SPEC_64QAM = [
    0.1523,
    0.2344,
    0.3770,
    0.6016,
    0.8770,
    1.1758,
    1.4766,
    1.9141,
    2.4063,
    2.7305,
    3.3223,
    3.9023,
    4.5234,
    5.1152,
    5.5547,
]
SPEC_256QAM = [
    0.1523,
    0.3770,
    0.8770,
    1.4766,
    1.9141,
    2.4063,
    2.7305,
    3.3223,
    3.9023,
    4.5234,
    5.1152,
    5.5547,
    6.2266,
    6.9141,
    7.4063,
]


def test_cqi_tables_are_the_spec():
    assert CQI_TABLES["64qam"][1:, 2].tolist() == SPEC_64QAM
    assert CQI_TABLES["256qam"][1:, 2].tolist() == SPEC_256QAM
    for t in CQI_TABLES.values():
        # efficiency = Qm · R/1024, rounded to 4 decimals in the spec
        assert np.allclose(t[1:, 0] * t[1:, 1] / 1024, t[1:, 2], atol=5e-5)
    assert CQI_TABLES["256qam"][15, :2].tolist() == [8, 948] and CQI_TABLES["64qam"][7, :2].tolist() == [4, 378]


def test_cqi_thresholds_rule_and_mapping():
    th = cqi_thresholds_db("64qam")
    # SINR_th = 10 log10(2^η − 1): CQI 1 → 10 log10(2^0.1523 − 1) = −9.5335 dB, CQI 15 → 16.6279 dB
    assert th[0] == pytest.approx(-9.5335, abs=1e-4) and th[-1] == pytest.approx(16.6279, abs=1e-4)
    assert np.all(np.diff(th) > 0)
    assert cqi_thresholds_db("64qam", gap_db=2.0) == pytest.approx(th + 2.0)
    s = np.linspace(-20, 40, 2001)
    q = cqi_from_sinr_db(s, "256qam")
    assert np.all(np.diff(q) >= 0) and q[0] == 0 and q[-1] == 15
    assert cqi_from_sinr_db(np.array([th[0] - 1e-9, th[0], th[6]]), "64qam").tolist() == [0, 1, 7]


def test_cqi_rate_outage_and_bound():
    bw = 20e6
    assert float(cqi_rate_bps(-12.0, bw)) == 0.0  # below CQI 1: outage
    assert float(cqi_rate_bps(30.0, bw, "256qam", overhead=0.14)) == pytest.approx(0.86 * bw * 7.4063)
    s = np.linspace(-15, 35, 501)
    r = cqi_rate_bps(s, bw, "256qam")
    assert np.all(np.diff(r) >= 0)
    # threshold rule: the CQI rate never exceeds the gap-Shannon rate at the same gap
    for gap in (0.0, 3.0):
        assert np.all(cqi_rate_bps(s, bw, "256qam", gap_db=gap) <= shannon_rate_bps(s, bw, gap_db=gap) + 1e-6)


def test_shannon_gap_and_cap():
    # 20 MHz at 10 dB: 20e6·log2(11) = 69.189 Mbit/s ; gap 3 dB: log2(1 + 10/1.9953) = 2.5850
    assert float(shannon_rate_bps(10.0, 20e6)) == pytest.approx(20e6 * math.log2(11.0))
    assert float(shannon_rate_bps(10.0, 20e6, gap_db=3.0)) == pytest.approx(20e6 * math.log2(1 + 10 / 10**0.3))
    assert float(shannon_rate_bps(60.0, 1.0, max_se_bps_hz=7.4063)) == pytest.approx(7.4063)


@pytest.mark.parametrize(
    "mapper",
    [
        RateMapper("shannon"),
        RateMapper("shannon", gap_db=2.0, max_se_bps_hz=6.0),
        RateMapper("cqi", table="64qam", overhead=0.1),
    ],
)
def test_rate_mapper_paths_and_rayleigh_mean(mapper):
    s_db = np.array([-5.0, 5.0, 15.0, 25.0])
    assert mapper.rate_from_linear_bps(db_to_linear(s_db), 10e6) == pytest.approx(mapper.rate_bps(s_db, 10e6))
    # closed-form mean under Rayleigh fading equals Monte Carlo
    x = np.random.default_rng(0).exponential(size=200_000)
    for m in (0.0, 12.0):
        mc = mapper.rate_bps(m + linear_to_db(x), 1.0).mean()
        assert float(mapper.mean_rate_rayleigh_bps(m, 1.0)) == pytest.approx(mc, rel=0.01)


def test_rate_mapper_errors_and_outage_threshold():
    assert RateMapper("shannon").min_sinr_db == -np.inf
    assert RateMapper("cqi", table="64qam").min_sinr_db == pytest.approx(-9.5335, abs=1e-4)
    with pytest.raises(ValueError, match=r"'kind' parameter of RateMapper must be one of 'shannon', 'cqi'. Got 'mcs'"):
        RateMapper("mcs")
    with pytest.raises(ValueError, match=r"'overhead' parameter of RateMapper must be in \[0, 1\)"):
        RateMapper("cqi", overhead=1.0)


def test_predict_capacity_limits():
    assert float(predict_capacity_bits(1e6, 2.0)) == 2e6
    # τ → ∞: current rate; τ → 0: mean rate
    assert float(predict_capacity_bits(1e6, 2.0, 3e6, np.inf)) == pytest.approx(2e6)
    assert float(predict_capacity_bits(1e6, 2.0, 3e6, 1e-9)) == pytest.approx(6e6, rel=1e-6)
    # τ = H: r̄H + (r₀ − r̄)·H(1 − e^{−1}) = 6e6 − 2e6·2·0.63212 = 3.4715e6
    assert float(predict_capacity_bits(1e6, 2.0, 3e6, 2.0)) == pytest.approx(6e6 - 4e6 * (1 - math.exp(-1)))


@pytest.mark.parametrize("ttt", [0.0, 0.05, 0.12])
def test_association_scan_equals_successive_updates(ttt):
    """scan() over K times gives, update by update, what K calls of update() give — the
    serving cells, the handovers and the state left — with per-client starting points."""
    rng = np.random.default_rng(int(ttt * 100))
    for trial in range(60):
        k, m, n_bs = int(rng.integers(1, 20)), int(rng.integers(1, 6)), 3
        t = np.cumsum(rng.uniform(0.01, 0.06, k))
        base = rng.normal(-80, 5, (n_bs, m))
        r = base[None] + np.cumsum(rng.normal(0, 3, (k, n_bs, m)), axis=0)
        start = rng.integers(0, k, m)
        a, b = Association(3.0, ttt, n_ue=m), Association(3.0, ttt, n_ue=m)
        for j in range(2):  # some state before
            prior = base + rng.normal(0, 4, (n_bs, m))
            a.update(-1.0 + 0.01 * j, prior, cols=np.arange(m))
            b.update(-1.0 + 0.01 * j, prior, cols=np.arange(m))
        serving, fired = a.scan(t, r, np.arange(m), start=start)
        for j in range(k):
            ids = np.flatnonzero(start <= j)
            if ids.size:
                s, f = b.update(t[j], r[j][:, ids], cols=ids)
                assert np.array_equal(serving[j, ids], s) and np.array_equal(fired[j, ids], f)
        assert np.array_equal(a.serving, b.serving)
        assert np.array_equal(a._candidate, b._candidate)
        live = a._candidate >= 0
        assert np.array_equal(a._since[live], b._since[live])
    look = Association(3.0, ttt, n_ue=2)
    look.update(0.0, np.array([[-80.0, -90.0], [-85.0, -70.0]]), cols=[0, 1])
    before = (look.serving.copy(), look._candidate.copy())
    look.scan([0.1, 0.2], np.full((2, 2, 2), -60.0) + np.array([[0.0], [10.0]]), [0, 1], commit=False)
    assert np.array_equal(look.serving, before[0]) and np.array_equal(look._candidate, before[1])

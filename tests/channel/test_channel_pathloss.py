"""Path loss, LOS probability and LOS state against TR 38.901 §7.4 (values worked by hand)."""

import math

import numpy as np
import pytest

from channel.pathloss import (
    PATHLOSS_MODELS,
    FreeSpace,
    InHOffice,
    LogDistance,
    LosState,
    RMa,
    UMa,
    UMiStreetCanyon,
    draw_los,
    make_pathloss,
)


def pl(model, d2d, carrier_hz, h_bs, h_ut, los):
    d3d = math.sqrt(d2d**2 + (h_bs - h_ut) ** 2)
    return float(model.pathloss_db(np.array([d2d]), np.array([d3d]), carrier_hz, h_bs, h_ut, np.array([los]))[0])


# Each row: model, d2D (m), fc (Hz), hBS, hUT, expected LOS dB, expected NLOS dB.
# Expected values were worked out from the Table 7.4.1-1 formulas with a calculator
# (log10, fc in GHz, d3D = sqrt(d2D² + (hBS − hUT)²), c = 3e8 in the breakpoint).
REFERENCE = [
    # UMa, hBS 25, hUT 1.5: d'BP = 4·24·0.5·fc/c = 560 m (3.5 GHz), 4480 m (28 GHz).
    # d2D 100 < d'BP: PL1 = 28 + 22 log10(102.724) + 20 log10(3.5) = 83.1382
    #   NLOS = max(PL1, 13.54 + 39.08 log10(102.724) + 20 log10(3.5)) = 103.0375
    (UMa(), 100.0, 3.5e9, 25.0, 1.5, 83.138157, 103.037524),
    # d2D 1000 > d'BP: PL2 = 28 + 40 log10(1000.276) + 20 log10(3.5) − 9 log10(560² + 23.5²) = 109.4119
    #   NLOS' = 13.54 + 39.08 log10(1000.276) + 20 log10(3.5) = 141.6660
    (UMa(), 1000.0, 3.5e9, 25.0, 1.5, 109.411895, 141.666046),
    # 28 GHz, d2D 1000 < d'BP 4480: PL1 = 28 + 22 log10(1000.276) + 20 log10(28) = 122.9458
    (UMa(), 1000.0, 28e9, 25.0, 1.5, 122.945798, 159.727846),
    (UMa(), 100.0, 28e9, 25.0, 1.5, 101.199956, 121.099323),
    # d2D 5 m is clipped to 10 m: d3D = sqrt(10² + 23.5²) = 25.5392; PL1 = 69.8399
    (UMa(), 5.0, 3.5e9, 25.0, 1.5, 69.839916, 79.415012),
    # hUT 10 m, d2D 300: d'BP = 4·24·9·3.5e9/3e8 = 10080 m; d3D = 300.375
    #   PL1 = 28 + 22 log10(300.375) + 20 log10(3.5) = 93.3900
    #   NLOS' = 13.54 + 39.08 log10(300.375) + 20 log10(3.5) − 0.6·8.5 = 116.1484
    (UMa(), 300.0, 3.5e9, 25.0, 10.0, 93.389957, 116.148448),
    # UMi, hBS 10, hUT 1.5: d'BP = 4·9·0.5·fc/c = 210 m (3.5 GHz), 1680 m (28 GHz).
    # d2D 50: PL1 = 32.4 + 21 log10(50.7174) + 20 log10(3.5) = 79.0896
    #   NLOS' = 22.4 + 35.3 log10(50.7174) + 21.3 log10(3.5) = 94.1807
    (UMiStreetCanyon(), 50.0, 3.5e9, 10.0, 1.5, 79.089649, 94.180677),
    # d2D 500 > 210: PL2 = 32.4 + 40 log10(500.072) + 20 log10(3.5) − 9.5 log10(210² + 8.5²) = 107.1138
    (UMiStreetCanyon(), 500.0, 3.5e9, 10.0, 1.5, 107.113750, 129.264505),
    (UMiStreetCanyon(), 50.0, 28e9, 10.0, 1.5, 97.151449, 113.416494),
    (UMiStreetCanyon(), 500.0, 28e9, 10.0, 1.5, 118.022848, 148.500322),
    # RMa, hBS 35, hUT 1.5, h 5, W 20: d_BP = 2π·35·1.5·fc/c = 769.690 m (0.7 GHz), 3848.451 m (3.5 GHz)
    # d2D 500 < d_BP, 0.7 GHz: PL1 = 20 log10(40π·501.121·0.7/3) + min(0.03·5^1.72, 10) log10(501.121)
    #   − min(0.044·5^1.72, 14.77) + 0.002 log10(5)·501.121 = 84.6325
    # NLOS' = 161.04 − 7.1 log10 20 + 7.5 log10 5 − (24.37 − 3.7(5/35)²) log10 35
    #   + (43.42 − 3.1 log10 35)(log10 501.121 − 3) + 20 log10 0.7 − (3.2 (log10 17.625)² − 4.97) = 104.8433
    (RMa(), 500.0, 0.7e9, 35.0, 1.5, 84.632522, 104.843262),
    # d2D 5000 > d_BP: PL2 = PL1(769.690) + 40 log10(5000.112/769.690) = 121.3311
    (RMa(), 5000.0, 0.7e9, 35.0, 1.5, 121.331055, 143.439453),
    (RMa(), 500.0, 3.5e9, 35.0, 1.5, 98.611922, 118.822662),
    (RMa(), 5000.0, 3.5e9, 35.0, 1.5, 125.969025, 157.418853),
]

# InH-Office (no breakpoint, clip d3D >= 1 m); rows: d3D, fc, LOS, NLOS.
# LOS = 32.4 + 17.3 log10(d3D) + 20 log10(fc); NLOS = max(LOS, 17.3 + 38.3 log10(d3D) + 24.9 log10(fc))
INH_REFERENCE = [
    (5.0, 3.5e9, 55.373542, 57.617845),
    (50.0, 3.5e9, 72.673542, 95.917845),
    (0.5, 3.5e9, 43.281361, 43.281361),  # clipped to 1 m; NLOS' (30.85) < LOS: the max rule
    (5.0, 60e9, 80.055206, 88.346517),
    (50.0, 60e9, 97.355206, 126.646517),
    (0.5, 60e9, 67.963025, 67.963025),
]


@pytest.mark.parametrize("model, d2d, fc, hbs, hut, want_los, want_nlos", REFERENCE)
def test_reference_values(model, d2d, fc, hbs, hut, want_los, want_nlos):
    assert pl(model, d2d, fc, hbs, hut, True) == pytest.approx(want_los, abs=1e-5)
    assert pl(model, d2d, fc, hbs, hut, False) == pytest.approx(want_nlos, abs=1e-5)


@pytest.mark.parametrize("d3d, fc, want_los, want_nlos", INH_REFERENCE)
def test_inh_reference_values(d3d, fc, want_los, want_nlos):
    m = InHOffice()
    got = m.pathloss_db(np.array([0.0]), np.array([d3d]), fc, 3.0, 1.0, np.array([True, False]))
    assert got == pytest.approx([want_los, want_nlos], abs=1e-5)


def test_free_space_and_log_distance_reference():
    # FSPL = 20 log10(4π·100·2.4e9/299792458) = 80.0520 dB
    assert float(FreeSpace().pathloss_db(100.0, 100.0, 2.4e9, 10.0, 10.0)) == pytest.approx(80.052008, abs=1e-5)
    # PL0 = FSPL(1 m, 2.4 GHz) = 40.0520; n = 3.5: 40.0520 + 35·log10(100) = 110.0520
    assert float(LogDistance(exponent=3.5).pathloss_db(100.0, 100.0, 2.4e9, 1, 1)) == pytest.approx(
        110.052008, abs=1e-5
    )
    # 60 + 30 log10(1000/10) = 120
    m = LogDistance(exponent=3.0, ref_distance_m=10.0, ref_loss_db=60.0)
    assert float(m.pathloss_db(1000.0, 1000.0, 2.4e9, 1, 1)) == pytest.approx(120.0, abs=1e-9)


def test_broadcasting_over_links_matches_scalar_evaluation():
    m = UMa()
    rng = np.random.default_rng(0)
    d2d = rng.uniform(5, 3000, size=(4, 50))
    h_ut = rng.uniform(1.5, 22.5, size=50)
    d3d = np.sqrt(d2d**2 + (25.0 - h_ut) ** 2)
    los = rng.random((4, 50)) < 0.5
    got = m.pathloss_db(d2d, d3d, 3.5e9, 25.0, h_ut, los)
    assert got.shape == (4, 50)
    for b in range(4):
        for u in range(0, 50, 7):
            assert got[b, u] == pytest.approx(pl(m, d2d[b, u], 3.5e9, 25.0, h_ut[u], los[b, u]), abs=1e-9)


@pytest.mark.parametrize("name", sorted(PATHLOSS_MODELS))
def test_contract_monotone_and_nlos_at_least_los(name):
    m = make_pathloss(name)
    fc = 3.5e9
    hbs, hut = {"rma": (35.0, 1.5), "inh_office": (3.0, 1.0), "umi": (10.0, 1.5)}.get(name, (25.0, 1.5))
    d2d = np.linspace(10.0, min(m.max_d2d_m, 5000.0), 400)
    d3d = np.sqrt(d2d**2 + (hbs - hut) ** 2)
    los = m.pathloss_db(d2d, d3d, fc, hbs, hut, True)
    nlos = m.pathloss_db(d2d, d3d, fc, hbs, hut, False)
    assert np.all(np.diff(los) > 0) and np.all(np.diff(nlos) >= 0)
    assert np.all(nlos >= los - 1e-12)
    p = m.los_probability(d2d, hut)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(m.shadow_std_db(np.array([True, False]), np.array([100.0, 100.0]), fc, hbs, hut) >= 0)
    assert np.all(m.decorrelation_m(np.array([True, False])) > 0)


@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        (
            UMa(),
            dict(carrier_hz=2e12, h_bs_m=25.0, h_ut_m=1.5),
            r"The 'carrier_hz' parameter of UMa must be in \[0.5e9, 100e9\]. Got 2e\+12 instead.",
        ),
        (
            UMa(),
            dict(carrier_hz=3.5e9, h_bs_m=25.0, h_ut_m=30.0),
            r"The 'h_ut_m' parameter of UMa must be in \[1.5, 22.5\]. Got 30 instead.",
        ),
        (
            UMiStreetCanyon(),
            dict(carrier_hz=0.2e9, h_bs_m=10.0, h_ut_m=1.5),
            r"'carrier_hz' parameter of UMiStreetCanyon must be in \[0.5e9, 100e9\]",
        ),
        (
            RMa(),
            dict(carrier_hz=40e9, h_bs_m=35.0, h_ut_m=1.5),
            r"'carrier_hz' parameter of RMa must be in \[0.5e9, 30e9\]. Got 4e\+10 instead.",
        ),
        (RMa(), dict(carrier_hz=3.5e9, h_bs_m=5.0, h_ut_m=1.5), r"'h_bs_m' parameter of RMa must be in \[10, 150\]"),
        (
            RMa(),
            dict(carrier_hz=3.5e9, h_bs_m=35.0, h_ut_m=np.array([1.5, 12.0])),
            r"'h_ut_m' parameter of RMa must be in \[1, 10\]. Got 12 at index 1 instead.",
        ),
        (InHOffice(), dict(carrier_hz=120e9, h_bs_m=3.0, h_ut_m=1.0), r"'carrier_hz' parameter of InHOffice"),
    ],
)
def test_validity_errors(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.plan(**kwargs)
    with pytest.raises(ValueError, match=match):
        model.pathloss_db(100.0, 100.0, kwargs["carrier_hz"], kwargs["h_bs_m"], kwargs["h_ut_m"], True)


def test_model_parameter_errors():
    with pytest.raises(ValueError, match=r"'street_width_m' parameter of RMa must be in \[5, 50\]. Got 60 instead"):
        RMa(street_width_m=60.0)
    with pytest.raises(ValueError, match=r"'variant' parameter of InHOffice must be one of 'mixed', 'open'"):
        InHOffice(variant="closed")
    with pytest.raises(ValueError, match=r"'kind' parameter of make_pathloss must be one of"):
        make_pathloss("hata")


# LOS probability, TR 38.901 Table 7.4.2-1 (worked by hand).
@pytest.mark.parametrize(
    "model, d2d, hut, want",
    [
        (UMa(), 10.0, 1.5, 1.0),
        (UMa(), 18.0, 1.5, 1.0),
        # 18/100 + exp(−100/63)(1 − 18/100) = 0.347671
        (UMa(), 100.0, 1.5, 0.3476708368),
        # C'(20) = (0.7)^1.5; × [1 + C'·1.25·1³·exp(−100/150)] = 0.478347
        (UMa(), 100.0, 20.0, 0.4783467914),
        (UMa(), 300.0, 20.0, 0.2500369786),
        # 18/100 + exp(−100/36)(1 − 18/100) = 0.230985
        (UMiStreetCanyon(), 100.0, 1.5, 0.2309847497),
        (UMiStreetCanyon(), 18.0, 1.5, 1.0),
        # exp(−(510 − 10)/1000) = 0.606531
        (RMa(), 510.0, 1.5, 0.6065306597),
        (RMa(), 10.0, 1.5, 1.0),
        # mixed: exp(−(3 − 1.2)/4.7) = 0.681827 ; 0.32·exp(−(20 − 6.5)/32.6) = 0.211497
        (InHOffice(), 3.0, 1.0, 0.6818274061),
        (InHOffice(), 20.0, 1.0, 0.2114969476),
        # open: exp(−(30 − 5)/70.8) = 0.702502 ; 0.54·exp(−(100 − 49)/211.7) = 0.424394
        (InHOffice(variant="open"), 30.0, 1.0, 0.7025017795),
        (InHOffice(variant="open"), 100.0, 1.0, 0.4243939689),
    ],
)
def test_los_probability_reference(model, d2d, hut, want):
    assert float(model.los_probability(np.array(d2d), hut)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(
    "model, los_std, nlos_std, los_dc, nlos_dc",
    [
        (UMa(), 4.0, 6.0, 37.0, 50.0),
        (UMiStreetCanyon(), 4.0, 7.82, 10.0, 13.0),
        (InHOffice(), 3.0, 8.03, 10.0, 6.0),
    ],
)
def test_shadow_std_and_decorrelation_tables(model, los_std, nlos_std, los_dc, nlos_dc):
    los = np.array([True, False])
    assert model.shadow_std_db(los).tolist() == [los_std, nlos_std]
    assert model.decorrelation_m(los).tolist() == [los_dc, nlos_dc]


def test_rma_shadow_std_depends_on_breakpoint():
    m = RMa()
    # d_BP = 2π·35·1.5·3.5e9/3e8 = 3848.45 m: LOS σ 4 dB before, 6 dB after; NLOS 8 dB
    got = m.shadow_std_db(np.array([True, True, False]), np.array([1000.0, 5000.0, 1000.0]), 3.5e9, 35.0, 1.5)
    assert got.tolist() == [4.0, 6.0, 8.0]
    assert m.decorrelation_m(np.array([True, False])).tolist() == [37.0, 120.0]
    with pytest.raises(ValueError, match=r"'d2d_m' parameter of RMa.shadow_std_db must be given"):
        m.shadow_std_db(np.array([True]))
    plan = m.plan(3.5e9, 35.0, 1.5)
    assert plan.shadow_std_db(np.array([1000.0, 5000.0, 1000.0]) ** 2, np.array([True, True, False])).tolist() == [
        4.0,
        6.0,
        8.0,
    ]


def test_draw_los_frequency():
    rng = np.random.default_rng(3)
    los = draw_los(rng, np.full(100_000, 0.3))
    assert los.dtype == bool and abs(los.mean() - 0.3) < 0.01


def test_los_state_marginal_matches_probability_and_is_consistent_for_small_moves():
    m = UMa()
    n_ue = 20_000
    d2d = np.full((1, n_ue), 100.0)
    st = LosState(m, 1, n_ue, np.random.default_rng(5), update_m=0.0)
    los0 = st.update(d2d, 1.5, 0.0).copy()
    assert abs(los0.mean() - 0.3476708368) < 0.015
    # a 0.5 m move (d_LOS = 50 m) keeps almost every state: P(flip) ~ small
    los1 = st.update(d2d, 1.5, 0.5).copy()
    assert (los1 != los0).mean() < 0.05
    assert abs(los1.mean() - 0.3476708368) < 0.015  # still the right marginal
    # far travel decorrelates: flips approach 2p(1-p)
    los2 = st.update(d2d, 1.5, 500.0).copy()
    p = 0.3476708368
    assert abs((los2 != los1).mean() - 2 * p * (1 - p)) < 0.02


def test_los_state_holds_until_update_distance_and_replays_after_reset():
    m = UMiStreetCanyon()
    d2d = np.random.default_rng(0).uniform(20, 300, size=(3, 500))
    st = LosState(m, 3, 500, np.random.default_rng(7), update_m=5.0)
    a = st.update(d2d, 1.5, 0.0).copy()
    b = st.update(d2d, 1.5, 4.0).copy()
    assert st.last_updated.size == 0 and np.array_equal(a, b)
    st.update(d2d, 1.5, 2.0)  # accumulated 6 m >= 5 m: everybody refreshed
    assert st.last_updated.size == 500
    st.reset()
    assert np.array_equal(st.update(d2d, 1.5, 0.0), a)

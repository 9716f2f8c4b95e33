"""RadioChannel: shapes, determinism, block semantics, and agreement with its parts."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from channel import (
    RadioChannel,
    RandomWaypoint,
    UMa,
    distances_m,
    drop_uniform_in_cells,
    hex_grid,
    sector_antenna_gain_db,
    single_cell,
)

N_UE = 300


def rngs(seed=0):
    ss = np.random.SeedSequence(seed)
    return {k: np.random.default_rng(s) for k, s in zip(("los", "shadowing", "fading"), ss.spawn(3))}


def setup(n_sectors=1, seed=0, **kw):
    lay = hex_grid(1, 500.0, n_sectors=n_sectors)
    xy = drop_uniform_in_cells(np.random.default_rng(42), lay, N_UE, min_distance_m=35.0)
    kw.setdefault("fading", {"kind": "rayleigh"})
    rc = RadioChannel(lay, "uma", 3.5e9, 1.5, N_UE, rngs=rngs(seed), block_s=0.01, **kw)
    return lay, xy, rc


@pytest.mark.parametrize("n_sectors", [1, 3])
def test_shapes_and_readonly_outputs(n_sectors):
    lay, xy, rc = setup(n_sectors)
    g = rc.gain_db(0.0, xy, 1.0)
    assert g.shape == (lay.n_bs, N_UE) and g.dtype == np.float64 and not g.flags.writeable
    gl = rc.gain_linear(0.0, xy, 1.0)
    assert gl == pytest.approx(10 ** (g / 10), rel=1e-12)
    assert rc.large_scale_gain_db + 10 * np.log10(rc.fading_power) == pytest.approx(g, abs=1e-9)
    assert rc.los.shape == (lay.n_bs, N_UE)


def test_piecewise_constant_within_a_block_and_new_block_changes():
    _, xy, rc = setup()
    g0 = rc.gain_db(0.0, xy, 3.0)
    assert rc.gain_db(0.004, xy + 5.0, 30.0) is g0  # same block: positions/speeds ignored
    assert rc.gain_db(0.0099999, xy, 3.0) is g0
    g1 = rc.gain_db(0.01, xy + [0.03, 0.0], 3.0)  # 3 cm on (3 m/s for 10 ms): the fading moves
    assert rc.block == 1 and not np.array_equal(g0, g1)
    with pytest.raises(
        ValueError, match=r"asked for block 0 \(t_s=0.005\) after block 1: blocks must be requested in non-decreasing"
    ):
        rc.gain_db(0.005, xy, 3.0)


def test_determinism_by_seed_and_reset():
    _, xy, a = setup(seed=1)
    _, _, b = setup(seed=1)
    _, _, c = setup(seed=2)
    seq = [(0.0, 0.0), (0.02, 0.5), (0.05, 1.0)]
    ga = [a.gain_db(t, xy + d, 1.5).copy() for t, d in seq]
    gb = [b.gain_db(t, xy + d, 1.5) for t, d in seq]
    assert all(np.array_equal(x, y) for x, y in zip(ga, gb))
    assert not np.array_equal(c.gain_db(0.0, xy, 1.5), ga[0])
    a.reset()
    assert all(np.array_equal(a.gain_db(t, xy + d, 1.5), x) for (t, d), x in zip(seq, ga))


@pytest.mark.parametrize("n_sectors", [1, 3])
def test_gain_equals_antenna_minus_pathloss_without_random_parts(n_sectors):
    lay = hex_grid(1, 500.0, n_sectors=n_sectors)
    xy = drop_uniform_in_cells(np.random.default_rng(3), lay, 50, min_distance_m=35.0)
    for mode in ("los", "nlos"):
        rc = RadioChannel(lay, UMa(), 3.5e9, 1.5, 50, shadowing=False, rngs={}, los_mode=mode)
        g = rc.gain_db(0.0, xy, 0.0)
        d2, d3 = distances_m(lay.bs_xy_m, lay.bs_height_m, xy, 1.5)
        want = sector_antenna_gain_db(lay.bs_azimuth_deg, lay.bs_xy_m, xy, 8.0) - UMa().pathloss_db(
            d2, d3, 3.5e9, lay.bs_height_m[:, None], 1.5, mode == "los"
        )
        assert g == pytest.approx(want, abs=1e-9)


def test_sector_gains_from_site_offsets_equal_the_geometry_function_bit_for_bit():
    # the per-block path computes the angle once per site (co-sited sectors share it);
    # the oracle computes it per BS
    lay = hex_grid(1, 500.0, n_sectors=3)
    rc = RadioChannel(lay, UMa(), 3.5e9, 1.5, 1, shadowing=False, rngs={}, los_mode="los")
    rng = np.random.default_rng(7)
    for m in (1, 5, 64):
        xy = rng.uniform(-900.0, 900.0, (m, 2))
        dx, dy = xy[:, 0] - lay.site_xy_m[:, 0:1], xy[:, 1] - lay.site_xy_m[:, 1:2]
        want = sector_antenna_gain_db(lay.bs_azimuth_deg, lay.bs_xy_m, xy, 8.0)
        assert np.array_equal(rc._sector_gain_db(dx, dy), want)


def test_shadowing_statistics_and_static_reuse():
    lay = single_cell(400.0)
    xy = np.stack([np.linspace(50, 350, 4000), np.zeros(4000)], axis=1)
    rc = RadioChannel(lay, UMa(), 3.5e9, 1.5, 4000, fading=None, rngs=rngs(5), los_mode="nlos")
    g = rc.gain_db(0.0, xy, 0.0)
    d2, d3 = distances_m(lay.bs_xy_m, lay.bs_height_m, xy, 1.5)
    sf = -g - UMa().pathloss_db(d2, d3, 3.5e9, 25.0, 1.5, False)
    assert sf.std() == pytest.approx(6.0, rel=0.05)  # UMa NLOS σ_SF
    # static clients, no fading: later blocks are identical
    assert np.array_equal(rc.gain_db(5.0, xy, 0.0), g)
    # move by 50 m (d_corr = 50 m NLOS): correlation of the shadowing ≈ e^{−1}
    g2 = rc.gain_db(6.0, xy + [0.0, 50.0], 0.0)
    d2b, d3b = distances_m(lay.bs_xy_m, lay.bs_height_m, xy + [0.0, 50.0], 1.5)
    sf2 = -g2 - UMa().pathloss_db(d2b, d3b, 3.5e9, 25.0, 1.5, False)
    assert np.corrcoef(sf.ravel(), sf2.ravel())[0, 1] == pytest.approx(np.exp(-1.0), abs=0.05)


def test_rician_on_los_links_only():
    lay = single_cell(300.0)
    xy = np.stack([np.linspace(20, 250, 20000), np.zeros(20000)], axis=1)
    var = {}
    for mode in ("los", "nlos"):
        rc = RadioChannel(
            lay,
            UMa(),
            3.5e9,
            1.5,
            20000,
            fading={"kind": "rician_los", "k_factor_db": 9.0},
            shadowing=False,
            rngs=rngs(6),
            los_mode=mode,
        )
        rc.gain_db(0.0, xy, 1.0)
        var[mode] = rc.fading_power.var()
    k = 10**0.9
    assert var["los"] == pytest.approx((2 * k + 1) / (k + 1) ** 2, rel=0.1)
    assert var["nlos"] == pytest.approx(1.0, rel=0.1)


def test_block_index_boundaries():
    _, _, rc = setup()
    for n in range(0, 2000, 7):
        assert rc.block_index(rc.block_start_s(n)) == n
    assert rc.block_index(0.3) == 30 and rc.block_index(0.3 - 1e-12) == 29  # 0.3/0.01 = 29.999…
    assert rc.block_index(0.0149) == 1


def test_mobility_convenience_uses_block_start():
    lay, xy, rc = setup()
    m = RandomWaypoint(xy, lay.bounds_m, (1.0, 2.0), rng=np.random.default_rng(0))
    g = rc.gain_db_for_mobility(0.123, m)
    _, xy2, rc2 = setup()
    p, v = m.state(0.12)
    assert np.array_equal(g, rc2.gain_db(0.12, p, np.hypot(v[:, 0], v[:, 1])))


def test_configuration_errors_and_range_warning():
    lay = hex_grid(1, 500.0)
    with pytest.raises(
        ValueError, match=r"'rngs' parameter of RadioChannel must have keys \['los', 'shadowing', 'fading'\]"
    ):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, fading={"kind": "rayleigh"}, rngs={"los": np.random.default_rng()})
    with pytest.raises(ValueError, match=r"'fading' parameter of RadioChannel has unknown keys \['doppler'\]"):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, fading={"doppler": 1}, rngs=rngs())
    with pytest.raises(ValueError, match=r"'block_s' parameter of RadioChannel is given twice"):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, fading={"block_s": 0.001}, block_s=0.01, rngs=rngs())
    with pytest.raises(ValueError, match=r"'carrier_hz' parameter of RMa must be in \[0.5e9, 30e9\]"):
        RadioChannel(hex_grid(1, 1732.0, height_m=35.0), "rma", 60e9, 1.5, 10, rngs=rngs())
    with pytest.raises(ValueError, match=r"'ue_xy_m' parameter of RadioChannel must have shape \(10, 2\)"):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, rngs=rngs()).gain_db(0.0, np.zeros((3, 2)), 0.0)
    with pytest.raises(TypeError, match=r"'rngs' parameter of RadioChannel must be a mapping of named generators"):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, rngs=np.random.default_rng())
    with pytest.warns(UserWarning, match=r"fading\['k_factor_db'\] is ignored for kind='rayleigh'"):
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, fading={"kind": "rayleigh", "k_factor_db": 6.0}, rngs=rngs())
    with pytest.warns(UserWarning, match=r"beyond the 5000 m validity of UMa"):
        RadioChannel(single_cell(8000.0), "uma", 3.5e9, 1.5, 10, rngs=rngs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RadioChannel(lay, "uma", 3.5e9, 1.5, 10, rngs=rngs())


def test_channel_imports_only_numpy_scipy_and_stdlib():
    # what numpy and the scipy parts channel uses bring in themselves is the baseline
    code = (
        "import sys, importlib, pkgutil, numpy, scipy.special\n"
        "base = {n.split('.')[0] for n in sys.modules}\n"
        "import channel\n"
        "for m in pkgutil.walk_packages(channel.__path__, prefix='channel.'):\n"
        "    importlib.import_module(m.name)\n"
        "top = {n.split('.')[0] for n in sys.modules} - base - set(sys.stdlib_module_names) - {'channel'}\n"
        "print(','.join(sorted(top)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# -- a channel you can ask about any moment ---------------------------------------------------
def _walkers(seed=0, n=20, n_sectors=3):
    lay = hex_grid(1, 500.0, n_sectors=n_sectors)
    xy = drop_uniform_in_cells(np.random.default_rng(seed), lay, n, min_distance_m=35.0)
    return lay, RandomWaypoint(xy, lay.bounds_m, (0.5, 1.5), rng=np.random.default_rng(seed + 1))


@pytest.mark.parametrize("fading", [{"kind": "rayleigh"}, {"kind": "rician_los"},
                                    {"kind": "rician", "min_speed_mps": 0.3}])
def test_gains_do_not_depend_on_what_was_asked_before(fading):
    """The issue's measurement: two channels from the same seed, hex grid, UMa, 20 walkers;
    one is also asked about t = 2.5 s (and 0.01 s), the other only about t = 5 s. Client
    0's gains at 5 s: the same to the last bit (they differed by up to 21.5 dB before)."""
    lay, walk = _walkers()
    a = RadioChannel(lay, "uma", 3.5e9, 1.5, 20, fading=fading, rngs=rngs(3), block_s=0.01)
    b = RadioChannel(lay, "uma", 3.5e9, 1.5, 20, fading=fading, rngs=rngs(3), block_s=0.01)
    for t in (0.01, 2.5, 5.0):
        ga = a.gain_db_for_mobility(t, walk)
    gb = b.gain_db_for_mobility(5.0, walk, ue_index=np.array([0]))
    assert np.array_equal(ga[:, 0], gb[:, 0])
    assert np.abs(ga[:, 0] - gb[:, 0]).max() < 1e-9
    # and through the stateless API, in a batch of other blocks, backwards in time
    k = a.block_index(5.0)
    p = np.stack([walk.state(a.block_start_s(j))[0] for j in (k, 250, 1)])
    s = b.sample(np.array([k, 250, 1]), p)
    assert np.array_equal(s.large_scale_db[0], a.large_scale_gain_db)
    assert np.array_equal(s.fading_power[0], a.fading_power)
    assert np.allclose(10 * np.log10(s.gain_linear[0]), ga, rtol=0, atol=1e-9)


def test_sample_is_the_same_bits_alone_in_its_chunk_or_in_any_batch():
    lay, walk = _walkers(seed=4, n=30)
    rc = RadioChannel(lay, "uma", 3.5e9, 1.5, 30, fading={"kind": "rician_los"}, rngs=rngs(5), block_s=0.05)
    blocks = np.arange(32, 48)  # one whole chunk
    xy = np.stack([walk.state(rc.block_start_s(k))[0] for k in blocks])  # [16, 30, 2]
    whole = rc.sample(blocks, xy)
    for k, ids in ((3, np.array([7])), (0, np.array([29, 2, 11])), (15, np.arange(30))):
        one = rc.sample([blocks[k]], xy[k:k + 1, ids], ids)
        for f in ("gain_linear", "large_scale_db", "fading_power", "los"):
            assert np.array_equal(getattr(one, f)[0], getattr(whole, f)[k][:, ids]), f
    mixed = rc.sample([40, 3, 33], np.stack([xy[8], xy[0] + 100.0, xy[1]]))  # another chunk between
    assert np.array_equal(mixed.gain_linear[0], whole.gain_linear[8])
    assert np.array_equal(mixed.gain_linear[2], whole.gain_linear[1])
    # the per-block API gives the same bits
    per_block = RadioChannel(lay, "uma", 3.5e9, 1.5, 30, fading={"kind": "rician_los"}, rngs=rngs(5), block_s=0.05)
    g = per_block.gain_linear(rc.block_start_s(40), xy[8], None)
    assert np.array_equal(g, whole.gain_linear[8])


def test_los_field_has_the_standard_probability_and_is_spatially_consistent():
    lay = single_cell(400.0)
    n = 20_000
    ang = np.random.default_rng(9).uniform(0, 2 * np.pi, n)
    xy = 100.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # every client 100 m away
    rc = RadioChannel(lay, UMa(), 3.5e9, 1.5, n, fading=None, shadowing=False, rngs=rngs(10))
    s = rc.sample([0, 1, 2], np.stack([xy, xy + [0.5, 0.0], xy + [0.0, 500.0]]))
    p = 0.3476708368  # Table 7.4.2-1 at 100 m, hUT 1.5 m
    assert s.los[0].mean() == pytest.approx(p, abs=0.012)
    assert (s.los[1] != s.los[0]).mean() < 0.03  # 0.5 m further (d_LOS = 50 m): almost no flips
    far = s.los[2]  # 500 m further: independent of the first draw
    p_far = UMa().los_probability(np.hypot(xy[:, 0], xy[:, 1] + 500.0), 1.5)
    assert far.mean() == pytest.approx(p_far.mean(), abs=0.012)
    assert np.corrcoef(s.los[0].ravel(), far.ravel())[0, 1] == pytest.approx(0.0, abs=0.03)

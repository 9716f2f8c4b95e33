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
    g1 = rc.gain_db(0.01, xy, 3.0)
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

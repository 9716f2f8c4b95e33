"""Layouts, drops, distances and the TR 38.901 sector antenna pattern."""

import math

import numpy as np
import pytest

from channel.geometry import (
    Layout,
    distances_m,
    drop_hotspots,
    drop_uniform_disc,
    drop_uniform_in_cells,
    drop_uniform_rectangle,
    explicit_positions,
    explicit_sites,
    hex_grid,
    in_hexagon,
    sector_antenna_gain_db,
    single_cell,
)


@pytest.mark.parametrize("n_rings, n_sites", [(0, 1), (1, 7), (2, 19), (3, 37)])
def test_hex_grid_counts_and_isd(n_rings, n_sites):
    lay = hex_grid(n_rings, 500.0)
    assert lay.n_site == n_sites and lay.n_bs == n_sites
    assert np.all(lay.site_xy_m[0] == 0.0)
    if n_sites > 1:
        d = np.hypot(*(lay.site_xy_m[:, None] - lay.site_xy_m[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        assert np.allclose(d.min(axis=1), 500.0)  # every site's nearest neighbour is one ISD away
    # ring 1 at one ISD from the centre, ordered counter-clockwise from 30°
    if n_rings >= 1:
        r1 = lay.site_xy_m[1:7]
        assert np.allclose(np.hypot(r1[:, 0], r1[:, 1]), 500.0)
        ang = np.degrees(np.arctan2(r1[:, 1], r1[:, 0])) % 360
        assert np.allclose(ang, [30, 90, 150, 210, 270, 330])
    if n_rings >= 2:
        r2 = np.hypot(*lay.site_xy_m[7:19].T)
        assert np.allclose(np.sort(r2), [500 * math.sqrt(3)] * 6 + [1000.0] * 6)
    assert lay.cell_radius_m == pytest.approx(500 / math.sqrt(3))


def test_three_sector_sites():
    lay = hex_grid(1, 200.0, height_m=10.0, n_sectors=3)
    assert lay.n_bs == 21 and lay.n_site == 7
    assert lay.bs_azimuth_deg[:6].tolist() == [30.0, 150.0, 270.0, 30.0, 150.0, 270.0]
    assert lay.site_of_bs.tolist()[:6] == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(lay.bs_xy_m, lay.site_xy_m[lay.site_of_bs])
    assert np.all(lay.bs_height_m == 10.0) and lay.is_sectorised
    assert np.isnan(hex_grid(1, 200.0).bs_azimuth_deg).all()


def test_single_cell_and_explicit_sites():
    lay = single_cell(300.0, 30.0)
    assert lay.n_bs == 1 and lay.bounds_m == (-300.0, 300.0, -300.0, 300.0)
    ex = explicit_sites([[0, 0], [1000, 0]], [25.0, 30.0], n_sectors=3)
    assert ex.n_site == 2 and ex.n_bs == 6 and ex.site_height_m.tolist() == [25.0, 30.0]
    assert ex.bounds_m == (-500.0, 1500.0, -500.0, 500.0)


def test_layout_validation_errors():
    with pytest.raises(ValueError, match=r"'bs_height_m' parameter of Layout must be > 0. Got -3 at index 0 instead"):
        Layout(np.zeros((1, 2)), [-3.0], [np.nan], [0], np.zeros((1, 2)), (-1, 1, -1, 1))
    with pytest.raises(ValueError, match=r"'bounds_m' parameter of Layout must be \(xmin, xmax, ymin, ymax\)"):
        Layout(np.zeros((1, 2)), [3.0], [np.nan], [0], np.zeros((1, 2)), (1, -1, -1, 1))
    with pytest.raises(ValueError, match=r"'n_rings' parameter of hex_grid must be an integer >= 0. Got -1"):
        hex_grid(-1, 500.0)
    with pytest.raises(ValueError, match=r"'xy_m' parameter of explicit_positions must have shape \(n, 2\)"):
        explicit_positions(np.zeros((3, 3)))


def test_distances():
    d2, d3 = distances_m(np.array([[0.0, 0.0], [100.0, 0.0]]), np.array([25.0, 10.0]), np.array([[30.0, 40.0]]), 1.5)
    assert d2[:, 0] == pytest.approx([50.0, math.hypot(70, 40)])
    assert d3[:, 0] == pytest.approx([math.hypot(50, 23.5), math.sqrt(70**2 + 40**2 + 8.5**2)])


def test_sector_antenna_pattern_table_7_3_1():
    az = np.array([30.0, np.nan])
    bs = np.zeros((2, 2))
    # UEs at azimuth 30° (boresight), 30 + 65° (−12 dB), 30 + 32.5° (−3 dB), 210° (back: −30 dB cap)
    angs = np.radians([30.0, 95.0, 62.5, 210.0, -35.0])
    ue = 100.0 * np.stack([np.cos(angs), np.sin(angs)], axis=1)
    g = sector_antenna_gain_db(az, bs, ue, 8.0)
    assert g[0] == pytest.approx([8.0, 8.0 - 12.0, 8.0 - 3.0, 8.0 - 30.0, 8.0 - 12.0])
    assert np.all(g[1] == 0.0)  # omni
    # vertical pattern: a UE seen 10° below the horizon with a 10° downtilt gets no vertical loss
    h_bs, d = 25.0, 100.0
    h_ut = h_bs - d * math.tan(math.radians(10.0))
    gv = sector_antenna_gain_db(
        az[:1],
        bs[:1],
        np.array([[d * math.cos(math.radians(30)), d * math.sin(math.radians(30))]]),
        8.0,
        downtilt_deg=10.0,
        bs_height_m=h_bs,
        ue_height_m=h_ut,
    )
    assert gv[0, 0] == pytest.approx(8.0)
    gv0 = sector_antenna_gain_db(
        az[:1],
        bs[:1],
        np.array([[d * math.cos(math.radians(30)), d * math.sin(math.radians(30))]]),
        8.0,
        downtilt_deg=0.0,
        bs_height_m=h_bs,
        ue_height_m=h_ut,
    )
    assert gv0[0, 0] == pytest.approx(8.0 - 12 * (10 / 65) ** 2)


def test_drop_in_cells_inside_union_and_min_distance():
    lay = hex_grid(1, 500.0)
    rng = np.random.default_rng(0)
    xy = drop_uniform_in_cells(rng, lay, 7000, min_distance_m=35.0)
    d = np.hypot(*(xy[None] - lay.site_xy_m[:, None]).transpose(2, 0, 1))  # [n_site, n]
    nearest = d.argmin(axis=0)
    assert d.min(axis=0).min() >= 35.0
    inside = np.array(
        [in_hexagon(xy[i : i + 1], lay.site_xy_m[nearest[i]], lay.cell_radius_m)[0] for i in range(len(xy))]
    )
    assert inside.all()
    counts = np.bincount(nearest, minlength=7)
    assert np.all(np.abs(counts - 1000) < 150)  # equal areas → equal shares
    x0, x1, y0, y1 = lay.bounds_m
    assert xy[:, 0].min() >= x0 and xy[:, 0].max() <= x1 and xy[:, 1].min() >= y0 and xy[:, 1].max() <= y1
    with pytest.raises(
        ValueError, match=r"'min_distance_m' parameter of drop_uniform_in_cells must be in \[0, the cell inradius"
    ):
        drop_uniform_in_cells(rng, lay, 5, min_distance_m=400.0)


def test_drop_disc_rectangle_hotspots():
    rng = np.random.default_rng(1)
    xy = drop_uniform_disc(rng, 20000, (10.0, -5.0), 100.0, min_distance_m=20.0)
    r = np.hypot(xy[:, 0] - 10.0, xy[:, 1] + 5.0)
    assert r.min() >= 20.0 and r.max() <= 100.0
    # area-uniform: P(r <= 60) = (60² − 20²)/(100² − 20²) = 1/3
    assert (r <= 60.0).mean() == pytest.approx(1 / 3, abs=0.015)
    rect = drop_uniform_rectangle(rng, 1000, (0, 10, -2, 2))
    assert rect[:, 0].min() >= 0 and rect[:, 0].max() <= 10 and np.abs(rect[:, 1]).max() <= 2
    hs = drop_hotspots(rng, 9000, [[0, 0], [1000, 0]], [50.0, 10.0], weights=[2, 1])
    near0 = np.hypot(hs[:, 0], hs[:, 1]) <= 50.0
    near1 = np.hypot(hs[:, 0] - 1000, hs[:, 1]) <= 10.0
    assert np.all(near0 | near1) and near0.mean() == pytest.approx(2 / 3, abs=0.02)
    assert (
        drop_uniform_disc(np.random.default_rng(5), 3, (0, 0), 10).tolist()
        == drop_uniform_disc(np.random.default_rng(5), 3, (0, 0), 10).tolist()
    )

"""Site layouts, client drops, distances and the sector antenna pattern.

Conventions (all of channel/):

- positions are metres in a flat 2-D plane, arrays of shape ``(n, 2)`` float64;
- link arrays have the canonical axes ``[..., n_bs, n_ue]``;
- azimuths are degrees, counter-clockwise from the +x axis (east), as the global
  coordinate system of 3GPP TR 38.901 §7.1.

Hexagonal grids put the sites of ring ``k`` at hexagonal distance ``k`` from the centre,
neighbours at azimuths 30° + 60°·m and inter-site distance ``isd_m``; each site's cell is
the hexagon of circumradius ``isd_m / sqrt(3)`` with vertices at azimuths 0° + 60°·m.
There is no wrap-around: cells at the edge of the grid see less interference than inner
ones (evaluate statistics on the inner sites if that matters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._checks import (
    check_bounds,
    check_nonnegative,
    check_positive,
    check_range,
    check_xy,
)

__all__ = [
    "Layout",
    "single_cell",
    "hex_grid",
    "explicit_sites",
    "sector_azimuths_deg",
    "sector_antenna_gain_db",
    "distances_m",
    "drop_uniform_disc",
    "drop_uniform_rectangle",
    "drop_uniform_in_cells",
    "drop_hotspots",
    "explicit_positions",
    "in_hexagon",
]

SQRT3 = math.sqrt(3.0)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Layout:
    """Base stations (sectors) grouped into sites.

    Attributes:
        bs_xy_m: (n_bs, 2) float64, m. Position of each BS (co-sited sectors share it).
        bs_height_m: (n_bs,) float64, m. Antenna height above ground.
        bs_azimuth_deg: (n_bs,) float64, degrees ccw from +x. NaN means omnidirectional.
        site_of_bs: (n_bs,) int64. Index of each BS's site in ``site_xy_m``.
        site_xy_m: (n_site, 2) float64, m.
        bounds_m: (xmin, xmax, ymin, ymax), m. The rectangle clients move in.
        cell_radius_m: circumradius (m) of one site's hexagonal cell, or NaN when the
            layout has no natural cell size (used by :func:`drop_uniform_in_cells`).

    Large-scale propagation (path loss, LOS state, shadowing) is per site–UE pair: the
    sectors of a site share one propagation path and differ only by antenna gain.
    """

    bs_xy_m: np.ndarray
    bs_height_m: np.ndarray
    bs_azimuth_deg: np.ndarray
    site_of_bs: np.ndarray
    site_xy_m: np.ndarray
    bounds_m: tuple[float, float, float, float]
    cell_radius_m: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        owner = "Layout"
        bs_xy = check_xy(self.bs_xy_m, "bs_xy_m", owner)
        n_bs = bs_xy.shape[0]
        if n_bs == 0:
            raise ValueError("The 'bs_xy_m' parameter of Layout must hold at least one BS. Got 0 instead.")
        h = np.broadcast_to(np.asarray(self.bs_height_m, dtype=float), (n_bs,))
        check_positive(h, "bs_height_m", owner)
        az = np.broadcast_to(np.asarray(self.bs_azimuth_deg, dtype=float), (n_bs,))
        if np.isinf(az).any():
            raise ValueError("The 'bs_azimuth_deg' parameter of Layout must be finite or NaN (omni). Got inf instead.")
        site_xy = check_xy(self.site_xy_m, "site_xy_m", owner)
        sob = np.asarray(self.site_of_bs)
        if sob.shape != (n_bs,) or not np.issubdtype(sob.dtype, np.integer):
            raise ValueError(
                f"The 'site_of_bs' parameter of Layout must be an integer array of shape ({n_bs},). "
                f"Got {sob.dtype} array of shape {sob.shape} instead."
            )
        check_range(sob, "site_of_bs", owner, 0, site_xy.shape[0] - 1)
        if not np.allclose(bs_xy, site_xy[sob], rtol=0.0, atol=1e-6):
            raise ValueError(
                "The 'bs_xy_m' parameter of Layout must equal site_xy_m[site_of_bs] (sectors are "
                "co-sited). Got BS positions away from their site instead."
            )
        site_h = np.full(site_xy.shape[0], np.nan)
        site_h[sob] = h
        if not np.allclose(h, site_h[sob]):
            raise ValueError(
                "The 'bs_height_m' parameter of Layout must be equal for the sectors of one site. "
                "Got different heights on one site instead."
            )
        if np.isnan(site_h).any():
            missing = int(np.flatnonzero(np.isnan(site_h))[0])
            raise ValueError(
                f"The 'site_of_bs' parameter of Layout must give every site at least one BS. "
                f"Got site {missing} without a BS instead."
            )
        bounds = check_bounds(self.bounds_m, "bounds_m", owner)
        object.__setattr__(self, "bs_xy_m", _readonly(bs_xy))
        object.__setattr__(self, "bs_height_m", _readonly(h))
        object.__setattr__(self, "bs_azimuth_deg", _readonly(az))
        object.__setattr__(self, "site_of_bs", _readonly(sob.astype(np.int64)))
        object.__setattr__(self, "site_xy_m", _readonly(site_xy))
        object.__setattr__(self, "bounds_m", bounds)
        object.__setattr__(self, "cell_radius_m", float(self.cell_radius_m))

    @property
    def n_bs(self) -> int:
        return int(self.bs_xy_m.shape[0])

    @property
    def n_site(self) -> int:
        return int(self.site_xy_m.shape[0])

    @property
    def site_height_m(self) -> np.ndarray:
        """(n_site,) float64, m. Antenna height of each site."""
        h = np.empty(self.n_site)
        h[self.site_of_bs] = self.bs_height_m
        return h

    @property
    def is_sectorised(self) -> bool:
        """True when any BS has a directional antenna (a finite azimuth)."""
        return bool(np.isfinite(self.bs_azimuth_deg).any())


def sector_azimuths_deg(n_sectors: int) -> np.ndarray:
    """Boresight azimuths of ``n_sectors`` sectors: 30° + 360°·k/n (TR 38.901 Table 7.8-1
    gives 30°, 150°, 270° for three sectors); NaN (omni) for a single sector."""
    if int(n_sectors) != n_sectors or n_sectors < 1:
        raise ValueError(f"The 'n_sectors' parameter must be an integer >= 1. Got {n_sectors!r} instead.")
    if n_sectors == 1:
        return np.array([np.nan])
    return (30.0 + 360.0 * np.arange(n_sectors) / n_sectors) % 360.0


def _sites_to_layout(site_xy, site_h, n_sectors, bounds, cell_radius_m) -> Layout:
    n_site = site_xy.shape[0]
    az = sector_azimuths_deg(n_sectors)
    sob = np.repeat(np.arange(n_site), n_sectors)
    return Layout(
        bs_xy_m=site_xy[sob],
        bs_height_m=np.broadcast_to(site_h, (n_site,))[sob],
        bs_azimuth_deg=np.tile(az, n_site),
        site_of_bs=sob,
        site_xy_m=site_xy,
        bounds_m=bounds,
        cell_radius_m=cell_radius_m,
    )


def single_cell(radius_m: float, height_m: float = 25.0, n_sectors: int = 1) -> Layout:
    """One site at the origin; clients move in the square [-radius_m, radius_m]².

    ``cell_radius_m`` is set to ``radius_m`` (the hexagon circumradius used by
    :func:`drop_uniform_in_cells`; use :func:`drop_uniform_disc` for a round cell).
    """
    check_positive(radius_m, "radius_m", "single_cell")
    check_positive(height_m, "height_m", "single_cell")
    r = float(radius_m)
    return _sites_to_layout(np.zeros((1, 2)), float(height_m), n_sectors, (-r, r, -r, r), r)


def hex_grid(n_rings: int, isd_m: float, height_m: float = 25.0, n_sectors: int = 1) -> Layout:
    """Hexagonal grid of ``1 + 3·n_rings·(n_rings + 1)`` sites (7 for one ring, 19 for two).

    Args:
        n_rings: rings around the centre site (0 gives a single site).
        isd_m: inter-site distance, m (TR 38.901 Table 7.8-1: 500 m UMa, 200 m UMi, 1732 m RMa).
        height_m: BS antenna height, m.
        n_sectors: 1 (omni) or 3 (azimuths 30°, 150°, 270°, TR 38.901 Table 7.8-1).

    Sites are ordered centre first, then ring by ring, counter-clockwise from azimuth 30°.
    BS ``site * n_sectors + k`` is sector ``k`` of ``site``. ``bounds_m`` is the bounding
    box of the union of the site hexagons.
    """
    owner = "hex_grid"
    if int(n_rings) != n_rings or n_rings < 0:
        raise ValueError(f"The 'n_rings' parameter of hex_grid must be an integer >= 0. Got {n_rings!r} instead.")
    isd = check_positive(isd_m, "isd_m", owner)
    check_positive(height_m, "height_m", owner)
    n = int(n_rings)
    a1 = isd * np.array([math.cos(math.radians(30.0)), math.sin(math.radians(30.0))])
    a2 = isd * np.array([0.0, 1.0])
    pts, keys = [], []
    for q in range(-n, n + 1):
        for r in range(-n, n + 1):
            ring = max(abs(q), abs(r), abs(q + r))
            if ring > n:
                continue
            p = q * a1 + r * a2
            ang = round(math.degrees(math.atan2(p[1], p[0])) - 30.0, 6) % 360.0 if ring else 0.0
            pts.append(p)
            keys.append((ring, ang))
    order = sorted(range(len(pts)), key=lambda i: keys[i])
    site_xy = np.array([pts[i] for i in order])
    site_xy[np.abs(site_xy) < 1e-9 * isd] = 0.0
    radius = isd / SQRT3
    bounds = (
        float(site_xy[:, 0].min() - radius),
        float(site_xy[:, 0].max() + radius),
        float(site_xy[:, 1].min() - isd / 2),
        float(site_xy[:, 1].max() + isd / 2),
    )
    return _sites_to_layout(site_xy, float(height_m), n_sectors, bounds, radius)


def explicit_sites(
    xy_m,
    height_m,
    n_sectors: int = 1,
    bounds_m: tuple[float, float, float, float] | None = None,
    cell_radius_m: float = float("nan"),
) -> Layout:
    """Sites at explicit positions (e.g. from a YAML list).

    Args:
        xy_m: (n_site, 2), m.
        height_m: scalar or (n_site,), m.
        n_sectors: sectors per site (see :func:`sector_azimuths_deg`).
        bounds_m: the area clients move in; default: the sites' bounding box grown on each
            side by half its larger extent, and by at least 100 m.
        cell_radius_m: optional hexagon circumradius for :func:`drop_uniform_in_cells`.
    """
    owner = "explicit_sites"
    site_xy = check_xy(xy_m, "xy_m", owner)
    h = check_positive(np.broadcast_to(np.asarray(height_m, dtype=float), (site_xy.shape[0],)), "height_m", owner)
    if bounds_m is None:
        span = np.ptp(site_xy, axis=0).max() if site_xy.shape[0] > 1 else 0.0
        m = max(span / 2.0, 100.0)
        bounds_m = (site_xy[:, 0].min() - m, site_xy[:, 0].max() + m, site_xy[:, 1].min() - m, site_xy[:, 1].max() + m)
    return _sites_to_layout(site_xy, h, n_sectors, bounds_m, cell_radius_m)


def distances_m(bs_xy_m, bs_height_m, ue_xy_m, ue_height_m) -> tuple[np.ndarray, np.ndarray]:
    """2-D and 3-D BS–UE distances.

    Args:
        bs_xy_m: (n_bs, 2), m.  bs_height_m: scalar or (n_bs,), m.
        ue_xy_m: (n_ue, 2), m.  ue_height_m: scalar or (n_ue,), m.

    Returns:
        (d2d, d3d): each [n_bs, n_ue] float64, m.
    """
    bs = np.asarray(bs_xy_m, dtype=float)
    ue = np.asarray(ue_xy_m, dtype=float)
    dx = ue[None, :, 0] - bs[:, None, 0]  # [n_bs, n_ue]
    dy = ue[None, :, 1] - bs[:, None, 1]
    d2d_sq = dx * dx + dy * dy
    dh = np.asarray(bs_height_m, dtype=float).reshape(-1, 1) - np.asarray(ue_height_m, dtype=float)
    d2d = np.sqrt(d2d_sq)
    d3d = np.sqrt(d2d_sq + dh * dh)
    return d2d, d3d


def sector_antenna_gain_db(
    bs_azimuth_deg,
    bs_xy_m,
    ue_xy_m,
    max_gain_dbi: float = 8.0,
    *,
    downtilt_deg: float | None = None,
    bs_height_m=None,
    ue_height_m=None,
) -> np.ndarray:
    """Antenna element gain of each BS towards each UE, TR 38.901 Table 7.3-1.

    Horizontal pattern A_H(φ) = −min(12 (φ/65°)², 30 dB) with φ the angle between the
    BS boresight and the direction to the UE. With ``downtilt_deg`` (electrical tilt below
    the horizon) the vertical pattern A_V(θ) = −min(12 ((θ − 90° − tilt)/65°)², 30 dB) is
    added and the sum limited to −30 dB: A = −min(−(A_H + A_V), 30 dB). The result is
    ``max_gain_dbi + A``. Omnidirectional BSs (NaN azimuth) get 0 dBi.

    Args:
        bs_azimuth_deg: (n_bs,), degrees ccw from +x; NaN = omni.
        bs_xy_m: (n_bs, 2), m.  ue_xy_m: (n_ue, 2), m.
        max_gain_dbi: G_E,max, dBi (8 dBi in Table 7.3-1).
        downtilt_deg: electrical downtilt, degrees; needs ``bs_height_m`` and ``ue_height_m``.

    Returns:
        [n_bs, n_ue] float64, dBi.
    """
    az = np.asarray(bs_azimuth_deg, dtype=float).reshape(-1, 1)
    bs = np.asarray(bs_xy_m, dtype=float)
    ue = np.asarray(ue_xy_m, dtype=float)
    dx = ue[None, :, 0] - bs[:, None, 0]
    dy = ue[None, :, 1] - bs[:, None, 1]
    phi = np.degrees(np.arctan2(dy, dx)) - az
    phi = (phi + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    att = np.minimum(12.0 * (phi / 65.0) ** 2, 30.0)  # −A_H, dB
    if downtilt_deg is not None:
        if bs_height_m is None or ue_height_m is None:
            raise ValueError(
                "The 'downtilt_deg' parameter of sector_antenna_gain_db needs 'bs_height_m' and "
                "'ue_height_m'. Got None instead."
            )
        d2d = np.hypot(dx, dy)
        dh = np.asarray(bs_height_m, dtype=float).reshape(-1, 1) - np.asarray(ue_height_m, dtype=float)
        theta = 90.0 + np.degrees(np.arctan2(dh, d2d))  # zenith angle seen from the BS
        att_v = np.minimum(12.0 * ((theta - 90.0 - float(downtilt_deg)) / 65.0) ** 2, 30.0)
        att = np.minimum(att + att_v, 30.0)
    gain = float(max_gain_dbi) - att
    return np.where(np.isnan(az), 0.0, gain)


# ----------------------------------------------------------------------------------------
# Client drops. Each returns (n, 2) float64 positions in metres.
# ----------------------------------------------------------------------------------------


def _check_n(n, owner: str) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"The 'n' parameter of {owner} must be an integer >= 0. Got {n!r} instead.")
    return int(n)


def drop_uniform_disc(
    rng: np.random.Generator, n: int, center_xy_m, radius_m: float, min_distance_m: float = 0.0
) -> np.ndarray:
    """``n`` points uniform over the annulus min_distance_m <= r <= radius_m around the centre."""
    owner = "drop_uniform_disc"
    n = _check_n(n, owner)
    c = check_xy(center_xy_m, "center_xy_m", owner, 1)[0]
    r_max = check_positive(radius_m, "radius_m", owner)
    r_min = check_range(min_distance_m, "min_distance_m", owner, 0.0, r_max, hi_open=True, hi_text="radius_m")
    u = rng.random(n)
    r = np.sqrt(r_min**2 + u * (r_max**2 - r_min**2))  # area-uniform radius
    ang = rng.random(n) * (2.0 * np.pi)
    return c + np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)


def drop_uniform_rectangle(rng: np.random.Generator, n: int, bounds_m) -> np.ndarray:
    """``n`` points uniform over the rectangle ``bounds_m = (xmin, xmax, ymin, ymax)``."""
    n = _check_n(n, "drop_uniform_rectangle")
    x0, x1, y0, y1 = check_bounds(bounds_m, "bounds_m", "drop_uniform_rectangle")
    u = rng.random((n, 2))
    return np.stack([x0 + u[:, 0] * (x1 - x0), y0 + u[:, 1] * (y1 - y0)], axis=1)


def _hex_vertices(radius_m: float) -> np.ndarray:
    ang = np.radians(60.0 * np.arange(7))
    return radius_m * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (7, 2), closed


def in_hexagon(xy_m, center_xy_m, radius_m: float, tol_m: float = 1e-9) -> np.ndarray:
    """Whether points lie in the hexagon of circumradius ``radius_m`` (vertices at 0°+60°k).

    Returns (n,) bool.
    """
    p = np.asarray(xy_m, dtype=float) - np.asarray(center_xy_m, dtype=float)
    x, y = np.abs(p[:, 0]), np.abs(p[:, 1])
    return (y <= SQRT3 / 2 * radius_m + tol_m) & (SQRT3 * x + y <= SQRT3 * radius_m + tol_m)


def drop_uniform_in_cells(
    rng: np.random.Generator,
    layout: Layout,
    n: int,
    *,
    isd_m: float | None = None,
    radius_m: float | None = None,
    min_distance_m: float = 10.0,
) -> np.ndarray:
    """``n`` points uniform over the union of the sites' hexagonal cells.

    Each site's cell is the hexagon of circumradius R = isd_m/√3 (or ``radius_m``, or
    ``layout.cell_radius_m`` when neither is given) with vertices at azimuths 0°+60°k — the
    Voronoi cell of a :func:`hex_grid` site. Points closer than ``min_distance_m`` to their
    site are redrawn (TR 38.901 Table 7.8-1 uses 35 m for UMa, 10 m for UMi). Since all
    cells have the same area, a site is chosen uniformly, then a point uniformly in its
    hexagon (one of six triangles, then uniform in the triangle).
    """
    owner = "drop_uniform_in_cells"
    n = _check_n(n, owner)
    if isd_m is not None and radius_m is not None:
        raise ValueError(
            f"The 'isd_m' and 'radius_m' parameters of {owner} are exclusive. Got both instead. Pass one of them."
        )
    if isd_m is not None:
        R = check_positive(isd_m, "isd_m", owner) / SQRT3
    elif radius_m is not None:
        R = check_positive(radius_m, "radius_m", owner)
    else:
        R = layout.cell_radius_m
        if not np.isfinite(R):
            raise ValueError(
                f"The 'layout' parameter of {owner} has no cell size (cell_radius_m is NaN). Pass isd_m= or radius_m=."
            )
    check_range(
        min_distance_m,
        "min_distance_m",
        owner,
        0.0,
        SQRT3 / 2 * R,
        hi_open=True,
        hi_text=f"the cell inradius {SQRT3 / 2 * R:g} m",
    )
    verts = _hex_vertices(R)
    out = np.empty((n, 2))
    filled = 0
    while filled < n:
        m = n - filled
        site = rng.integers(0, layout.n_site, size=m)
        tri = rng.integers(0, 6, size=m)
        uv = rng.random((m, 2))
        flip = uv.sum(axis=1) > 1.0
        uv[flip] = 1.0 - uv[flip]
        p = uv[:, :1] * verts[tri] + uv[:, 1:] * verts[tri + 1]  # (m, 2) relative to site
        ok = np.hypot(p[:, 0], p[:, 1]) >= min_distance_m
        k = int(ok.sum())
        out[filled : filled + k] = p[ok] + layout.site_xy_m[site[ok]]
        filled += k
    return out


def drop_hotspots(rng: np.random.Generator, n: int, centers_xy_m, radius_m, weights=None) -> np.ndarray:
    """``n`` points in clustered hotspots: each point picks a hotspot with probability
    proportional to ``weights`` (uniform by default), then a position uniform in the disc
    of ``radius_m`` (scalar or per hotspot) around its centre."""
    owner = "drop_hotspots"
    n = _check_n(n, owner)
    c = check_xy(centers_xy_m, "centers_xy_m", owner)
    k = c.shape[0]
    r = check_positive(np.broadcast_to(np.asarray(radius_m, dtype=float), (k,)), "radius_m", owner)
    if weights is None:
        p = np.full(k, 1.0 / k)
    else:
        w = check_nonnegative(np.asarray(weights, dtype=float), "weights", owner)
        if np.shape(w) != (k,) or w.sum() <= 0:
            raise ValueError(
                f"The 'weights' parameter of {owner} must be {k} non-negative numbers with a "
                f"positive sum. Got {weights!r} instead."
            )
        p = w / w.sum()
    which = rng.choice(k, size=n, p=p)
    rad = r[which] * np.sqrt(rng.random(n))
    ang = rng.random(n) * (2.0 * np.pi)
    return c[which] + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def explicit_positions(xy_m) -> np.ndarray:
    """Validate explicit positions: returns a float64 (n, 2) copy."""
    return np.array(check_xy(xy_m, "xy_m", "explicit_positions"), dtype=float)

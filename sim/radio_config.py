"""Typed configs of the radio plug-ins and their registries (pydantic; no channel import).

One registry per plug-in point of the radio side — :data:`LAYOUTS`, :data:`DROPS`,
:data:`MOBILITY`, :data:`PATHLOSS`, :data:`FADING`, :data:`RATES` — holds, per ``kind``
YAML may name, a small frozen config whose fields are the keyword arguments of the builder
(a ``channel`` model or function, or a ``sim.radio`` adapter) minus what the simulator
provides itself (the random stream, the client count, the drop positions, the layout), and
a lazy ``"module:attr"`` reference to that builder. :mod:`sim.scenario` turns them into the
scenario schema; :mod:`sim.radio` builds from the validated configs.

Ranges are physical: coordinates within ±10,000 km (:data:`MAX_COORD_M`), distances and
heights positive, speeds below 1 km/s; numbers are finite.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fl.core.registry import Registry

__all__ = ["LAYOUTS", "DROPS", "MOBILITY", "PATHLOSS", "FADING", "RATES", "MAX_COORD_M",
           "RadioConfig", "Coord", "XY", "Bounds"]

#: Largest |x| or |y| of any position a scenario names, m (the Earth's size, roughly).
MAX_COORD_M = 1e7
MAX_SPEED_MPS = 1e3

Coord = Annotated[float, Field(ge=-MAX_COORD_M, le=MAX_COORD_M)]
XY = tuple[Coord, Coord]
Length = Annotated[float, Field(gt=0, le=MAX_COORD_M)]
Height = Annotated[float, Field(gt=0, le=1e4)]
Speed = Annotated[float, Field(gt=0, le=MAX_SPEED_MPS)]
Bounds = tuple[Coord, Coord, Coord, Coord]


class RadioConfig(BaseModel):
    """Base of the radio plug-ins' configs: unknown keys are errors, numbers are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_bounds(v):
    if v is not None and not (v[0] < v[1] and v[2] < v[3]):
        raise ValueError(f"bounds_m must be (xmin, xmax, ymin, ymax) with xmin < xmax and "
                         f"ymin < ymax. Got {list(v)} instead. Fix: order the four numbers so.")
    return v


def _check_interval(v, name: str, positive: bool):
    lo, hi = (v, v) if isinstance(v, (int, float)) else v
    if lo > hi or (lo <= 0 if positive else lo < 0):
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a number or a (low, high) pair with high >= low {rule}. "
                         f"Got {v!r} instead. Fix: e.g. [0.5, 1.5].")
    return v


class _HasBounds(RadioConfig):
    bounds_m: Bounds | None = Field(None, description=(
        "(xmin, xmax, ymin, ymax), m: the area the clients stay in (null: the layout's area)."))

    @field_validator("bounds_m")
    @classmethod
    def _bounds(cls, v):
        return _check_bounds(v)


# ----------------------------------------------------------------------------- layouts
class SingleCellConfig(RadioConfig):
    """One site at the origin; clients move in the square [-radius_m, radius_m]²."""

    radius_m: Length = Field(250.0, description="Cell radius (drop area), m.")
    height_m: Height = Field(25.0, description="BS antenna height, m.")
    n_sectors: Literal[1, 3] = Field(1, description="1 (omni) or 3 sectors (30°, 150°, 270°).")


class HexGridConfig(RadioConfig):
    """Hexagonal grid of 1 + 3·n·(n + 1) sites (TR 38.901 Table 7.8-1 layouts)."""

    n_rings: int = Field(1, ge=0, le=30, description="Rings around the centre site (1 -> 7 sites).")
    isd_m: Length = Field(500.0, description="Inter-site distance, m (38.901: 500 UMa, 200 UMi).")
    height_m: Height = Field(25.0, description="BS antenna height, m.")
    n_sectors: Literal[1, 3] = Field(3, description="1 (omni) or 3 sectors per site.")


class ExplicitLayoutConfig(RadioConfig):
    """Sites at explicit positions."""

    sites_xy_m: list[XY] = Field(description="Site positions [[x, y], ...], m (at least one).",
                                 json_schema_extra={"minItems": 1})
    height_m: Height = Field(25.0, description="BS antenna height, m.")
    n_sectors: Literal[1, 3] = Field(1, description="1 (omni) or 3 sectors per site.")
    bounds_m: Bounds | None = Field(None, description=(
        "(xmin, xmax, ymin, ymax) of the area, m; default: the sites' box grown by half its "
        "larger extent (at least 100 m)."))

    @field_validator("sites_xy_m")
    @classmethod
    def _distinct(cls, v):
        if not v:
            raise ValueError("the layout needs at least one site. Fix: list the site positions, "
                             "e.g. [[0, 0]]")
        seen: dict[tuple[float, float], int] = {}
        for i, xy in enumerate(v):
            if tuple(xy) in seen:
                raise ValueError(f"sites {seen[tuple(xy)]} and {i} are both at {list(xy)}; two sites "
                                 "cannot share a position. Fix: remove the duplicate or move one "
                                 "(use n_sectors: 3 for sectors of one site).")
            seen[tuple(xy)] = i
        return v

    @field_validator("bounds_m")
    @classmethod
    def _bounds(cls, v):
        return _check_bounds(v)

    @model_validator(mode="after")
    def _sites_inside(self):
        if self.bounds_m is not None:
            x0, x1, y0, y1 = self.bounds_m
            for i, (x, y) in enumerate(self.sites_xy_m):
                if not (x0 <= x <= x1 and y0 <= y <= y1):
                    raise ValueError(f"site {i} at {[x, y]} lies outside bounds_m {list(self.bounds_m)}. "
                                     "Fix: widen bounds_m or move the site.")
        return self


LAYOUTS: Registry = Registry("layout", "Layout")
LAYOUTS.register("single_cell", SingleCellConfig, "channel.geometry:single_cell")
LAYOUTS.register("hex_grid", HexGridConfig, "channel.geometry:hex_grid")
LAYOUTS.register("explicit", ExplicitLayoutConfig, "sim.radio:explicit_layout")


# ----------------------------------------------------------------------------- drops
class InCellsDropConfig(RadioConfig):
    """Uniform over the union of the sites' hexagonal cells (the layout's cell size, or
    ``isd_m`` / ``radius_m``); points nearer than ``min_distance_m`` to their site redrawn."""

    isd_m: Length | None = Field(None, description="Cell size as an inter-site distance, m.")
    radius_m: Length | None = Field(None, description="Cell size as a hexagon circumradius, m.")
    min_distance_m: float = Field(10.0, ge=0, le=MAX_COORD_M, description=(
        "Minimum distance to the site, m (38.901: 35 UMa, 10 UMi)."))

    @model_validator(mode="after")
    def _one_size(self):
        if self.isd_m is not None and self.radius_m is not None:
            raise ValueError("isd_m and radius_m are exclusive. Got both. Fix: give one of them.")
        return self


class UniformDiscDropConfig(RadioConfig):
    """Uniform over the annulus min_distance_m <= r <= radius_m around a centre."""

    center_xy_m: XY | None = Field(None, description="Centre, m (null: the first site).")
    radius_m: Length | None = Field(None, description=(
        "Radius, m (null: the layout's cell radius, else half the area's smaller side)."))
    min_distance_m: float = Field(0.0, ge=0, le=MAX_COORD_M, description="Inner radius, m.")

    @model_validator(mode="after")
    def _annulus(self):
        if self.radius_m is not None and self.min_distance_m >= self.radius_m:
            raise ValueError(f"min_distance_m ({self.min_distance_m:g}) must be < radius_m "
                             f"({self.radius_m:g}). Fix: lower min_distance_m or raise radius_m.")
        return self


class UniformRectangleDropConfig(RadioConfig):
    """Uniform over a rectangle."""

    bounds_m: Bounds | None = Field(None, description=(
        "(xmin, xmax, ymin, ymax), m (null: the layout's area)."))

    @field_validator("bounds_m")
    @classmethod
    def _bounds(cls, v):
        return _check_bounds(v)


class HotspotsDropConfig(RadioConfig):
    """Clustered hotspots: each client picks a hotspot (by ``weights``), then a point
    uniform in the disc of ``radius_m`` around its centre."""

    centers_xy_m: list[XY] = Field(min_length=1, description="Hotspot centres [[x, y], ...], m.")
    radius_m: Union[Length, list[Length]] = Field(description=(
        "Hotspot radius, m: one for all, or one per hotspot."))
    weights: list[Annotated[float, Field(ge=0)]] | None = Field(None, description=(
        "Relative weight of each hotspot (null: uniform)."))

    @model_validator(mode="after")
    def _per_hotspot(self):
        k = len(self.centers_xy_m)
        if isinstance(self.radius_m, list) and len(self.radius_m) != k:
            raise ValueError(f"radius_m must be one number or one per hotspot ({k}). Got "
                             f"{len(self.radius_m)} numbers instead. Fix: give {k} radii or one.")
        if self.weights is not None and (len(self.weights) != k or sum(self.weights) <= 0):
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum. Got "
                             f"{self.weights} instead. Fix: give one weight per hotspot.")
        return self


class ExplicitDropConfig(RadioConfig):
    """Explicit client positions (one per client)."""

    xy_m: list[XY] = Field(min_length=1, description="Client positions [[x, y], ...], m.")


DROPS: Registry = Registry("client drop", "Drop")
DROPS.register("in_cells", InCellsDropConfig, "channel.geometry:drop_uniform_in_cells")
DROPS.register("uniform_disc", UniformDiscDropConfig, "sim.radio:drop_uniform_disc")
DROPS.register("uniform_rectangle", UniformRectangleDropConfig, "sim.radio:drop_uniform_rectangle")
DROPS.register("hotspots", HotspotsDropConfig, "channel.geometry:drop_hotspots")
DROPS.register("explicit", ExplicitDropConfig, "sim.radio:drop_explicit")


# ----------------------------------------------------------------------------- mobility
Interval = Union[float, tuple[float, float]]


class StaticConfig(_HasBounds):
    """Clients that never move (at their drop positions)."""


class RandomWaypointConfig(_HasBounds):
    """Random waypoint (Johnson & Maltz 1996): to a uniform destination at a uniform speed,
    pause, repeat."""

    speed_mps: Interval = Field((0.5, 1.5), description="Speed, m/s: a number or (low, high), low > 0.")
    pause_s: Interval = Field((0.0, 0.0), description="Pause, s: a number or (low, high), >= 0.")

    @field_validator("speed_mps")
    @classmethod
    def _speed(cls, v):
        _check_interval(v, "speed_mps", positive=True)
        if (v if isinstance(v, (int, float)) else v[1]) > MAX_SPEED_MPS:
            raise ValueError(f"speed_mps must be <= {MAX_SPEED_MPS:g} m/s. Got {v!r} instead. "
                             "Fix: give speeds in m/s (1.4 m/s walking, 14 m/s city driving).")
        return v

    @field_validator("pause_s")
    @classmethod
    def _pause(cls, v):
        return _check_interval(v, "pause_s", positive=False)


class RandomDirectionConfig(RandomWaypointConfig):
    """Random direction: a uniform direction and speed, travel, pause, repeat (``reflect``
    off the border, or travel to the ``border`` and turn back)."""

    travel_s: Interval = Field((10.0, 60.0), description=(
        "Travel time, s: a number or (low, high), low > 0 (reflect only)."))
    mode: Literal["reflect", "border"] = Field("reflect", description="reflect or border.")

    @field_validator("travel_s")
    @classmethod
    def _travel(cls, v):
        return _check_interval(v, "travel_s", positive=True)


class GaussMarkovConfig(_HasBounds):
    """Gauss–Markov mobility (Liang & Haas 1999), reflected at the border."""

    mean_speed_mps: float = Field(1.0, ge=0, le=MAX_SPEED_MPS, description="Mean speed, m/s.")
    alpha: float = Field(0.75, ge=0, le=1, description="Memory: 1 constant velocity, 0 random walk.")
    step_s: float = Field(1.0, gt=0, le=3600, description="Update interval, s.")
    speed_std_mps: float | None = Field(None, ge=0, le=MAX_SPEED_MPS, description=(
        "Speed standard deviation, m/s (null: mean_speed_mps / 3)."))
    direction_std_rad: float = Field(math.pi / 4, ge=0, le=2 * math.pi, description=(
        "Direction standard deviation, rad."))
    mean_direction_rad: Union[float, list[float], None] = Field(None, description=(
        "Mean direction, rad: one for all, one per client of the group, or null (uniform)."))


class ConstantVelocityConfig(RadioConfig):
    """Vehicles on straight road segments at constant speed (bouncing or wrapping at the ends)."""

    start_xy_m: Union[XY, list[XY]] = Field(description=(
        "Road start, m: one [x, y] for all, or one per client of the group."))
    end_xy_m: Union[XY, list[XY]] = Field(description="Road end, m (as start_xy_m).")
    speed_mps: Union[Speed, list[Speed]] = Field(description=(
        "Speed, m/s: one for all, or one per client of the group."))
    mode: Literal["bounce", "wrap"] = Field("bounce", description=(
        "bounce: turn back at the ends; wrap: re-enter at the start."))
    offset_m: Union[Annotated[float, Field(ge=0, le=MAX_COORD_M)],
                    list[Annotated[float, Field(ge=0, le=MAX_COORD_M)]]] = Field(0.0, description=(
        "Initial distance along the road, m: one for all, or one per client of the group."))
    bounds_m: Bounds | None = Field(None, description=(
        "(xmin, xmax, ymin, ymax), m (null: the roads' box with a 1 m margin)."))

    @field_validator("bounds_m")
    @classmethod
    def _bounds(cls, v):
        return _check_bounds(v)


class TraceConfig(RadioConfig):
    """Replay recorded trajectories (CSV ``t,client,x,y`` in one file, or ``t,x,y`` per
    client file), linearly interpolated."""

    path: Union[str, list[str]] = Field(description=(
        "A CSV file with columns t,client,x,y, or a list of CSV files with columns t,x,y (one "
        "per client); relative paths are read from the working directory."))
    bounds_m: Bounds | None = Field(None, description=(
        "(xmin, xmax, ymin, ymax), m (null: the samples' box with a 1 m margin)."))

    @field_validator("path")
    @classmethod
    def _some(cls, v):
        if (isinstance(v, list) and not v) or (isinstance(v, str) and not v.strip()):
            raise ValueError("path must name a file or a non-empty list of files. Got "
                             f"{v!r} instead. Fix: e.g. path: traces/walk.csv.")
        return v

    @field_validator("bounds_m")
    @classmethod
    def _bounds(cls, v):
        return _check_bounds(v)


MOBILITY: Registry = Registry("mobility model", "Mobility")
MOBILITY.register("static", StaticConfig, "channel.mobility:Static")
MOBILITY.register("random_waypoint", RandomWaypointConfig, "channel.mobility:RandomWaypoint")
MOBILITY.register("random_direction", RandomDirectionConfig, "channel.mobility:RandomDirection")
MOBILITY.register("gauss_markov", GaussMarkovConfig, "channel.mobility:GaussMarkov")
MOBILITY.register("constant_velocity", ConstantVelocityConfig, "channel.mobility:ConstantVelocity")
MOBILITY.register("trace", TraceConfig, "sim.radio:trace_mobility")


# ----------------------------------------------------------------------------- path loss
_LOS_DECORR = "LOS-state correlation distance, m (TR 38.901 Table 7.6.3.1-2)."


class UMaConfig(RadioConfig):
    """Urban Macro, TR 38.901 Table 7.4.1-1 (fc 0.5–100 GHz, 1.5 m <= hUT <= 22.5 m)."""

    h_e_m: float = Field(1.0, gt=0, lt=1.5, description="Effective environment height h_E, m.")
    los_decorrelation_m: Length = Field(50.0, description=_LOS_DECORR)


class UMiConfig(RadioConfig):
    """UMi – Street Canyon, TR 38.901 Table 7.4.1-1 (fc 0.5–100 GHz, 1.5 m <= hUT <= 22.5 m)."""

    los_decorrelation_m: Length = Field(50.0, description=_LOS_DECORR)


class RMaConfig(RadioConfig):
    """Rural Macro, TR 38.901 Table 7.4.1-1 (fc 0.5–30 GHz, 10 m <= hBS <= 150 m, 1 m <= hUT <= 10 m)."""

    building_height_m: float = Field(5.0, ge=5, le=50, description="Average building height h, m.")
    street_width_m: float = Field(20.0, ge=5, le=50, description="Average street width W, m.")
    los_decorrelation_m: Length = Field(60.0, description=_LOS_DECORR)


class InHOfficeConfig(RadioConfig):
    """Indoor Hotspot – Office, TR 38.901 Table 7.4.1-1 (fc 0.5–100 GHz)."""

    variant: Literal["mixed", "open"] = Field("mixed", description=(
        "LOS probability of a mixed or an open office (Table 7.4.2-1)."))
    los_decorrelation_m: Length = Field(10.0, description=_LOS_DECORR)


class FreeSpaceConfig(RadioConfig):
    """Free-space (Friis) path loss; every link is LOS."""

    sigma_sf_db: float = Field(0.0, ge=0, le=30, description="Log-normal shadowing sigma, dB (0: none).")
    sf_decorrelation_m: Length = Field(50.0, description="Shadowing correlation distance, m.")
    min_distance_m: Length = Field(1.0, description="3-D distances are clipped at this, m.")
    los_decorrelation_m: Length = Field(50.0, description=_LOS_DECORR)


class LogDistanceConfig(FreeSpaceConfig):
    """Log-distance path loss PL0 + 10·n·log10(d / d0); every link is LOS."""

    exponent: float = Field(3.0, ge=1, le=10, description="Path-loss exponent n (2: free space).")
    ref_distance_m: Length = Field(1.0, description="Reference distance d0, m.")
    ref_loss_db: float | None = Field(None, ge=0, le=300, description=(
        "PL0 at d0, dB (null: the free-space loss at d0 and the carrier)."))


PATHLOSS: Registry = Registry("path-loss model", "Pathloss")
PATHLOSS.register("uma", UMaConfig, "channel.pathloss:UMa")
PATHLOSS.register("umi", UMiConfig, "channel.pathloss:UMiStreetCanyon")
PATHLOSS.register("rma", RMaConfig, "channel.pathloss:RMa")
PATHLOSS.register("inh_office", InHOfficeConfig, "channel.pathloss:InHOffice")
PATHLOSS.register("free_space", FreeSpaceConfig, "channel.pathloss:FreeSpace")
PATHLOSS.register("log_distance", LogDistanceConfig, "channel.pathloss:LogDistance")


# ----------------------------------------------------------------------------- fading
class NoFadingConfig(RadioConfig):
    """No small-scale fading (link state still changes at block boundaries)."""

    block_s: float = Field(0.01, ge=1e-5, le=3600, description=(
        "Fading block, s: link state (and rates) change only at multiples of it."))


class RayleighConfig(NoFadingConfig):
    """Rayleigh block fading, Jakes-correlated over time (or i.i.d. per block)."""

    time_correlated: bool = Field(True, description="Jakes-correlated blocks (else i.i.d.).")


class RicianConfig(RayleighConfig):
    """Rician block fading on every link (``rician``), or on LOS links with Rayleigh on
    NLOS ones (``rician_los``)."""

    k_factor_db: float | None = Field(None, ge=-30, le=60, description=(
        "Rician K-factor, dB (null: the path-loss scenario's 38.901 mean, else 9 dB)."))


FADING: Registry = Registry("fading model", "Fading")
FADING.register("none", NoFadingConfig, "sim.radio:fading_options")
FADING.register("rayleigh", RayleighConfig, "sim.radio:fading_options")
FADING.register("rician", RicianConfig, "sim.radio:fading_options")
FADING.register("rician_los", RicianConfig, "sim.radio:fading_options")


# ----------------------------------------------------------------------------- rate
class ShannonConfig(RadioConfig):
    """Shannon capacity with an SNR gap and a spectral-efficiency cap."""

    gap_db: float = Field(0.0, ge=-10, le=30, description="SNR gap to capacity, dB.")
    max_se_bps_hz: float | None = Field(None, gt=0, le=100, description=(
        "Spectral-efficiency cap, bit/s/Hz (null: none)."))
    overhead: float = Field(0.0, ge=0, lt=1, description="Fraction of resources not carrying data.")


class CqiConfig(RadioConfig):
    """TS 38.214 CQI table: SNR -> CQI -> spectral efficiency; outage below the lowest CQI."""

    table: Literal["64qam", "256qam"] = Field("256qam", description=(
        "CQI table: 64qam (Table 5.2.2.1-2) or 256qam (Table 5.2.2.1-3)."))
    gap_db: float = Field(0.0, ge=-10, le=30, description="SNR gap added to the CQI thresholds, dB.")
    overhead: float = Field(0.0, ge=0, lt=1, description="Fraction of resources not carrying data.")


RATES: Registry = Registry("rate mapping", "Rate")
RATES.register("shannon", ShannonConfig, "channel.link:RateMapper")
RATES.register("cqi", CqiConfig, "channel.link:RateMapper")

"""fedwave.channel — radio models, vectorised numpy over links ``[..., n_bs, n_ue]``.

numpy/scipy only (no simpy, no torch): usable on its own, e.g. to plot path loss in a
notebook. Units are in the names (``distance_m``, ``carrier_hz``, ``tx_power_dbm``,
``bandwidth_hz``, ``speed_mps``); randomness comes from an explicit
``np.random.Generator``; stateful models have ``reset()``. Fading, shadowing and LOS
state are fields of (seed, client, link, position, time): the channel can be asked about
any moment, in any order, and gives the same values whatever was asked before.

Modules: :mod:`~channel.geometry` (layouts, drops, distances, antenna pattern),
:mod:`~channel.mobility`, :mod:`~channel.pathloss` (TR 38.901 + textbook models, LOS),
:mod:`~channel.shadowing`, :mod:`~channel.fading`, :mod:`~channel.link` (noise, SINR,
association, rate mapping) and :mod:`~channel.radio` (the composite :class:`RadioChannel`).
"""

from .fading import BlockFading, coherence_time_s, doppler_hz
from .geometry import (
    Layout,
    distances_m,
    drop_hotspots,
    drop_uniform_disc,
    drop_uniform_in_cells,
    drop_uniform_rectangle,
    explicit_positions,
    explicit_sites,
    hex_grid,
    sector_antenna_gain_db,
    single_cell,
)
from .link import (
    CQI_TABLES,
    OVERHEAD_TS38306,
    RATE_MAPPERS,
    Association,
    RateMapper,
    cqi_from_sinr_db,
    cqi_rate_bps,
    cqi_thresholds_db,
    downlink_sinr_db,
    downlink_sinr_linear,
    predict_capacity_bits,
    rx_power_dbm,
    shannon_rate_bps,
    sinr_db,
    thermal_noise_dbm,
    uplink_sinr_db,
    uplink_interference_mw,
    uplink_sinr_linear,
)
from .units import db_to_linear, dbm_to_mw, dbm_to_watt, linear_to_db, mw_to_dbm, watt_to_dbm
from .mobility import (
    MOBILITY_MODELS,
    ConstantVelocity,
    GaussMarkov,
    Mobility,
    RandomDirection,
    RandomWaypoint,
    Static,
    TraceFormatError,
    TraceReplay,
    make_mobility,
)
from .pathloss import (
    PATHLOSS_MODELS,
    FreeSpace,
    InHOffice,
    LogDistance,
    LosState,
    PathlossModel,
    RMa,
    UMa,
    UMiStreetCanyon,
    draw_los,
    fspl_db,
    make_pathloss,
)
from .radio import ChannelSample, RadioChannel
from .shadowing import CorrelatedShadowing

__all__ = [
    # geometry
    "Layout",
    "single_cell",
    "hex_grid",
    "explicit_sites",
    "sector_antenna_gain_db",
    "distances_m",
    "drop_uniform_disc",
    "drop_uniform_rectangle",
    "drop_uniform_in_cells",
    "drop_hotspots",
    "explicit_positions",
    # mobility
    "Mobility",
    "Static",
    "RandomWaypoint",
    "RandomDirection",
    "GaussMarkov",
    "ConstantVelocity",
    "TraceReplay",
    "TraceFormatError",
    "MOBILITY_MODELS",
    "make_mobility",
    # path loss
    "PathlossModel",
    "FreeSpace",
    "LogDistance",
    "UMa",
    "UMiStreetCanyon",
    "RMa",
    "InHOffice",
    "PATHLOSS_MODELS",
    "make_pathloss",
    "fspl_db",
    "draw_los",
    "LosState",
    # shadowing, fading
    "CorrelatedShadowing",
    "BlockFading",
    "doppler_hz",
    "coherence_time_s",
    # link
    "db_to_linear",
    "linear_to_db",
    "dbm_to_watt",
    "dbm_to_mw",
    "watt_to_dbm",
    "mw_to_dbm",
    "thermal_noise_dbm",
    "rx_power_dbm",
    "sinr_db",
    "downlink_sinr_db",
    "downlink_sinr_linear",
    "uplink_sinr_db",
    "uplink_interference_mw",
    "uplink_sinr_linear",
    "Association",
    "CQI_TABLES",
    "OVERHEAD_TS38306",
    "RATE_MAPPERS",
    "cqi_thresholds_db",
    "cqi_from_sinr_db",
    "cqi_rate_bps",
    "shannon_rate_bps",
    "RateMapper",
    "predict_capacity_bits",
    # composite
    "RadioChannel",
    "ChannelSample",
]

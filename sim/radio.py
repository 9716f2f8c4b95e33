"""The radio side of a scenario: channel/ models behind the :class:`LinkModel` interface.

:func:`build_radio` turns ``network`` and ``clients`` of a scenario into a
:class:`RadioLink`: layout, client drops, mobility per group, path loss, shadowing, block
fading (``channel.radio.RadioChannel``), association with hysteresis, and the rate mapping.

Link state is computed lazily, once per fading block, for all clients at once (one
vectorised ``gain_db`` call): only when a transfer is active in that block or the driver
asks (selection, capacity prediction, transfer start). Idle blocks cost nothing.

SINR: uplink interference comes from clients of other cells with an active uplink flow at
the block's first evaluation; downlink interference from cells with an active downlink
flow. Power concentration: a client given a fraction b/B of its cell's uplink band puts its
whole power there, so its SINR on that sub-band is the full-band SINR + 10·log10(B/b)
(noise and average interference scale with the band); downlink power is spread over the
band, so the downlink SINR does not depend on the share.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.links import UP, LinkModel

__all__ = ["RadioLink", "build_radio", "channel_registries", "MOBILITY_PROVIDED",
           "DROP_PROVIDED", "PATHLOSS_PROVIDED", "RATE_PROVIDED"]

# Parameters the simulator fills in itself (not accepted from YAML).
MOBILITY_PROVIDED = ("rng", "n_ue")  # plus the position parameter: mobility_provided(kind)
DROP_PROVIDED = ("rng", "n", "layout")
PATHLOSS_PROVIDED: tuple[str, ...] = ()
RATE_PROVIDED = ("kind",)


def _drop_table() -> dict[str, Any]:
    from channel import geometry as g

    return {"uniform_disc": g.drop_uniform_disc, "uniform_rectangle": g.drop_uniform_rectangle,
            "in_cells": g.drop_uniform_in_cells, "hotspots": g.drop_hotspots,
            "explicit": g.explicit_positions}


def channel_registries() -> dict[str, dict[str, Any]]:
    """Kinds YAML may name, by plug-in point: pathloss, rate, drop, mobility."""
    from channel.link import RATE_MAPPERS, RateMapper
    from channel.mobility import MOBILITY_MODELS
    from channel.pathloss import PATHLOSS_MODELS

    from channel.mobility import TraceReplay

    mobility = dict(MOBILITY_MODELS)
    mobility["trace"] = TraceReplay.from_csv
    return {"pathloss": dict(PATHLOSS_MODELS), "rate": {k: RateMapper for k in RATE_MAPPERS},
            "drop": _drop_table(), "mobility": mobility}


class RadioLink(LinkModel):
    """Link state of all clients from the channel models, one evaluation per fading block.

    Args:
        channel: a ``channel.radio.RadioChannel`` (``gain_db(t, xy, speed) -> [n_bs, n_ue]``).
        state: ``t -> (positions (n_clients, 2) m, speeds (n_clients,) m/s)``.
        tx_power_dbm: (n_clients,) UE power, dBm; bs_tx_power_dbm: BS power, dBm.
        noise_up_dbm, noise_down_dbm: noise over the whole cell band (uplink at the BS,
            downlink at the UE), dBm.
        association: ``channel.link.Association``; rate_mapper: ``channel.link.RateMapper``.
    """

    def __init__(self, channel, state, tx_power_dbm, bs_tx_power_dbm: float,
                 noise_up_dbm: float, noise_down_dbm: float, association, rate_mapper,
                 n_cells: int) -> None:
        from channel import link as L

        self._L = L
        self.channel = channel
        self.block_s = float(channel.block_s)
        self._positions = state
        self.tx_power_dbm = np.asarray(tx_power_dbm, dtype=np.float64)
        self.n_clients = len(self.tx_power_dbm)
        self.n_cells = n_cells
        self.bs_tx_power_dbm = bs_tx_power_dbm
        self.noise_up_dbm = noise_up_dbm
        self.noise_down_dbm = noise_down_dbm
        self.association = association
        self.mapper = rate_mapper
        self._block = -1
        self._sinr = {UP: np.zeros(self.n_clients), "down": np.zeros(self.n_clients)}
        self._full: dict[tuple[str, float], np.ndarray] = {}  # per-block full-band rates
        m = rate_mapper
        self._shannon = m.kind == "shannon"  # fast path: no dB round trip, no checks
        self._inv_gap = 10.0 ** (-m.gap_db / 10.0)
        self._cap = math.inf if m.max_se_bps_hz is None else m.max_se_bps_hz
        self._eff = 1.0 - m.overhead
        self.serving = np.zeros(self.n_clients, dtype=np.int64)
        self._evaluate(0, np.zeros(self.n_clients, bool), np.zeros(n_cells, bool))

    def _evaluate(self, block: int, tx_up, tx_down) -> np.ndarray:
        L = self._L
        t_b = block * self.block_s
        xy, speed = self._positions(t_b)
        gain = self.channel.gain_db(t_b, xy, speed)  # [n_bs, n_ue], dB
        # RSRP is layer-3 filtered in practice: associate on the large-scale gain (path
        # loss, shadowing, antenna), not on each block's fast fading (no ping-pong on fades).
        large = getattr(self.channel, "large_scale_gain_db", None)
        rsrp = (gain if large is None else large) + self.bs_tx_power_dbm
        serving, _ = self.association.update(t_b, rsrp)
        self._sinr[UP] = L.uplink_sinr_db(gain, self.tx_power_dbm, serving, tx_up,
                                          self.noise_up_dbm)
        self._sinr["down"] = L.downlink_sinr_db(gain, self.bs_tx_power_dbm, serving,
                                                self.noise_down_dbm, transmitting=tx_down)
        self._sinr_lin = {d: 10.0 ** (s / 10.0) for d, s in self._sinr.items()}
        self._full.clear()
        self._block = block
        return np.asarray(serving, dtype=np.int64)

    def refresh(self, t_s, clients, transmitting_up, transmitting_down):
        block = int(math.floor(t_s / self.block_s + 1e-9))
        if block == self._block:
            return []
        old = self.serving
        new = self._evaluate(block, transmitting_up, transmitting_down)
        self.serving = new
        moved = np.flatnonzero(new != old)
        return [(int(c), int(old[c]), int(new[c])) for c in moved]

    def sinr_db(self, clients, direction):
        return self._sinr[direction][np.asarray(clients, dtype=np.int64)]

    def full_rate_bps(self, clients, direction, cell_bandwidth_hz):
        key = (direction, float(cell_bandwidth_hz))
        full = self._full.get(key)
        if full is None:  # once per block, for all clients
            full = self._full[key] = self._rate(self._sinr_lin[direction], cell_bandwidth_hz)
        return full[clients]

    def _rate(self, sinr_lin, bw):
        if self._shannon:
            se = np.minimum(np.log2(1.0 + sinr_lin * self._inv_gap), self._cap)
            return bw * self._eff * se
        return self.mapper.rate_bps(10.0 * np.log10(sinr_lin), bw)

    def rate_bps(self, clients, direction, bandwidth_hz, cell_bandwidth_hz):
        s = self._sinr_lin[direction][np.asarray(clients, dtype=np.int64)]
        bw = np.asarray(bandwidth_hz, dtype=np.float64)
        if direction == UP:  # the UE's power concentrates on its sub-band
            s = s * (np.asarray(cell_bandwidth_hz, dtype=np.float64) / bw)
        return self._rate(s, bw)


class Radio:
    """What :func:`build_radio` returns: the link model plus geometry for plots."""

    def __init__(self, link: RadioLink, layout, cell_site: np.ndarray, mobilities) -> None:
        self.link = link
        self.layout = layout
        self.cell_site = cell_site
        self._mobilities = mobilities  # [(slice, Mobility)]

    def state(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions (n, 2) m, speeds (n,) m/s) of all clients at ``t_s``."""
        parts = [m.state(t_s) for _, m in self._mobilities]
        xy = np.concatenate([p[0] for p in parts], axis=0)
        v = np.concatenate([p[1] for p in parts], axis=0)
        return xy, np.hypot(v[:, 0], v[:, 1])

    def positions_m(self, t_s: float) -> np.ndarray:
        return self.state(t_s)[0]


def _layout(spec):
    from channel import geometry as g

    if spec.kind == "single_cell":
        return g.single_cell(spec.radius_m, spec.height_m, spec.n_sectors)
    if spec.kind == "hex_grid":
        return g.hex_grid(spec.n_rings, spec.isd_m, spec.height_m, spec.n_sectors)
    return g.explicit_sites(np.asarray(spec.sites_xy_m, float), spec.height_m, spec.n_sectors,
                            spec.bounds_m)


def _drop(scn, layout, rng) -> np.ndarray:
    spec = scn.clients.drop
    fn = _drop_table()[spec.kind]
    n = scn.clients.n_clients
    opts = spec.options
    if spec.kind == "in_cells":
        return fn(rng, layout, n, **opts)
    if spec.kind == "explicit":
        xy = fn(**opts)
        if len(xy) != n:
            raise ValueError(f"clients.drop.xy_m has {len(xy)} positions for {n} clients.")
        return xy
    if spec.kind == "uniform_rectangle" and "bounds_m" not in opts:
        opts = {**opts, "bounds_m": layout.bounds_m}
    if spec.kind == "uniform_disc":
        opts = {"center_xy_m": layout.site_xy_m[0], "radius_m": _radius(layout), **opts}
        opts["center_xy_m"] = np.asarray(opts["center_xy_m"], dtype=float).reshape(1, 2)
    return fn(rng, n, **opts)


def _radius(layout) -> float:
    r = layout.cell_radius_m
    if math.isfinite(r):
        return r
    x0, x1, y0, y1 = layout.bounds_m
    return 0.5 * min(x1 - x0, y1 - y0)


def _position_param(kind: str) -> str | None:
    """Name of the constructor parameter that takes the drop positions (None: YAML gives
    the trajectory itself, e.g. a road segment or a trace)."""
    return {"static": "xy_m", "constant_velocity": None, "trace": None}.get(kind, "start_xy_m")


def mobility_provided(kind: str) -> tuple[str, ...]:
    """Constructor parameters of mobility ``kind`` the simulator fills in."""
    p = _position_param(kind)
    return ("rng", "n_ue") + ((p,) if p else ())


def _mobility(kind: str, options: dict, xy0: np.ndarray, layout, rng):
    """Instantiate a channel mobility model, passing what the simulator provides by name."""
    import inspect

    from channel.mobility import MOBILITY_MODELS, TraceReplay

    if kind == "trace":
        mob = TraceReplay.from_csv(**options)
        if mob.n_ue != len(xy0):
            raise ValueError(f"The trace {options.get('path')!r} has {mob.n_ue} clients; its "
                             f"group has {len(xy0)}.")
        return mob
    cls = MOBILITY_MODELS[kind]
    params = inspect.signature(cls).parameters
    kw = dict(options)
    pos = _position_param(kind)
    if pos is not None:
        kw[pos] = xy0
    if "bounds_m" in params and "bounds_m" not in kw:
        kw["bounds_m"] = layout.bounds_m
    if "rng" in params:
        kw["rng"] = rng
    if "n_ue" in params:
        kw["n_ue"] = len(xy0)
    return cls(**kw)


def build_radio(scn, rng) -> Radio:
    """The radio models of ``scn`` with streams from ``rng`` (:class:`sim.rng.RngStreams`)."""
    from channel import link as L
    from channel.pathloss import make_pathloss
    from channel.radio import RadioChannel

    net = scn.network
    layout = _layout(net.layout)
    n = scn.clients.n_clients
    xy0 = _drop(scn, layout, rng.get("drops"))
    from sim.simulation import _group_of  # group blocks are contiguous, in group order

    groups = _group_of(scn, n)
    mobilities = []
    start = 0
    for g in scn.clients.groups:
        m = groups.count(g.name)
        if m == 0:
            continue
        sl = slice(start, start + m)
        mob = _mobility(g.mobility.kind, g.mobility.options, xy0[sl], layout,
                        rng.get(f"mobility/{g.name}"))
        mobilities.append((sl, mob))
        start += m
    pathloss = make_pathloss(net.pathloss.kind, **net.pathloss.options)
    channel = _make_channel(RadioChannel, scn, layout, pathloss, n, rng)
    tx = {g.name: (g.tx_power_dbm if g.tx_power_dbm is not None else scn.clients.tx_power_dbm)
          for g in scn.clients.groups}
    tx_power = np.array([tx[name] for name in groups])
    mapper = L.RateMapper(kind=net.rate.kind, **net.rate.options)
    radio = Radio(None, layout, np.asarray(layout.site_of_bs, dtype=np.int64), mobilities)
    radio.link = RadioLink(
        channel, radio.state, tx_power, net.bs_tx_power_dbm,
        float(L.thermal_noise_dbm(net.uplink_bandwidth_hz, net.noise_figure_db)),
        float(L.thermal_noise_dbm(net.downlink_bandwidth_hz, net.ue_noise_figure_db)),
        L.Association(net.association.hysteresis_db, net.association.time_to_trigger_s),
        mapper, layout.n_bs)
    return radio


def _make_channel(RadioChannel, scn, layout, pathloss, n, rng):
    net = scn.network
    fad = net.fading
    fading = None
    if fad.kind != "none":
        fading = {"kind": fad.kind, "iid": not fad.time_correlated}
        if fad.k_factor_db is not None:
            fading["k_factor_db"] = fad.k_factor_db
    return RadioChannel(
        layout, pathloss, net.carrier_hz, net.ue_height_m, n, fading=fading,
        shadowing=net.shadowing.enabled, block_s=fad.block_s,
        rngs={"los": rng.get("los"), "shadowing": rng.get("shadowing"),
              "fading": rng.get("fading")},
    )

"""The radio side of a scenario: channel/ models behind the :class:`LinkModel` interface.

:func:`build_radio` turns ``network`` and ``clients`` of a scenario into a
:class:`RadioLink`: layout, client drops, mobility per group, path loss, shadowing, block
fading (``channel.radio.RadioChannel``), association with hysteresis, and the rate mapping.

Link state is computed lazily, per fading block and per client: in a block, only the
clients that matter are evaluated — those with an active transfer (at the block boundary)
and those the driver asks about (selection, capacity prediction, transfer start) — in one
vectorised call for the clients of that moment (``RadioChannel.gain_linear(...,
ue_index=...)``). Idle clients and idle blocks cost nothing; the cost of a block grows with
the active clients, not with the population. A client's channel does not depend on which
other clients were evaluated (``channel.radio``): an idle client's fading is advanced
lazily, with the exact multi-block correlation, when it is next evaluated.

SINR: uplink interference comes from clients of other cells with an active uplink flow at
the block's first evaluation; downlink interference from cells with an active downlink
flow at that moment. Clients evaluated later in the block see the same interferers.
Power concentration: a client given a fraction b/B of its cell's uplink band puts its
whole power there, so its SINR on that sub-band is the full-band SINR + 10·log10(B/b)
(noise and average interference scale with the band); downlink power is spread over the
band, so the downlink SINR does not depend on the share.

Association (serving cell, handover) is evaluated with the same laziness: a client's
handover is detected — and traced — at the first evaluation of that client after its
strongest cell changed, i.e. while it transfers or when the driver asks about it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from channel import link as L
from sim.links import DOWN, UP, LinkModel

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
    """Link state of the clients that matter, from the channel models, per fading block.

    Args:
        channel: a ``channel.radio.RadioChannel``
            (``gains(t, xy, speed, ids) -> ([n_bs, m] linear, [n_bs, m] large-scale dB)``).
        state_of: ``(t, ids) -> (positions (m, 2) m, speeds (m,) m/s)`` of clients ``ids``.
        tx_power_dbm: (n_clients,) UE power, dBm; bs_tx_power_dbm: BS power, dBm.
        noise_up_dbm, noise_down_dbm: noise over the whole cell band (uplink at the BS,
            downlink at the UE), dBm.
        association: ``channel.link.Association`` (built with ``n_ue``);
            rate_mapper: ``channel.link.RateMapper``.
    """

    def __init__(self, channel, state_of, tx_power_dbm, bs_tx_power_dbm: float,
                 noise_up_dbm: float, noise_down_dbm: float, association, rate_mapper,
                 n_cells: int) -> None:
        self.channel = channel
        self.block_s = float(channel.block_s)
        self._state_of = state_of
        self.tx_power_dbm = np.asarray(tx_power_dbm, dtype=np.float64)
        self.n_clients = n = len(self.tx_power_dbm)
        self.n_cells = n_cells
        self.bs_tx_power_dbm = bs_tx_power_dbm
        self.noise_up_dbm = noise_up_dbm
        self.noise_down_dbm = noise_down_dbm
        self._p_ue_mw = 10.0 ** (self.tx_power_dbm / 10.0)  # (n,)
        self._p_bs_mw = 10.0 ** (bs_tx_power_dbm / 10.0)
        self._n_up_mw = 10.0 ** (noise_up_dbm / 10.0)
        self._n_down_mw = 10.0 ** (noise_down_dbm / 10.0)
        self.association = association
        self.mapper = rate_mapper
        m = rate_mapper
        self._shannon = m.kind == "shannon"  # fast path: no dB round trip, no checks
        self._inv_gap = 10.0 ** (-m.gap_db / 10.0)
        self._cap = math.inf if m.max_se_bps_hz is None else m.max_se_bps_hz
        self._eff = 1.0 - m.overhead
        self.serving = np.zeros(n, dtype=np.int64)
        self._sinr = {UP: np.zeros(n), DOWN: np.zeros(n)}  # linear, at each client's block
        self._sinr_f = {UP: [0.0] * n, DOWN: [0.0] * n}  # the same as Python floats
        self._at = [-1] * n  # block each client was last evaluated at
        self._block = -1  # the current block (its interferers are fixed at its first evaluation)
        self._i_up_mw = np.zeros(n_cells)  # uplink interference at each cell, this block
        self._tx_down = np.zeros(n_cells, dtype=bool)  # cells transmitting downlink, this block
        self.n_evaluated = 0  # client-blocks evaluated (a cost counter for benchmarks)
        self._t_last = -1.0
        self._k_last = -1

    def block_index(self, t_s: float) -> int:
        """The fading block containing ``t_s`` (the channel's own rule)."""
        if t_s != self._t_last:
            self._t_last = t_s
            self._k_last = self.channel.block_index(t_s)
        return self._k_last

    def refresh(self, t_s, clients, transmitting_up, transmitting_down):
        if t_s != self._t_last:  # cache: many refreshes share a time
            self._t_last = t_s
            self._k_last = self.channel.block_index(t_s)
        k = self._k_last
        if k == self._block:
            at = self._at
            if isinstance(clients, np.ndarray):
                clients = clients.tolist()
            need = [c for c in clients if at[c] != k]
            if not need:
                return []
            return self._evaluate(k, np.unique(np.array(need, dtype=np.int64)), None)
        # the block's first evaluation: the uplink transmitters are evaluated with it, since
        # their interference holds for the whole block
        self._block = k
        tx = np.flatnonzero(transmitting_up)
        if isinstance(clients, np.ndarray):
            clients = clients.tolist()
        need = np.array(sorted(set(clients).union(tx.tolist())), dtype=np.int64)  # ascending
        self._tx_down = np.array(transmitting_down, dtype=bool)
        return self._evaluate(k, need, tx)

    def _evaluate(self, k: int, need: np.ndarray, tx) -> list[tuple[int, int, int]]:
        """Channel, association and SINR of clients ``need`` (ascending) at block ``k``;
        ``tx`` (a subset of ``need``): this block's uplink transmitters, or None when the
        block's interference is already set."""
        t_b = self.channel.block_start_s(k)
        xy, speed = self._state_of(t_b, need)
        # g: [n_bs, m] linear gains. RSRP is layer-3 filtered in practice: associate on the
        # large-scale gain (path loss, shadowing, antenna), not on each block's fast fading
        # (no ping-pong on fades).
        g, rsrp = self.channel.gains(t_b, xy, speed, need)
        rsrp += self.bs_tx_power_dbm  # [n_bs, m], dBm
        old = self.serving[need]
        serving, fire = self.association.update(t_b, rsrp, cols=need)
        self.serving[need] = serving
        g_serv = g[serving, np.arange(need.size)]  # (m,)
        if tx is not None:
            pos = need.searchsorted(tx)
            self._i_up_mw = L.uplink_interference_mw(g[:, pos], self._p_ue_mw[tx], serving[pos])
        sinr_up = self._p_ue_mw[need] * g_serv / (self._i_up_mw[serving] + self._n_up_mw)
        mask = self._tx_down
        signal = self._p_bs_mw * g_serv
        total = self._p_bs_mw * (mask @ g) if np.count_nonzero(mask) else np.zeros(need.size)
        interference = np.maximum(total - signal * mask[serving], 0.0)
        sinr_down = signal / (interference + self._n_down_mw)
        self._sinr[UP][need] = sinr_up
        self._sinr[DOWN][need] = sinr_down
        fu, fd, at = self._sinr_f[UP], self._sinr_f[DOWN], self._at
        for c, su, sd in zip(need.tolist(), sinr_up.tolist(), sinr_down.tolist()):
            fu[c] = su
            fd[c] = sd
            at[c] = k
        self.n_evaluated += need.size
        if not np.count_nonzero(fire):
            return []
        return [(int(need[i]), int(old[i]), int(serving[i])) for i in fire.nonzero()[0]]

    # -- vectorised queries (selection, predictions) --------------------------------------
    def sinr_db(self, clients, direction):
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(self._sinr[direction][np.asarray(clients, dtype=np.int64)])

    def full_rate_bps(self, clients, direction, cell_bandwidth_hz):
        s = self._sinr[direction][np.asarray(clients, dtype=np.int64)]
        return self._rate(s, np.asarray(cell_bandwidth_hz, dtype=np.float64))

    def _rate(self, sinr_lin, bw):
        if self._shannon:
            se = np.minimum(np.log2(1.0 + sinr_lin * self._inv_gap), self._cap)
            return bw * self._eff * se
        with np.errstate(divide="ignore"):
            return self.mapper.rate_bps(10.0 * np.log10(sinr_lin), bw)

    def rate_bps(self, clients, direction, bandwidth_hz, cell_bandwidth_hz):
        s = self._sinr[direction][np.asarray(clients, dtype=np.int64)]
        bw = np.asarray(bandwidth_hz, dtype=np.float64)
        if direction == UP:  # the UE's power concentrates on its sub-band
            s = s * (np.asarray(cell_bandwidth_hz, dtype=np.float64) / bw)
        return self._rate(s, bw)

    # -- scalar queries (the transfer engine's per-event path) ------------------------------
    def rate_of(self, client, direction, bandwidth_hz, cell_bandwidth_hz):
        s = self._sinr_f[direction][client]
        if direction == UP and bandwidth_hz != cell_bandwidth_hz:
            s = s * (cell_bandwidth_hz / bandwidth_hz)
        if self._shannon:  # the same operations as _rate, on floats
            se = math.log2(1.0 + s * self._inv_gap)
            cap = self._cap
            return bandwidth_hz * self._eff * (cap if cap < se else se)  # min(se, cap)
        return float(self._rate(np.array([s]), np.array([bandwidth_hz]))[0])

    def rates_of(self, clients, direction, fractions, cell_bandwidth_hz):
        if not self._shannon:
            return super().rates_of(clients, direction, fractions, cell_bandwidth_hz)
        sinr = self._sinr_f[direction]
        inv_gap, cap, log2 = self._inv_gap, self._cap, math.log2
        b = cell_bandwidth_hz
        # (cap if cap < se else se) is min(se, cap) without the call; b * eff * se groups as
        # (b * eff) * se, so that product is taken once per call
        if fractions is None:
            be = b * self._eff
            return [be * (cap if cap < (se := log2(1.0 + sinr[c] * inv_gap)) else se)
                    for c in clients]
        eff = self._eff
        out = []
        up = direction == UP
        for c, f in zip(clients, fractions):
            bw = f * b
            s = sinr[c]
            if up and bw != b:
                s = s * (b / bw)
            se = log2(1.0 + s * inv_gap)
            out.append(bw * eff * (cap if cap < se else se))
        return out

    def sinr_db_of(self, client, direction):
        s = self._sinr_f[direction][client]
        return 10.0 * math.log10(s) if s > 0.0 else -math.inf


class Radio:
    """What :func:`build_radio` returns: the link model plus geometry for plots."""

    def __init__(self, link: RadioLink, layout, cell_site: np.ndarray, mobilities) -> None:
        self.link = link
        self.layout = layout
        self.cell_site = cell_site
        self._mobilities = mobilities  # [(slice, Mobility)], contiguous, in client order

    def state(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions (n, 2) m, speeds (n,) m/s) of all clients at ``t_s``."""
        parts = [m.state(t_s) for _, m in self._mobilities]
        xy = np.concatenate([p[0] for p in parts], axis=0)
        v = np.concatenate([p[1] for p in parts], axis=0)
        return xy, np.hypot(v[:, 0], v[:, 1])

    def state_of(self, t_s: float, clients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions (m, 2) m, speeds (m,) m/s) of ``clients`` at ``t_s`` (only theirs)."""
        clients = np.asarray(clients, dtype=np.int64)
        if len(self._mobilities) == 1:
            (sl, mob), = self._mobilities
            xy, v = mob.state_of(t_s, clients - sl.start if sl.start else clients)
            return xy, np.hypot(v[:, 0], v[:, 1])
        xy = np.empty((clients.size, 2))
        v = np.empty((clients.size, 2))
        for sl, mob in self._mobilities:
            mine = np.flatnonzero((clients >= sl.start) & (clients < sl.stop))
            if mine.size:
                xy[mine], v[mine] = mob.state_of(t_s, clients[mine] - sl.start)
        return xy, np.hypot(v[:, 0], v[:, 1])

    def positions_m(self, t_s: float, clients=None) -> np.ndarray:
        """(n, 2) positions at ``t_s`` (of ``clients`` only, (m, 2), when given), m."""
        return self.state(t_s)[0] if clients is None else self.state_of(t_s, clients)[0]

    def forget_before(self, t_s: float) -> None:
        """Let the mobility models drop trajectory history before ``t_s`` (memory of long
        runs); later queries must not go before it."""
        for _, mob in self._mobilities:
            forget = getattr(mob, "forget_before", None)
            if forget is not None:
                forget(t_s)

    def replay_positions_m(self, times_s, clients) -> np.ndarray:
        """(n_t, m, 2) positions of ``clients`` at ascending ``times_s``, replayed from the
        start of the trajectories (they are functions of the seed only); call it after the
        run: it rewinds the mobility models."""
        for _, mob in self._mobilities:
            mob.reset()
        out = []
        for i, t in enumerate(times_s):
            out.append(self.positions_m(float(t), clients))
            if i % 16 == 15:  # bounded memory, at a fraction of the (per-client) cost
                self.forget_before(float(t))
        return np.stack(out)


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
        channel, radio.state_of, tx_power, net.bs_tx_power_dbm,
        float(L.thermal_noise_dbm(net.uplink_bandwidth_hz, net.noise_figure_db)),
        float(L.thermal_noise_dbm(net.downlink_bandwidth_hz, net.ue_noise_figure_db)),
        L.Association(net.association.hysteresis_db, net.association.time_to_trigger_s, n_ue=n),
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

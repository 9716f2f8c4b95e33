"""The transfer engine: flows of bits over piecewise-constant radio links.

Each cell has one bandwidth pool per direction; a pool holds the cell's active flows and a
MAC policy (:mod:`sim.mac`). A flow's rate is constant between *change points*:

- a flow starts or ends in the pool (the MAC re-shares the band),
- a fading-block boundary (the link model's rates change; ``LinkModel.block_s``),
- a handover (the flow moves to the new cell's pool),
- outage (rate 0 → ``outage_start``; back above → ``outage_end``).

No per-tick processes: each pool keeps at most *one* pending wake-up, at its earliest
exact completion time ``t + remaining_bits / rate`` (a plain SimPy timeout with a callback;
a generation counter voids wake-ups made stale by a later change). A completion at or after
the next block boundary needs no wake-up: the boundary re-plans every active pool anyway.
Block boundaries are scheduled only while some flow is active, and all active links are
refreshed in one vectorised call per boundary. Idle clients cost nothing. Clients can be
*held* (:meth:`Network.hold`; the drivers hold a round's participants): their links are
evaluated in the same batch at every block, so a transfer that starts mid-block finds its
link evaluated instead of paying a vectorised call of its own.

The per-event path (start, completion, re-plan) works on plain Python floats: a cell has
a handful of active flows, where numpy's per-call cost exceeds the arithmetic. The link
model's scalar queries (``LinkModel.rates_of``) serve it; the two stateless MAC policies
(equal share, round robin) have a float twin here (:func:`_shares`, the same arithmetic,
checked against the policies by a test); the others are called with numpy arrays.

Accounting is exact: at every change point each flow is *settled* (``sent += rate · Δt``,
``airtime += time_frac · Δt``). For every flow, ``bits = delivered + lost`` where a flow
that completes has ``delivered = bits`` and a cancelled one has ``delivered = sent``
(bits that crossed the air) and ``lost = bits − sent``.
"""

from __future__ import annotations

import math
from heapq import heappush
from typing import Callable

import numpy as np
import simpy
from simpy.core import NORMAL
from simpy.events import Event

from sim.links import DOWN, UP, LinkModel
from sim.mac import EqualShare, MacPolicy, ProportionalFair, RoundRobin, make_mac
from sim.trace import Tracer

__all__ = ["Flow", "Network"]

_DIRS = (UP, DOWN)


class Flow:
    """One radio transfer (payload of ``bits`` over one client's link in one direction).

    Attributes (all SI units): ``sent`` bits crossed so far; ``rate`` current bit/s;
    ``airtime_s`` time actually transmitting (TDMA shares count their fraction);
    ``energy_j`` radio energy of the client for this flow; ``ok`` True once delivered,
    False once failed (``reason``), None while active; ``done`` a SimPy event that succeeds
    with the flow when it ends either way.
    """

    __slots__ = ("fid", "client", "direction", "cell", "bits", "sent", "rate", "full_rate",
                 "time_frac", "t_start", "t_end", "airtime_s", "energy_j", "power_w",
                 "in_outage", "outage_since", "round", "label", "ok", "reason", "done",
                 "capacity_bits", "k")

    def __init__(self, fid, client, direction, cell, bits, power_w, rnd, label, done,
                 t_start, capacity_bits=None, k=None):
        self.fid = fid
        self.client = client
        self.direction = direction
        self.cell = cell
        self.bits = bits
        self.sent = 0.0
        self.rate = 0.0
        self.full_rate = 0.0
        self.time_frac = 0.0
        self.t_start = t_start
        self.t_end = math.nan
        self.airtime_s = 0.0
        self.energy_j = 0.0
        self.power_w = power_w
        self.in_outage = False
        self.outage_since = math.nan
        self.round = rnd
        self.label = label
        self.ok: bool | None = None
        self.reason: str | None = None
        self.done = done
        self.capacity_bits = capacity_bits
        self.k = k

    @property
    def remaining_bits(self) -> float:
        return self.bits - self.sent


def _shares(mac: MacPolicy, keys: list[int], full: list[float]) -> tuple[list[float], list[float]]:
    """``mac.shares`` on Python floats: (bw_frac, time_frac) lists.

    Equal share and round robin are computed here with the policies' own arithmetic (they
    are stateless; numpy would cost more than the work on a handful of flows); every other
    policy is called as documented, with numpy arrays.
    """
    kind = type(mac)
    if kind is EqualShare or kind is RoundRobin:
        live = [r > 0 for r in full]
        share = 1.0 / max(sum(live), 1)
        one = [1.0 if x else 0.0 for x in live]
        part = [share if x else 0.0 for x in live]
        return (part, one) if kind is EqualShare else (one, part)
    bw, tf = mac.shares(keys, np.array(full, dtype=np.float64))
    return bw.tolist(), tf.tolist()


class _Pool:
    """The active flows of one cell in one direction, and their MAC policy."""

    __slots__ = ("cell", "direction", "bandwidth_hz", "mac", "observes", "equal_share",
                 "solo_full", "flows", "gen", "t_last")

    def __init__(self, cell: int, direction: str, bandwidth_hz: float, mac: MacPolicy) -> None:
        self.cell = cell
        self.direction = direction
        self.bandwidth_hz = bandwidth_hz
        self.mac = mac
        self.observes = type(mac).observe is not MacPolicy.observe  # keeps state (PF)
        self.equal_share = type(mac) is EqualShare
        # a lone live flow gets the whole band all the time (rate = its full-band rate)
        self.solo_full = type(mac) is EqualShare or type(mac) is RoundRobin
        self.flows: dict[int, Flow] = {}  # insertion order = start order (deterministic)
        self.gen = 0
        self.t_last = 0.0


class Network:
    """Radio transfers of all cells, driven by a :class:`LinkModel`.

    Args:
        env: the simulation's environment.
        link: the link model (serving cells, SINR, rates).
        uplink_bandwidth_hz, downlink_bandwidth_hz: per-cell band, scalar or (n_cells,).
        mac: MAC policy name (``sim.mac.MAC_POLICIES``); one instance per cell and direction.
        mac_options: options for the policy's Config.
        tracer: where events go.
        outage_timeout_s: a flow continuously in outage this long fails (reason ``outage``);
            None waits (until the driver's deadline, if any).
    """

    def __init__(self, env: simpy.Environment, link: LinkModel, uplink_bandwidth_hz,
                 downlink_bandwidth_hz, mac: str = "equal_share", mac_options: dict | None = None,
                 tracer: Tracer | None = None, outage_timeout_s: float | None = None) -> None:
        self.env = env
        self.link = link
        self.tracer = tracer if tracer is not None else Tracer(enabled=False)
        self.outage_timeout_s = outage_timeout_s
        n = link.n_cells
        bw = {UP: np.broadcast_to(np.asarray(uplink_bandwidth_hz, float), (n,)),
              DOWN: np.broadcast_to(np.asarray(downlink_bandwidth_hz, float), (n,))}
        for d in _DIRS:
            if np.any(bw[d] <= 0):
                raise ValueError(f"Cell bandwidths must be > 0 Hz. Got {bw[d].tolist()} ({d}link).")
        self._pools: dict[tuple[int, str], _Pool] = {
            (c, d): _Pool(c, d, float(bw[d][c]), make_mac(mac, mac_options))
            for c in range(n) for d in _DIRS
        }
        self._bandwidth = {d: np.array(bw[d], dtype=np.float64) for d in _DIRS}  # (n_cells,)
        self._client_flows: dict[int, list[Flow]] = {}
        self._tx_up = np.zeros(link.n_clients, dtype=bool)
        self._tx_down = np.zeros(n, dtype=bool)  # cells with an active downlink flow
        self._n_active = 0
        self._next_fid = 0
        self._block_pending = False
        self._block_at = math.inf  # time of the pending block-boundary event
        self._held: dict[int, int] = {}  # clients evaluated at every block (hold count)
        self._last_block = -1  # the block of the latest link refresh
        self._last_now = -1.0  # cache: the block of this time
        self._now_block = -1
        # Totals for the accounting invariant (bits offered = delivered + lost + in flight).
        self.bits_offered = 0.0
        self.bits_delivered = 0.0  # bits that crossed the air (complete and partial)
        self.bits_lost = 0.0       # bits of failed flows that never crossed
        self.on_handover: Callable[[int, int, int], None] | None = None
        # Kernel events this network scheduled, by kind (for benchmarks and tests).
        self.n_block_events = 0
        self.n_wakeups = 0

    # ------------------------------------------------------------------ public API
    @property
    def n_active(self) -> int:
        """Number of flows in progress."""
        return self._n_active

    def pool_flows(self, cell: int, direction: str) -> list[Flow]:
        """Active flows of ``cell`` in ``direction`` (start order)."""
        return list(self._pools[(cell, direction)].flows.values())

    def hold(self, client: int) -> None:
        """Keep ``client``'s link state current: from now on it is evaluated at every fading
        block the network steps through, in one batch with the transferring clients (the
        round drivers hold a round's participants, so that a transfer starting mid-block
        finds its link already evaluated). Calls nest; :meth:`release` undoes one."""
        self._held[client] = self._held.get(client, 0) + 1

    def release(self, client: int) -> None:
        """Undo one :meth:`hold` of ``client``."""
        n = self._held.get(client, 0) - 1
        if n > 0:
            self._held[client] = n
        else:
            self._held.pop(client, None)

    def serving_cell(self, client: int) -> int:
        """The client's serving cell (refreshed to now)."""
        self.refresh([client])
        return int(self.link.serving[client])

    def refresh(self, clients) -> None:
        """Bring the link state of ``clients`` (ints) to now (handovers are traced and applied)."""
        for pool in self._refresh(clients):
            self._replan(pool)

    def full_rate_bps(self, clients, direction: str) -> np.ndarray:
        """(m,) rate each client would have alone on its cell's whole band, now."""
        clients = np.asarray(clients, dtype=np.int64)
        self.refresh(clients)
        bw = self._bandwidth[direction][self.link.serving[clients]]
        return self.link.full_rate_bps(clients, direction, bw)

    def sinr_db(self, client: int, direction: str) -> float:
        """Current full-band SINR (dB) of ``client`` in ``direction``."""
        return self.link.sinr_db_of(client, direction)

    def predict_rate(self, client: int, direction: str) -> float:
        """Rate (bit/s) a new flow of ``client`` would get now, sharing its cell with the
        flows already there (current channel state and current MAC share)."""
        self.refresh([client])
        pool = self._pools[(int(self.link.serving[client]), direction)]
        self._settle(pool)
        if pool.equal_share:  # _pool_rates' common cases, for the probe's rate alone
            clients = [f.client for f in pool.flows.values()]
            clients.append(client)
            full = self.link.rates_of(clients, direction, None, pool.bandwidth_hz)
            n = len(clients)
            if n == 1:
                if full[0] > 0:
                    return full[0]
            elif all(r > 0 for r in full):
                return self.link.rates_of([client], direction, [1.0 / n], pool.bandwidth_hz)[0]
        probe = Flow(-1, client, direction, pool.cell, 0, 0.0, None, "", None, self.env.now)
        return self._pool_rates(pool, [*pool.flows.values(), probe])[0][-1]

    def start(self, client: int, direction: str, bits: int, power_w: float = 0.0,
              rnd: int | None = None, label: str = "", capacity_bits: float | None = None,
              k: int | None = None) -> Flow:
        """Start a transfer of ``bits`` now; ``flow.done`` succeeds when it ends.

        ``power_w``: the client's radio power while it transmits (uplink) or receives
        (downlink); its energy is ``power_w · airtime``.
        """
        env = self.env
        self.refresh([client])
        cell = int(self.link.serving[client])
        flow = Flow(self._next_fid, client, direction, cell, int(bits), power_w, rnd, label,
                    env.event(), env.now, capacity_bits, k)
        self._next_fid += 1
        self.bits_offered += flow.bits
        pool = self._pools[(cell, direction)]
        if flow.bits == 0:
            self._trace_start(flow)
            self._finish(flow, ok=True)
            return flow
        self._settle(pool)
        pool.flows[flow.fid] = flow
        flows = self._client_flows.get(client)
        if flows is None:
            self._client_flows[client] = [flow]
        else:
            flows.append(flow)
        if direction == UP:
            self._tx_up[client] = True
        else:
            self._tx_down[cell] = True
        self._n_active += 1
        if isinstance(pool.mac, ProportionalFair):
            bw = pool.bandwidth_hz
            pool.mac.first_seen(flow.fid, self.link.rates_of([client], direction, None, bw)[0])
        self._ensure_block_timer()  # first: the pool's wake-up looks at the next boundary
        self._replan(pool)
        self._trace_start(flow)
        return flow

    def cancel(self, flow: Flow, reason: str) -> None:
        """Interrupt an active flow now (deadline, drop-out); partial bits are accounted."""
        if flow.ok is not None:
            return
        pool = self._pools[(flow.cell, flow.direction)]
        self._settle(pool)
        self._remove(pool, flow)
        self._finish(flow, ok=False, reason=reason)
        self._replan(pool)

    # ------------------------------------------------------------------ internals
    def _rates(self, pool: _Pool, clients: list[int], keys: list[int]):
        """(rate, full_rate, time_frac) lists of ``clients`` sharing ``pool`` (Python floats)."""
        d = pool.direction
        bw = pool.bandwidth_hz
        full = self.link.rates_of(clients, d, None, bw)
        bw_frac, time_frac = _shares(pool.mac, keys, full)
        rate = [fr * tf if b > 0.0 else 0.0 for fr, b, tf in zip(full, bw_frac, time_frac)]
        # a sub-band share: the link decides its rate (uplink power concentration)
        sub = [i for i, b in enumerate(bw_frac) if 0.0 < b < 1.0]
        if sub:
            sub_rate = self.link.rates_of([clients[i] for i in sub], d,
                                          [bw_frac[i] for i in sub], bw)
            for i, r in zip(sub, sub_rate):
                rate[i] = r * time_frac[i]
        return rate, full, time_frac

    def _settle(self, pool: _Pool) -> None:
        now = self.env.now
        dt = now - pool.t_last
        if dt > 0 and pool.flows:
            flows = pool.flows.values()
            for f in flows:
                f.sent += f.rate * dt
                air = f.time_frac * dt
                f.airtime_s += air
                f.energy_j += f.power_w * air
            if pool.observes:
                pool.mac.observe([f.fid for f in flows], np.array([f.rate for f in flows]), dt)
        pool.t_last = now

    def _pool_rates(self, pool: _Pool, flows: list[Flow]):
        """:meth:`_rates` of ``flows`` (of ``pool``), with equal share's common cases
        (nobody in outage) done directly — the same arithmetic, without the generic detour."""
        clients = [f.client for f in flows]
        if pool.equal_share:
            d, bw = pool.direction, pool.bandwidth_hz
            rates_of = self.link.rates_of
            full = rates_of(clients, d, None, bw)
            n = len(clients)
            if n == 1:
                if full[0] > 0:  # alone: the whole band
                    return full, full, [1.0]
            elif all(r > 0 for r in full):  # 1/n of the band each
                return rates_of(clients, d, [1.0 / n] * n, bw), full, [1.0] * n
        return self._rates(pool, clients, [f.fid for f in flows])

    def _replan(self, pool: _Pool) -> None:
        """A change point of ``pool`` (settled): new rates from the MAC share, outage
        transitions, and the wake-up at the earliest exact completion."""
        pool.gen += 1
        if not pool.flows:
            return
        if pool.solo_full and len(pool.flows) == 1:
            # the common case: one flow alone gets the whole band all the time (what
            # _pool_rates returns for it), unless it is in outage (the general path)
            (f,) = pool.flows.values()
            bw = pool.bandwidth_hz
            fr = self.link.rate_of(f.client, pool.direction, bw, bw)
            if fr > 0:
                f.rate = f.full_rate = fr
                f.time_frac = 1.0
                if f.in_outage:
                    self._outage(f, False)
                self._wake(pool, (f.bits - f.sent) / fr)
                return
        flows = list(pool.flows.values())
        rate, full, time_frac = self._pool_rates(pool, flows)
        best = math.inf
        for f, r, fr, tf in zip(flows, rate, full, time_frac):
            f.rate = r
            f.full_rate = fr
            if r > 0:
                f.time_frac = tf
                dt = (f.bits - f.sent) / r
                if dt < best:
                    best = dt
            else:
                f.time_frac = 0.0
            if fr <= 0:
                if not f.in_outage:
                    self._outage(f, True)
            elif f.in_outage:
                self._outage(f, False)
        if best < math.inf:
            self._wake(pool, best)

    def _wake(self, pool: _Pool, best: float) -> None:
        """Schedule ``pool``'s wake-up ``best`` seconds from now (its earliest completion)."""
        delay = max(best, 0.0)
        env = self.env
        at = env._now + delay
        if at < self._block_at:  # else the boundary re-plans first
            self.n_wakeups += 1
            # what env.timeout(delay, value=...) schedules (same time, priority and event
            # id), without building a Timeout on this per-event path
            ev = Event(env)
            ev._ok = True
            ev._value = (pool, pool.gen)
            ev.callbacks.append(self._on_pool_wake)
            heappush(env._queue, (at, NORMAL, next(env._eid), ev))

    def _outage(self, f: Flow, start: bool) -> None:
        now = self.env.now
        f.in_outage = start
        if start:
            f.outage_since = now
        if self.tracer.enabled:
            self.tracer.record(now, "outage_start" if start else "outage_end", f.round, f.client,
                               f.cell, f.direction, snr_db=self.sinr_db(f.client, f.direction),
                               rate_bps=0.0 if start else f.full_rate)
        if start and self.outage_timeout_s is not None:
            ev = self.env.timeout(self.outage_timeout_s, value=(f, now))
            ev.callbacks.append(self._on_outage_timer)

    def _on_pool_wake(self, ev) -> None:
        pool, gen = ev._value
        if gen != pool.gen:
            return  # a later change point rescheduled this pool
        self._settle(pool)
        done = [f for f in pool.flows.values()
                if f.rate > 0 and f.bits - f.sent <= 1e-9 * f.bits + 1e-9]
        for f in done:
            self._remove(pool, f)
            self._finish(f, ok=True)
        self._replan(pool)

    def _on_outage_timer(self, ev) -> None:
        flow, since = ev._value
        if flow.ok is None and flow.in_outage and flow.outage_since == since:
            self.cancel(flow, "outage")

    def _remove(self, pool: _Pool, flow: Flow) -> None:
        del pool.flows[flow.fid]
        pool.mac.forget(flow.fid)
        lst = self._client_flows[flow.client]
        lst.remove(flow)
        if not lst:
            del self._client_flows[flow.client]
        if flow.direction == UP and not any(f.direction == UP for f in lst):
            self._tx_up[flow.client] = False
        if flow.direction == DOWN and not pool.flows:
            self._tx_down[pool.cell] = False
        self._n_active -= 1

    def _finish(self, flow: Flow, ok: bool, reason: str | None = None) -> None:
        now = self.env.now
        flow.t_end = now
        flow.ok = ok
        flow.reason = reason
        if ok:
            flow.sent = float(flow.bits)
        self.bits_delivered += flow.sent
        self.bits_lost += flow.bits - flow.sent
        if self.tracer.enabled:
            duration = now - flow.t_start
            self.tracer.record(  # t_s, event, round, client, cell, direction, bits, delivered,
                now, "send_end" if ok else "send_failed", flow.round, flow.client, flow.cell,
                flow.direction, flow.bits, flow.sent,
                self.link.sinr_db_of(flow.client, flow.direction),  # snr_db
                flow.sent / duration if duration > 0 else None,  # rate_bps (mean)
                None, None, flow.energy_j, flow.label if ok else reason)  # capacity, k, energy, detail
        if not flow.done.triggered:
            flow.done.succeed(flow)

    def _trace_start(self, flow: Flow) -> None:
        if self.tracer.enabled:
            self.tracer.record(  # t_s, event, round, client, cell, direction, bits, delivered,
                self.env.now, "send_start", flow.round, flow.client, flow.cell, flow.direction,
                flow.bits, None, self.link.sinr_db_of(flow.client, flow.direction),  # snr_db
                flow.rate, flow.capacity_bits, flow.k, None, flow.label)  # rate .. detail

    def _refresh(self, clients) -> list[_Pool]:
        """Refresh link state; apply handovers; return pools that need re-sharing.

        The first refresh in a fading block also evaluates the held clients (one batch)."""
        if len(clients) == 0:
            return []
        now = self.env.now
        if now != self._last_now:
            self._last_now = now
            self._now_block = self.link.block_index(now)
        k = self._now_block
        if k != self._last_block:
            self._last_block = k
            if self._held:
                clients = sorted(set(self._held).union(
                    clients.tolist() if isinstance(clients, np.ndarray) else clients))
        handovers = self.link.refresh(now, clients, self._tx_up, self._tx_down)
        if not handovers:
            return []
        dirty: list[_Pool] = []
        for client, old, new in handovers:
            self.tracer.record(self.env.now, "handover", None, client, new,
                               detail=f"from {old}")
            if self.on_handover is not None:
                self.on_handover(client, old, new)
            for flow in list(self._client_flows.get(client, ())):
                src = self._pools[(old, flow.direction)]
                dst = self._pools[(new, flow.direction)]
                self._settle(src)
                self._settle(dst)
                del src.flows[flow.fid]
                src.mac.forget(flow.fid)
                flow.cell = new
                dst.flows[flow.fid] = flow
                if flow.direction == DOWN:
                    self._tx_down[old] = bool(src.flows)
                    self._tx_down[new] = True
                for p in (src, dst):
                    if p not in dirty:
                        dirty.append(p)
        return dirty

    def _ensure_block_timer(self) -> None:
        if self._block_pending or math.isinf(self.link.block_s) or self._n_active == 0:
            return
        bs = self.link.block_s
        now = self.env.now
        k = math.floor(now / bs + 1e-9) + 1
        self._block_pending = True
        ev = self.env.timeout(max(k * bs - now, 0.0))
        self._block_at = now + max(k * bs - now, 0.0)  # the event's time, as SimPy computes it
        self.n_block_events += 1
        ev.callbacks.append(self._on_block)

    def _on_block(self, ev) -> None:
        self._block_pending = False
        self._block_at = math.inf
        if self._n_active == 0:
            return
        self._ensure_block_timer()  # first: the pools re-planned below look at it
        active = [p for p in self._pools.values() if p.flows]
        for pool in active:
            self._settle(pool)
        for pool in self._refresh(sorted(set(self._client_flows).union(self._held))):
            if pool not in active:
                active.append(pool)
        for pool in active:
            self._replan(pool)

    def check_accounting(self) -> None:
        """Assert bits offered = delivered + lost + still in flight."""
        in_flight = sum(f.bits for fl in self._client_flows.values() for f in fl)
        done_flows = self.bits_offered - in_flight
        assert abs(done_flows - (self.bits_delivered + self.bits_lost)) <= 1e-6 * max(1.0, done_flows), (
            self.bits_offered, self.bits_delivered, self.bits_lost, in_flight)

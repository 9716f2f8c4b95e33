"""The transfer engine: flows of bits over piecewise-constant radio links, planned many
fading blocks at a time.

Each cell has one bandwidth pool per direction; a pool holds the cell's active flows and a
MAC policy (:mod:`sim.mac`). A flow's rate is constant within a fading block and between
the pool's change points. At every change point the pool is *planned*: the link model gives
the full-band rates of its flows over the next blocks in one vectorised call
(:meth:`LinkModel.plan_blocks`; the radio link answers up to the end of the current chunk
of fading blocks, :data:`channel._sos.CHUNK_BLOCKS`), the MAC shares them block by block,
and the exact completion time of every flow is solved from its cumulative bits (first
crossing of its remaining bits). The pool then keeps *one* pending wake-up (a plain SimPy
event with a callback; a generation counter voids wake-ups made stale by a later change),
at the earliest of

- a flow's completion,
- the first block at which a flow enters or leaves outage (full-band rate 0 ↔ > 0),
- the first block at which a flow's client hands over (the flow moves to the new cell's pool),
- the end of the plan.

Other change points re-plan the pool at once: a flow starts or ends in it (the MAC re-shares
the band) or is cancelled. Nothing happens per fading block in between, and idle clients
cost nothing.

Interference: a flow's SINR in a planned block counts co-channel transmitters — uplink
flows in other cells, cells with downlink flows — with their gains in that block; the set is
the one of the moment the link made the flow's rows: when the flow joined its pool, at the
end of the pool's previous rows (a chunk boundary for the radio link), or after a handover
(:meth:`Network._link_rows`). Between those, flows starting or ending elsewhere do not
change a pool's rates.

The per-event path that touches a single flow (its start, a rate prediction) works on plain
Python floats where numpy's per-call cost exceeds the arithmetic; the two stateless MAC
policies (equal share, round robin) have a float twin here (:func:`_shares`, checked against
the policies by a test) and a vectorised one over blocks (:func:`_block_shares`).

The arithmetic of a plan over its blocks — the cumulative bits, the next change point, the
settlement, equal share's block shares — is in :mod:`sim.kernels`: loops compiled by numba,
or their numpy twins (the same floats) where numba is missing.

Accounting is exact: a flow's bits, airtime and energy at any time are read from its plan
(cumulative per block), and at every change point each flow is *settled* to it. For every
flow, ``bits = delivered + lost`` where a flow that completes has ``delivered = bits`` and a
cancelled one has ``delivered = sent`` (bits that crossed the air) and ``lost = bits − sent``.
"""

from __future__ import annotations

import copy
import math
from heapq import heappush
from typing import Callable

import numpy as np
import simpy
from simpy.core import NORMAL
from simpy.events import Event

from sim import kernels
from sim.links import DOWN, UP, LinkBlocks, LinkModel
from sim.mac import EqualShare, MacPolicy, MaxRate, RoundRobin, make_mac
from sim.trace import Tracer

__all__ = ["Flow", "Network"]

_DIRS = (UP, DOWN)


class Flow:
    """One radio transfer (payload of ``bits`` over one client's link in one direction).

    Attributes (all SI units): ``sent`` bits crossed so far (as of the last settlement);
    ``rate`` bit/s, ``full_rate`` and ``time_frac`` in the current block; ``sinr_db`` its
    full-band SINR there; ``airtime_s`` time actually transmitting (TDMA shares count their
    fraction); ``energy_j`` radio energy of the client for this flow; ``ok`` True once
    delivered, False once failed (``reason``), None while active; ``done`` a SimPy event that
    succeeds with the flow when it ends either way.
    """

    __slots__ = ("fid", "client", "direction", "cell", "bits", "sent", "rate", "full_rate",
                 "time_frac", "sinr_db", "t_start", "t_end", "airtime_s", "energy_j", "power_w",
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
        self.sinr_db = math.nan
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


def _block_shares(mac: MacPolicy, keys: list[int], full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bw_frac, time_frac), each [n, H], of a *stateless* policy for each block's column of
    ``full`` [n, H]: equal share, round robin and max rate vectorised with the policies' own
    arithmetic, any other policy called block by block."""
    kind = type(mac)
    live = full > 0
    if kind is EqualShare or kind is RoundRobin:
        n_live = np.maximum(np.count_nonzero(live, axis=0), 1)  # (H,)
        one = live.astype(np.float64)
        part = np.where(live, 1.0 / n_live, 0.0)
        return (part, one) if kind is EqualShare else (one, part)
    if kind is MaxRate:
        best = np.argmax(full, axis=0)  # ties: the earliest flow
        win = np.zeros(full.shape)
        h = np.flatnonzero(full.max(axis=0) > 0)
        win[best[h], h] = 1.0
        return win, win.copy()
    bw = np.empty(full.shape)
    tf = np.empty(full.shape)
    for h in range(full.shape[1]):
        bw[:, h], tf[:, h] = mac.shares(keys, full[:, h])
    return bw, tf


#: policies that give a lone live flow the whole band all the time
_SOLO_FULL = (EqualShare, RoundRobin, MaxRate)


class _Plan:
    """A pool's rates from its last change point on: per flow and block, with the
    cumulative bits at the blocks' starts (relative to the plan's start); the cumulative
    airtime is summed when a settlement asks for it (:func:`sim.kernels.settle`)."""

    __slots__ = ("flows", "edges", "dt", "rate", "full", "tf", "sinr_db", "cum_bits", "state", "sent0", "air0", "energy0", "power", "bits", "k0", "handover_at")

    def __init__(self, flows, edges, rate, full, tf, sinr_db, k0, state):
        self.flows = flows  # the pool's flows at the plan's start (rows of the arrays)
        self.edges = edges  # (H + 1,) s
        self.rate = rate  # [n, H] bit/s
        self.full = full
        self.tf = tf
        self.sinr_db = sinr_db
        # dt (H,) s (the last block capped: rate · dt stays finite in a block that never
        # ends); the bits per block cumulated along each row: [n, H + 1]
        self.dt, self.cum_bits = kernels.plan_cum(rate, edges)
        # (5, n): the flows' sent bits, airtime, energy at the start, power and bits
        self.state = state
        self.sent0, self.air0, self.energy0, self.power, self.bits = state
        self.k0 = k0  # link block of the plan's start
        self.handover_at = np.inf  # start of the first block with a handover, s

    def block_at(self, t: float) -> int:
        """Index h of the plan's block that contains ``t`` (the last one at its end)."""
        h = int(np.searchsorted(self.edges, t, side="right")) - 1
        return min(max(h, 0), self.rate.shape[1] - 1)


class _Pool:
    """The active flows of one cell in one direction, their MAC policy and their plan."""

    __slots__ = ("cell", "direction", "bandwidth_hz", "mac", "observes", "flows", "gen",
                 "t_last", "plan", "settled", "state", "lb", "lb_rows")

    def __init__(self, cell: int, direction: str, bandwidth_hz: float, mac: MacPolicy) -> None:
        self.cell = cell
        self.direction = direction
        self.bandwidth_hz = bandwidth_hz
        self.mac = mac
        self.observes = mac.wants_observe  # keeps state (PF): its averages follow the blocks
        self.flows: dict[int, Flow] = {}  # insertion order = start order (deterministic)
        self.gen = 0
        self.t_last = 0.0
        self.plan: _Plan | None = None
        self.settled: _Plan | None = None  # the plan the flows were last brought to t_last by
        # what that settlement wrote: (flows, their sent bits, airtime, energy, power and
        # bits as a (5, n) array), or None (see Network._flow_state)
        self.state: tuple[list[Flow], np.ndarray] | None = None
        self.lb: LinkBlocks | None = None  # the link's rows of the flows (see _link_rows)
        self.lb_rows: dict[int, int] = {}


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
        self._held: dict[int, int] = {}  # round participants (hold count)
        # Totals for the accounting invariant (bits offered = delivered + lost + in flight).
        self.bits_offered = 0.0
        self.bits_delivered = 0.0  # bits that crossed the air (complete and partial)
        self.bits_lost = 0.0       # bits of failed flows that never crossed
        self.on_handover: Callable[[int, int, int], None] | None = None
        # Work counters (for benchmarks and tests): pool wake-ups scheduled, plans made and
        # the blocks they covered, and client-blocks of airtime (blocks each flow spanned).
        self.n_wakeups = 0
        self.n_plans = 0
        self.n_plan_blocks = 0
        self.n_flow_blocks = 0

    # ------------------------------------------------------------------ public API
    @property
    def n_active(self) -> int:
        """Number of flows in progress."""
        return self._n_active

    def pool_flows(self, cell: int, direction: str) -> list[Flow]:
        """Active flows of ``cell`` in ``direction`` (start order)."""
        return list(self._pools[(cell, direction)].flows.values())

    def hold(self, client: int) -> None:
        """Mark ``client`` as a participant of the current round: the link evaluates its
        channel together with the transferring clients' (one vectorised call per chunk of
        blocks), so that its transfers find it ready. Calls nest; :meth:`release` undoes one."""
        n = self._held.get(client, 0)
        self._held[client] = n + 1
        if n == 0:
            self.link.set_held(client, True)

    def release(self, client: int) -> None:
        """Undo one :meth:`hold` of ``client``."""
        n = self._held.get(client, 0) - 1
        if n > 0:
            self._held[client] = n
        else:
            self._held.pop(client, None)
            self.link.set_held(client, False)

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
        bw = pool.bandwidth_hz
        flows = list(pool.flows.values())
        full = [f.full_rate for f in flows]  # this block's, from the pool's plan
        full.append(self.link.rates_of([client], direction, None, bw)[0])
        bw_frac, time_frac = _shares(pool.mac, [f.fid for f in flows] + [-1], full)
        b, tf, fr = bw_frac[-1], time_frac[-1], full[-1]
        if b <= 0.0:
            return 0.0
        if b < 1.0:  # a sub-band share: the link decides its rate (uplink power concentration)
            fr = self.link.rates_of([client], direction, [b], bw)[0]
        return fr * tf

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
            flow.sinr_db = self.link.sinr_db_of(client, direction)
            self._trace_start(flow)
            self._finish(flow, ok=True)
            return flow
        self._settle(pool)
        pool.flows[flow.fid] = flow
        flows = self._client_flows.get(client)
        if flows is None:
            self._client_flows[client] = [flow]
            self._note(self.link.set_active(client, True, env.now))
        else:
            flows.append(flow)
        if direction == UP:
            self._tx_up[client] = True
        else:
            self._tx_down[cell] = True
        self._n_active += 1
        if pool.mac.wants_flow_start:  # (a stateful policy: its first full-band rate)
            bw = pool.bandwidth_hz
            pool.mac.on_flow_start(flow.fid, self.link.rates_of([client], direction, None, bw)[0])
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

    # ------------------------------------------------------------------ settling
    def _settle(self, pool: _Pool) -> None:
        """Bring the pool's flows to now: bits, airtime and energy read from the plan (and
        the MAC's averages observed over the blocks since the last settlement)."""
        now = self.env.now
        plan = pool.plan
        if plan is pool.settled and now == pool.t_last:
            return  # the flows hold what this plan gives now already
        if plan is not None and pool.flows:
            # sent0 + cum_bits + rate · dt, air0 + airtime, energy0 + power · airtime
            h, state = kernels.settle(plan.edges, plan.rate, plan.tf, plan.dt, plan.cum_bits,
                                      plan.state, now)
            pool.state = (plan.flows, state)  # (5, n), as the plan's (kept: _flow_state)
            sent, airtime, energy = state[:3].tolist()
            cols = zip(plan.flows, sent, airtime, energy, plan.rate[:, h].tolist(),
                       plan.full[:, h].tolist(), plan.tf[:, h].tolist(), plan.sinr_db[:, h].tolist())
            for f, f_sent, f_air, f_energy, r, fr, t, sinr in cols:
                if f.ok is None:  # (a flow ended since the plan keeps its final figures)
                    f.sent, f.airtime_s, f.energy_j = f_sent, f_air, f_energy
                    f.rate, f.full_rate, f.time_frac, f.sinr_db = r, fr, t, sinr
            if pool.observes and now > pool.t_last:
                self._observe(pool, plan, pool.t_last, now)
        else:
            pool.state = None
        pool.t_last = now
        pool.settled = plan

    def _observe(self, pool: _Pool, plan: _Plan, t0: float, t1: float) -> None:
        """Tell a stateful MAC what each flow achieved in every block between t0 and t1."""
        rows = [i for i, f in enumerate(plan.flows) if f.fid in pool.flows]
        keys = [plan.flows[i].fid for i in rows]
        h0, h1 = plan.block_at(t0), plan.block_at(t1)
        for h in range(h0, h1 + 1):
            a, b = max(t0, plan.edges[h]), min(t1, plan.edges[h + 1])
            if b > a:
                pool.mac.observe(keys, plan.rate[rows, h], b - a)

    # ------------------------------------------------------------------ planning
    def _replan(self, pool: _Pool) -> None:
        """A change point of ``pool`` (settled): plan its flows' rates over the next blocks,
        apply this block's outage transitions, and schedule its next wake-up."""
        pool.gen += 1
        pool.plan = pool.settled = None
        if not pool.flows:
            pool.lb = pool.state = None
            return
        env = self.env
        now = env.now
        flows = list(pool.flows.values())
        d, bw = pool.direction, pool.bandwidth_hz
        lb = self._link_rows(pool, flows, now)
        h_ho = int(lb.handover.min())  # the first block with a handover (H: none)
        if h_ho == 0:  # a handover is due now
            due = [f.client for f, h in zip(flows, lb.handover.tolist()) if h == 0]
            pool.lb = None
            for p in self._refresh(due):
                if p is not pool:
                    self._replan(p)
            if pool.flows:
                self._replan(pool)
            return
        full = lb.full_bps  # [n, H]
        edges = lb.edges_s
        mac = pool.mac
        kind = type(mac)
        if pool.observes:  # a stateful policy: its averages evolve block by block, on a copy
            keys = [f.fid for f in flows]
            bw_frac, tf, rate = self._stateful_shares(pool, keys, full, edges, lb)
            tf = np.where(rate > 0, tf, 0.0)
        elif len(flows) == 1 and kind in _SOLO_FULL:  # alone: the whole band when live
            rate = full
            tf = kernels.positive(full)
        elif kind is EqualShare:  # _block_shares' arithmetic, with its time shares of 1 elided
            rate, frac, any_sub = kernels.equal_shares(full)
            if any_sub:  # a sub-band share: the link decides its rate (power concentration)
                rate, tf = kernels.merge_sub(rate, frac, self.link.sub_rates(lb, d, frac, bw))
            else:
                tf = kernels.positive(rate)
        else:
            bw_frac, tf = _block_shares(mac, [f.fid for f in flows], full)
            rate = np.where(bw_frac > 0.0, full * tf, 0.0)
            sub = (bw_frac > 0.0) & (bw_frac < 1.0)
            if sub.any():  # a sub-band share: the link decides its rate (power concentration)
                r_sub = self.link.sub_rates(lb, d, np.where(sub, bw_frac, 1.0), bw)
                rate = np.where(sub, r_sub * tf, rate)
            tf = np.where(rate > 0, tf, 0.0)
        state = self._flow_state(pool, flows)
        plan = pool.plan = _Plan(flows, edges, rate, full, tf, lb.sinr_db, self.link.block_index(now),
                                 state)
        if pool.t_last == now:  # settled now: the plan gives each flow what it holds (below)
            pool.settled = plan
            pool.state = (flows, state)
        n_blocks = full.shape[1]
        self.n_plans += 1
        self.n_plan_blocks += n_blocks * len(flows)
        # this block: current rates, outage transitions (traced now)
        cols = zip(flows, rate[:, 0].tolist(), full[:, 0].tolist(), tf[:, 0].tolist(),
                   lb.sinr_db[:, 0].tolist())
        for f, r, fr, t, sinr in cols:
            f.rate, f.full_rate, f.time_frac, f.sinr_db = r, fr, t, sinr
            if (fr > 0) == f.in_outage:  # a transition in this block
                self._outage(f, not fr > 0)
        # the next change point: a completion, an outage transition, a handover, the plan's end
        # (now if a flow is delivered already: a change point at its completion time)
        t_next = kernels.next_change(rate, full, plan.cum_bits, edges, plan.sent0, plan.bits, now)
        if h_ho < n_blocks:
            plan.handover_at = float(edges[h_ho])
            t_next = min(t_next, plan.handover_at)
        if t_next < math.inf:
            self._wake(pool, max(t_next, now))

    def _flow_state(self, pool: _Pool, flows: list[Flow]) -> np.ndarray:
        """(5, n) float64: sent bits, airtime, energy, power and bits of ``flows``, settled to
        now. The pool's settlement now (or the plan that settled it) left those figures for
        the flows it had as one array (``pool.state``, start order as ``flows``): the flows
        it kept take their columns, the others (joined since, or moved in by a handover) are
        read from the flows, which hold the same values; one gather instead of one array
        built from every Flow object."""
        prev, pool.state = pool.state, None
        idx: list[int] = []
        if prev is not None and pool.t_last == self.env.now:
            had, cols = prev
            j, m = 0, len(had)
            for f in flows:  # the kept flows, in order; the first one it lacks ends the run
                while j < m and had[j] is not f:
                    j += 1
                if j == m:
                    break
                idx.append(j)
                j += 1
        k = len(idx)
        new = None
        if k < len(flows):  # flows that joined since (or moved in by a handover)
            new = np.array([(f.sent, f.airtime_s, f.energy_j, f.power_w, f.bits) for f in flows[k:]],
                           dtype=np.float64).T
            if k == 0:
                return new
        old = cols if k == m else cols[:, idx]  # (5, k)
        return old if new is None else np.concatenate((old, new), axis=1)

    def _link_rows(self, pool: _Pool, flows: list[Flow], now: float) -> LinkBlocks:
        """The link's plan for ``flows`` from now: the rows the pool got from the link at
        its last full request (the rest of them, from now on) for the flows it had, and a
        request for the flows that joined since. The link is asked for all of them again
        at the end of those rows (a chunk boundary for the radio link) and after a
        handover. A flow's interferers are thus the co-channel transmitters of the moment
        its rows were made."""
        d, bw = pool.direction, pool.bandwidth_hz
        old = pool.lb
        if old is None or now >= old.edges_s[-1]:
            lb = self.link.plan_blocks(now, [f.client for f in flows], d, pool.cell, bw,
                                       self._tx_up, self._tx_down)
            pool.lb, pool.lb_rows = lb, {f.fid: i for i, f in enumerate(flows)}
            return lb
        h = max(int(np.searchsorted(old.edges_s, now, side="right")) - 1, 0)
        rows = pool.lb_rows
        have: list[int] = []  # the kept flows' rows
        new: list[Flow] = []  # the flows that joined since
        mixed = False  # a kept flow after a joining one
        for f in flows:
            i = rows.get(f.fid)
            if i is None:
                new.append(f)
            else:
                have.append(i)
                mixed = mixed or bool(new)
        every = have == list(range(old.clients.size))
        if not new and every:  # the same flows: the rest of the rows
            if h == 0 and old.edges_s[0] == now:
                return old
            edges = old.edges_s[h:].copy()
            edges[0] = now
            return LinkBlocks(old.clients, edges, old.full_bps[:, h:], old.sinr_db[:, h:],
                              np.maximum(old.handover - h, 0),
                              None if old.data is None else old.data[:, h:])
        # the kept flows' rows (all of them: plain slices), from now on
        r = slice(None) if every else np.array(have, dtype=np.int64)
        parts = []
        if have:
            parts.append((old.clients[r], old.full_bps[r, h:], old.sinr_db[r, h:],
                          np.maximum(old.handover[r] - h, 0),
                          None if old.data is None else old.data[r, h:], old.edges_s[h:]))
        if new:
            lb = self.link.plan_blocks(now, [f.client for f in new], d, pool.cell, bw,
                                       self._tx_up, self._tx_down)
            parts.append((lb.clients, lb.full_bps, lb.sinr_db, lb.handover, lb.data, lb.edges_s))
        n_h = min(p[1].shape[1] for p in parts)  # the shortest horizon
        edges = parts[-1][5][: n_h + 1].copy()
        edges[0] = now
        take = None  # rows back to the pool's order (None: they are in it, new flows last)
        if mixed:
            order = [f.fid for f in flows if f.fid in rows] + [f.fid for f in new]
            pos = {fid: i for i, fid in enumerate(order)}
            take = np.array([pos[f.fid] for f in flows])

        def cat(i):
            if any(p[i] is None for p in parts):
                return None
            if len(parts) == 1:
                a = parts[0][i]
                a = a[:, :n_h] if a.ndim == 2 and a.shape[1] != n_h else a
            else:
                a = np.concatenate([p[i][:, :n_h] if p[i].ndim == 2 else p[i] for p in parts])
            return a if take is None else a[take]

        lb = LinkBlocks(cat(0), edges, cat(1), cat(2), np.minimum(cat(3), n_h), cat(4))
        if new:  # the new flows' rows become part of the pool's
            pool.lb, pool.lb_rows = lb, {f.fid: i for i, f in enumerate(flows)}
        return lb

    def _stateful_shares(self, pool, keys, full, edges, lb):
        """Shares of a stateful policy (proportional fair): each block's shares from the
        averages it would have then, computed on a copy of the policy."""
        mac = copy.deepcopy(pool.mac)
        n, n_h = full.shape
        bw_frac = np.empty((n, n_h))
        tf = np.empty((n, n_h))
        rate = np.empty((n, n_h))
        d, bw = pool.direction, pool.bandwidth_hz
        for h in range(n_h):
            b, t = mac.shares(keys, full[:, h])
            bw_frac[:, h], tf[:, h] = b, t
            r = np.where(b > 0.0, full[:, h] * t, 0.0)
            sub = (b > 0.0) & (b < 1.0)
            if sub.any():
                frac = np.ones((n, n_h))
                frac[:, h] = np.where(sub, b, 1.0)
                r = np.where(sub, self.link.sub_rates(lb, d, frac, bw)[:, h] * t, r)
            rate[:, h] = r
            if h + 1 < n_h:
                mac.observe(keys, r, edges[h + 1] - edges[h])
        return bw_frac, tf, rate

    def _wake(self, pool: _Pool, at: float) -> None:
        """Schedule ``pool``'s wake-up at time ``at`` (its next change point)."""
        env = self.env
        self.n_wakeups += 1
        # what env.timeout(at - now, value=...) schedules (same priority and event id), at
        # exactly ``at``, without building a Timeout on this per-event path
        ev = Event(env)
        ev._ok = True
        ev._value = (pool, pool.gen)
        ev.callbacks.append(self._on_pool_wake)
        heappush(env._queue, (at, NORMAL, next(env._eid), ev))

    def _on_pool_wake(self, ev) -> None:
        pool, gen = ev._value
        if gen != pool.gen:
            return  # a later change point re-planned this pool
        plan = pool.plan
        self._settle(pool)
        done = [f for f in pool.flows.values() if f.bits - f.sent <= 1e-9 * f.bits + 1e-9]
        for f in done:
            self._remove(pool, f)
            self._finish(f, ok=True)
        dirty = []
        now = self.env.now
        if pool.flows and self.link.block_index(now) != plan.k0 and (
                now >= plan.edges[-1] or plan.handover_at <= now):
            # the plan's end, or a handover due: the link state of these clients moves on
            dirty = self._refresh([f.client for f in pool.flows.values()])
        if pool not in dirty:
            self._replan(pool)
        for p in dirty:
            self._replan(p)

    def _outage(self, f: Flow, start: bool) -> None:
        now = self.env.now
        f.in_outage = start
        if start:
            f.outage_since = now
        if self.tracer.enabled:
            self.tracer.record(now, "outage_start" if start else "outage_end", f.round, f.client,
                               f.cell, f.direction, snr_db=f.sinr_db,
                               rate_bps=0.0 if start else f.full_rate)
        if start and self.outage_timeout_s is not None:
            ev = self.env.timeout(self.outage_timeout_s, value=(f, now))
            ev.callbacks.append(self._on_outage_timer)

    def _on_outage_timer(self, ev) -> None:
        flow, since = ev._value
        if flow.ok is None and flow.in_outage and flow.outage_since == since:
            self.cancel(flow, "outage")

    # ------------------------------------------------------------------ bookkeeping
    def _remove(self, pool: _Pool, flow: Flow) -> None:
        del pool.flows[flow.fid]
        pool.mac.forget(flow.fid)
        lst = self._client_flows[flow.client]
        lst.remove(flow)
        if not lst:
            del self._client_flows[flow.client]
            self._note(self.link.set_active(flow.client, False, self.env.now))
        if flow.direction == UP and not any(f.direction == UP for f in lst):
            self._tx_up[flow.client] = False
        if flow.direction == DOWN and not pool.flows:
            self._tx_down[pool.cell] = False
        self._n_active -= 1

    def _note(self, handovers) -> None:
        """Trace handovers the link found for a client with no transfer to move."""
        for client, old, new in handovers:
            self.tracer.record(self.env.now, "handover", None, client, new, detail=f"from {old}")
            if self.on_handover is not None:
                self.on_handover(client, old, new)

    def _finish(self, flow: Flow, ok: bool, reason: str | None = None) -> None:
        now = self.env.now
        flow.t_end = now
        flow.ok = ok
        flow.reason = reason
        if ok:
            flow.sent = float(flow.bits)
        self.bits_delivered += flow.sent
        self.bits_lost += flow.bits - flow.sent
        if now > flow.t_start and not math.isinf(self.link.block_s):
            bs = self.link.block_s
            self.n_flow_blocks += math.ceil(now / bs - 1e-9) - math.floor(flow.t_start / bs + 1e-9)
        if self.tracer.enabled:
            duration = now - flow.t_start
            self.tracer.record(  # t_s, event, round, client, cell, direction, bits, delivered,
                now, "send_end" if ok else "send_failed", flow.round, flow.client, flow.cell,
                flow.direction, flow.bits, flow.sent,
                flow.sinr_db,  # snr_db in its last block
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
        """Refresh link state; apply handovers; return pools that need re-planning."""
        if len(clients) == 0:
            return []
        if len(clients) > 1:  # each client once (a client may have several flows)
            clients = sorted(set(clients.tolist() if isinstance(clients, np.ndarray) else clients))
        handovers = self.link.refresh(self.env.now, clients, self._tx_up, self._tx_down)
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
                src.lb = dst.lb = None  # the link is asked again for both cells
                if flow.direction == DOWN:
                    self._tx_down[old] = bool(src.flows)
                    self._tx_down[new] = True
                for p in (src, dst):
                    if p not in dirty:
                        dirty.append(p)
        return dirty

    def check_accounting(self) -> None:
        """Assert bits offered = delivered + lost + still in flight."""
        in_flight = sum(f.bits for fl in self._client_flows.values() for f in fl)
        done_flows = self.bits_offered - in_flight
        assert abs(done_flows - (self.bits_delivered + self.bits_lost)) <= 1e-6 * max(1.0, done_flows), (
            self.bits_offered, self.bits_delivered, self.bits_lost, in_flight)

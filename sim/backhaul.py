"""The wired side: base-station sites, edge servers and the cloud on a networkx graph.

A message crosses the radio hop and then its wired path — the shortest path by latency.

Contention (``backhaul.sharing: fair``, the default): each wired message is a fluid flow
over all edges of its path at once, and the messages crossing an edge (in one direction;
links are full duplex) share its capacity max-min fairly — progressive filling: the edge
with the smallest equal share fixes the rate of its messages, whose rates are then taken
off the other edges they cross, and so on. Rates are recomputed exactly whenever a message
starts or finishes draining (no tick); a message arrives ``Σ latency_s`` after its last bit
left the source. A message alone on its path therefore takes ``Σ latency_s + bits /
min(capacity_bps)``, as it did before contention was modelled (and as ``sharing: none``
does for every message). Edges of infinite capacity never constrain anyone.

Node names: ``site<i>`` for the radio sites (one per layout site), plus the edge servers
and the cloud named in the scenario (``kind: edge`` / ``kind: cloud``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from heapq import heappush

import networkx as nx
import simpy
from simpy.core import NORMAL, URGENT
from simpy.events import Event

__all__ = ["Backhaul", "WiredPath", "WiredNet", "WiredMessage", "site_node", "SHARING"]

SHARING = ("fair", "none")


def site_node(site: int) -> str:
    """The graph node of radio site ``site``."""
    return f"site{site}"


@dataclass(frozen=True)
class WiredPath:
    """A wired route: node names, total propagation latency (s), bottleneck (bit/s), and
    the capacity (bit/s) of each hop in path order."""

    nodes: tuple[str, ...]
    latency_s: float
    bottleneck_bps: float
    capacities_bps: tuple[float, ...] = ()

    @property
    def hops(self) -> tuple[tuple[str, str], ...]:
        """Directed hops ``(a, b)`` in path order (each direction of a link is its own hop)."""
        return tuple(zip(self.nodes, self.nodes[1:]))

    @cached_property
    def finite_hops(self) -> tuple[tuple[tuple[str, str], float], ...]:
        """``(hop, capacity bit/s)`` of the hops of finite capacity, path order (cached)."""
        return tuple((h, c) for h, c in zip(self.hops, self.capacities_bps) if math.isfinite(c))

    @cached_property
    def finite_hop_names(self) -> tuple[tuple[str, str], ...]:
        """The hops of :attr:`finite_hops` alone (cached)."""
        return tuple(h for h, _ in self.finite_hops)

    def delay_s(self, bits: float) -> float:
        """Time for a message of ``bits`` to cross the path, s."""
        if len(self.nodes) < 2:
            return 0.0
        return self.latency_s + bits / self.bottleneck_bps


class Backhaul:
    """The backhaul graph with cached shortest paths.

    Args:
        graph: undirected graph; node attribute ``kind`` in {site, edge, cloud}; edge
            attributes ``capacity_bps`` (> 0) and ``latency_s`` (>= 0).
    """

    def __init__(self, graph: nx.Graph) -> None:
        self.graph = graph
        self._paths: dict[tuple[str, str], WiredPath] = {}

    @classmethod
    def star(cls, n_sites: int, site_edge_capacity_bps: float = 10e9,
             site_edge_latency_s: float = 0.5e-3, edge_cloud_capacity_bps: float = 10e9,
             edge_cloud_latency_s: float = 10e-3) -> "Backhaul":
        """Every site to one edge server ``edge``, the edge server to ``cloud``."""
        g = nx.Graph()
        g.add_node("edge", kind="edge")
        g.add_node("cloud", kind="cloud")
        g.add_edge("edge", "cloud", capacity_bps=edge_cloud_capacity_bps,
                   latency_s=edge_cloud_latency_s)
        for s in range(n_sites):
            g.add_node(site_node(s), kind="site")
            g.add_edge(site_node(s), "edge", capacity_bps=site_edge_capacity_bps,
                       latency_s=site_edge_latency_s)
        return cls(g)

    def nodes_of_kind(self, kind: str) -> list[str]:
        """Node names of ``kind``, sorted."""
        return sorted(n for n, k in self.graph.nodes(data="kind") if k == kind)

    def path(self, src: str, dst: str) -> WiredPath:
        """The shortest-latency path from ``src`` to ``dst`` (cached)."""
        key = (src, dst)
        p = self._paths.get(key)
        if p is None:
            if src == dst:
                p = WiredPath((src,), 0.0, math.inf)
            else:
                try:
                    nodes = nx.shortest_path(self.graph, src, dst, weight="latency_s")
                except (nx.NetworkXNoPath, nx.NodeNotFound) as exc:
                    raise ValueError(f"No backhaul path from {src!r} to {dst!r}: {exc}") from None
                hops = [self.graph.edges[a, b] for a, b in zip(nodes, nodes[1:])]
                caps = tuple(float(h["capacity_bps"]) for h in hops)
                p = WiredPath(tuple(nodes), sum(h["latency_s"] for h in hops), min(caps), caps)
            self._paths[key] = p
            self._paths[(dst, src)] = WiredPath(tuple(reversed(p.nodes)), p.latency_s,
                                                p.bottleneck_bps, p.capacities_bps[::-1])
        return p

    def nearest(self, src: str, kind: str) -> str:
        """The node of ``kind`` closest to ``src`` by latency (ties: name order)."""
        cands = self.nodes_of_kind(kind)
        if not cands:
            raise ValueError(f"The backhaul has no node of kind {kind!r}.")
        return min(cands, key=lambda n: (self.path(src, n).latency_s, n))


class WiredMessage:
    """One message on its wired path. ``done`` succeeds at the arrival; ``sent`` bits have
    left the source so far (``bits`` once drained); ``rate`` is its current bit/s.
    ``arr_key`` / ``wake_key``: ``(time s, order key)`` of its pending arrival and drain
    wake-up (``None``: none pending), see :class:`WiredNet`."""

    __slots__ = ("mid", "hops", "bits", "sent", "rate", "latency_s", "t_start", "t_drain",
                 "gen", "arr_key", "wake_key", "done", "active")

    def __init__(self, mid, hops, bits, latency_s, done, t_start):
        self.mid = mid
        self.hops = hops  # the finite-capacity hops it crosses, path order
        self.bits = bits
        self.sent = 0.0
        self.rate = 0.0
        self.latency_s = latency_s
        self.t_start = t_start
        self.t_drain = math.inf  # predicted time its last bit leaves the source
        self.gen = 0  # bumped whenever its rate changes (or it is cancelled)
        self.arr_key = None  # (arrival time s, order key) for the current rate
        self.wake_key = None  # (drain wake-up time s, order key), None until it shares a hop
        self.done = done
        self.active = True


class WiredNet:
    """Wired transfers with per-hop capacity sharing (see the module docstring).

    Between change points (a message starts, or one drains) every rate is constant, so
    each message's drain time ``t + remaining / rate`` and arrival time (plus its path's
    latency) are exact. Cheap without contention: a message alone on its hops gets one
    arrival timeout, computed as ``latency + bits / bottleneck`` (the uncontended figure,
    bit for bit), and no drain wake-up; it is removed lazily, by the next message that
    meets it after it drained. Only a message that shares a hop gets a drain wake-up (its
    leaving speeds the others up).

    Cheap with contention too: a change re-plans its component (O(messages) arithmetic) but
    schedules O(1) SimPy events. Each message keeps the keys ``(time, order)`` of its
    pending arrival (re-keyed when its rate changes) and drain wake-up (keyed once it shares
    a hop); only the smallest key of each connected component is put on SimPy's queue, as
    one timer, and a drained message's arrival when it is removed. ``order`` is a SimPy
    event id taken once per re-plan plus ``j / 2**20`` for its ``j``-th key: the place in
    SimPy's same-time order that a timeout scheduled there would have had, so same-instant
    events run in the order they would with one timeout per key.

    Args:
        env: the simulation's environment.
        sharing: ``fair`` (max-min fair fluid sharing) or ``none`` (every message gets the
            whole capacity of every hop: ``WiredPath.delay_s``).
    """

    def __init__(self, env: simpy.Environment, sharing: str = "fair") -> None:
        if sharing not in SHARING:
            raise ValueError(f"The 'sharing' parameter of WiredNet must be one of {SHARING}. "
                             f"Got {sharing!r} instead.")
        self.env = env
        self.sharing = sharing
        self._on_hop: dict[tuple[str, str], dict[int, WiredMessage]] = {}
        self._cap: dict[tuple[str, str], float] = {}
        self._next_id = 0
        self._t_last = 0.0
        self.bits_offered = 0.0
        self.bits_drained = 0.0  # sum over drained messages of the bits their rates carried
        self.hop_bits: dict[tuple[str, str], float] = {}  # bits each hop carried, integrated
        self._in_flight: dict[int, WiredMessage] = {}  # sent, not yet arrived nor cancelled
        self._active: dict[int, WiredMessage] = {}  # on their hops (draining or drained), start order
        self._pending: dict[float, tuple[bool, WiredMessage]] = {}  # timer order key -> (wake?, msg)

    # ------------------------------------------------------------------ public API
    @property
    def n_active(self) -> int:
        """Messages still draining (or drained but not yet removed lazily)."""
        return len(self._active)

    @property
    def n_in_flight(self) -> int:
        """Messages sent that have neither arrived nor been cancelled."""
        return len(self._in_flight)

    def hop_messages(self, a: str, b: str) -> list[WiredMessage]:
        """Messages on hop ``a → b`` (start order)."""
        return list(self._on_hop.get((a, b), {}).values())

    def send(self, path: WiredPath, bits: float) -> WiredMessage:
        """Start a message of ``bits`` over ``path`` now; ``message.done`` succeeds on arrival."""
        env = self.env
        finite = path.finite_hops
        hops = path.finite_hop_names
        msg = WiredMessage(self._next_id, hops, float(bits), path.latency_s, None, env.now)
        self._next_id += 1
        self.bits_offered += msg.bits
        if self.sharing == "none" or not hops or bits <= 0:
            delay = path.delay_s(bits)  # no yield for an instant crossing (None)
            msg.done = env.timeout(delay, value=msg) if delay > 0 else None
            msg.sent, msg.active, msg.t_drain = msg.bits, False, env.now
            self.bits_drained += msg.bits
            if msg.done is not None:
                self._in_flight[msg.mid] = msg
                msg.done.callbacks.append(self._landed)
            return msg
        msg.done = env.event()
        self._in_flight[msg.mid] = msg
        cap = self._cap
        for h, c in finite:
            cap[h] = c
        now = env.now
        self._settle()
        on_hop = self._on_hop
        seeds = list(hops)
        for h in hops:  # lazy removal of lone messages that drained already
            ms = on_hop.get(h)
            if ms:
                for m in [m for m in ms.values() if m.t_drain <= now]:
                    self._remove(m)
                    self._arm_arrival(m)
                    seeds.extend(m.hops)
        for h in hops:
            ms = on_hop.get(h)
            if ms is None:
                on_hop[h] = {msg.mid: msg}
            else:
                ms[msg.mid] = msg
        self._active[msg.mid] = msg
        self._replan(seeds)
        return msg

    def cancel(self, msg: WiredMessage) -> None:
        """Abandon ``msg`` now (its task was interrupted); the others speed up."""
        self._in_flight.pop(msg.mid, None)
        msg.gen += 1
        msg.arr_key = msg.wake_key = None  # voids its pending timers
        if not msg.active:
            return
        self._settle()
        self._remove(msg)
        self._replan(msg.hops)

    # ------------------------------------------------------------------ internals
    # Messages interact only through shared hops, so rates are planned per connected
    # component (hops linked by the messages crossing them): a start, drain or cancel
    # re-plans only the component(s) of the hops it touched. Elsewhere a re-plan would
    # compute the very same rates (progressive filling runs independently in each
    # component, in the same order) and schedule nothing.
    def _landed(self, ev) -> None:
        self._in_flight.pop(ev._value.mid, None)

    def _settle(self) -> None:
        now = self.env.now
        t_last = self._t_last
        if now > t_last:
            hop_bits = self.hop_bits
            for m in self._active.values():  # start order, as on every hop
                if m.t_drain > t_last:
                    carried = m.rate * (min(now, m.t_drain) - t_last)
                    for h in m.hops:
                        hop_bits[h] = hop_bits.get(h, 0.0) + carried
                    m.sent += carried
        self._t_last = now

    def _remove(self, m: WiredMessage) -> None:
        m.active = False
        self.bits_drained += m.sent
        m.sent = m.bits
        self._active.pop(m.mid, None)
        on_hop = self._on_hop
        for h in m.hops:
            ms = on_hop.get(h)
            if ms is not None:
                ms.pop(m.mid, None)
                if not ms:
                    del on_hop[h]

    def _component(self, seeds) -> tuple[dict[int, WiredMessage], list, list]:
        """The active messages and the busy hops connected to the hops ``seeds``, and the
        messages of each connected piece among them."""
        on_hop = self._on_hop
        msgs: dict[int, WiredMessage] = {}
        hops = []
        pieces = []
        seen = set()
        for s in seeds:
            if s in seen or s not in on_hop:
                continue
            piece = []
            stack = [s]
            while stack:
                h = stack.pop()
                if h in seen:
                    continue
                seen.add(h)
                hops.append(h)
                for mid, m in on_hop[h].items():
                    if mid not in msgs:
                        msgs[mid] = m
                        piece.append(m)
                        stack.extend(m.hops)
            pieces.append(piece)
        return msgs, hops, pieces

    def _rates(self, msgs: dict[int, WiredMessage], hops: list) -> dict[int, float]:
        """Max-min fair rates of the messages ``msgs`` of one component crossing ``hops``
        (progressive filling)."""
        on_hop = self._on_hop
        if len(msgs) == 1:  # alone: its bottleneck (the first step of the filling, exactly)
            (mid, m), = msgs.items()
            return {mid: min(self._cap[h] for h in m.hops)}
        if len(hops) == 1:  # one shared hop: an equal share each
            h = hops[0]
            share = self._cap[h] / len(on_hop[h])
            return dict.fromkeys(msgs, share)
        cap = {h: self._cap[h] for h in hops}
        left = {h: dict(on_hop[h]) for h in hops}  # unfrozen messages per hop
        rates: dict[int, float] = {}
        while left:
            # the hop whose equal share is smallest freezes its messages (ties: hop order)
            h_min = min(left, key=lambda h: (cap[h] / len(left[h]), h))
            share = cap[h_min] / len(left[h_min])
            for mid, m in list(left[h_min].items()):
                rates[mid] = share
                for h in m.hops:
                    ms = left.get(h)
                    if ms is not None and mid in ms:
                        del ms[mid]
                        cap[h] = max(cap[h] - share, 0.0)
                        if not ms:
                            del left[h]
        return rates

    def _arm(self, key, wake: bool, m: WiredMessage) -> None:
        """Put a timer for ``key`` on SimPy's queue, unless one is there already."""
        order = key[1]
        if order in self._pending:
            return
        self._pending[order] = (wake, m)
        ev = Event(self.env)
        ev._ok = True
        ev._value = order
        ev.callbacks.append(self._on_timer)
        heappush(self.env._queue, (key[0], NORMAL, order, ev))

    def _arm_arrival(self, m: WiredMessage) -> None:
        """A removed (drained) message's pending arrival goes on SimPy's queue."""
        m.wake_key = None
        if m.arr_key is not None:
            self._arm(m.arr_key, False, m)

    def _replan(self, seeds) -> None:
        """Re-plan the components of the hops ``seeds``: new rates, the keys of arrivals and
        drain wake-ups (taken in message order), and one timer per connected piece for its
        earliest key."""
        msgs, hops, pieces = self._component(seeds)
        if not msgs:
            return
        now = self.env.now
        on_hop = self._on_hop
        rates = self._rates(msgs, hops)
        lone = len(msgs) == 1
        # order keys: a SimPy event id taken at the first key, plus j / 2**20 for the j-th
        # (exact while event ids stay below 2**33)
        base, j = -1, 0
        shared = set() if lone else {h for h in hops if len(on_hop[h]) > 1}
        for mid in (msgs if lone else sorted(msgs)):
            m = msgs[mid]
            r = rates[mid]
            if r != m.rate:
                m.rate = r
                m.gen += 1
                m.wake_key = None
                drain = max(m.bits - m.sent, 0.0) / r
                m.t_drain = now + drain
                if base < 0:
                    base = next(self.env._eid)
                # the arithmetic of Timeout(latency + drain) scheduled now
                m.arr_key = (now + (m.latency_s + drain), base + j * 2.0**-20)
                j += 1
            if m.wake_key is None and not shared.isdisjoint(m.hops):
                # it shares a hop: its drain frees capacity
                if base < 0:
                    base = next(self.env._eid)
                m.wake_key = (now + max(m.t_drain - now, 0.0), base + j * 2.0**-20)
                j += 1
        for piece in pieces:
            first, wake, m_first = None, False, None
            for m in piece:
                k = m.arr_key
                if first is None or k < first:
                    first, wake, m_first = k, False, m
                k = m.wake_key
                if k is not None and k < first:
                    first, wake, m_first = k, True, m
            self._arm(first, wake, m_first)

    def forget_stale_timers(self) -> None:
        """Drop the timers of messages that arrived or were cancelled (with nothing in flight,
        that is every pending timer): their events, still on SimPy's queue, then do nothing.
        A checkpoint calls it, since a resumed run's fresh queue holds no such events."""
        if self._in_flight:
            raise RuntimeError("forget_stale_timers: messages are still in flight.")
        self._pending.clear()

    def _on_timer(self, ev) -> None:
        order = ev._value
        entry = self._pending.pop(order, None)
        if entry is None:  # forgotten at a checkpoint: its message arrived or was cancelled
            return
        wake, m = entry
        if wake:
            if m.active and m.wake_key is not None and m.wake_key[1] == order:
                self._on_drain(m)
        elif m.arr_key is not None and m.arr_key[1] == order:
            self._on_arrival(m)

    def _on_drain(self, m: WiredMessage) -> None:
        self._settle()
        self._remove(m)
        self._arm_arrival(m)
        seeds = list(m.hops)
        for o in list(self._active.values()):  # others that drain at this instant too
            if o.bits - o.sent <= 1e-9 * o.bits + 1e-9:
                self._remove(o)
                self._arm_arrival(o)
                seeds.extend(o.hops)
        self._replan(seeds)

    def _on_arrival(self, m: WiredMessage) -> None:
        m.arr_key = None
        if m.active:  # a lone message: drained long ago, nobody met it since
            self._settle()
            self._remove(m)
            self._replan(m.hops)
        # Urgent, so that whoever waits resumes right after this timeout, as it would when
        # waiting on the timeout itself (same-time order as without contention modelling).
        self._in_flight.pop(m.mid, None)
        m.done._ok = True
        m.done._value = m
        self.env.schedule(m.done, URGENT)

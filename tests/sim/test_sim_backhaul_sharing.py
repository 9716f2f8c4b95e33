"""Wired contention: max-min fair fluid sharing of backhaul links, exact completion times.

Every expected time is computed by hand in the test's docstring.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import simpy

from sim.backhaul import Backhaul, WiredNet
from sim.links import TableLink
from sim.prediction import predicted_wired
from sim.simulation import Simulation

from simkit import ScriptAlgo, approx, scenario


def _line(cap_bps=1e6, latency_s=0.0) -> Backhaul:
    g = nx.Graph()
    g.add_edge("a", "b", capacity_bps=cap_bps, latency_s=latency_s)
    return Backhaul(g)


def _send_at(env, net, path, t0, bits, out, key):
    yield env.timeout(t0)
    msg = net.send(path, bits)
    yield msg.done
    out[key] = env.now


def _run(bh, sends, sharing="fair"):
    """sends: (key, src, dst, t0, bits). Returns arrival times by key, and the net."""
    env = simpy.Environment()
    net = WiredNet(env, sharing)
    out: dict = {}
    for key, src, dst, t0, bits in sends:
        env.process(_send_at(env, net, bh.path(src, dst), t0, bits, out, key))
    env.run()
    return out, net


def test_two_equal_messages_together_take_twice_as_long():
    """C = 1 Mbit/s, 10 ms latency; two 1 Mbit messages at t = 0 get 0.5 Mbit/s each:
    both arrive at 2 · 1e6 / 1e6 + 0.01 = 2.01 s (alone: 1.01 s)."""
    bh = _line(1e6, 0.01)
    out, _ = _run(bh, [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 0.0, 1e6)])
    assert out == {1: approx(2.01), 2: approx(2.01)}
    out, _ = _run(bh, [(1, "a", "b", 0.0, 1e6)])
    assert out == {1: approx(1.01)}
    out, _ = _run(bh, [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 0.0, 1e6)], sharing="none")
    assert out == {1: approx(1.01), 2: approx(1.01)}


def test_second_message_midway_slows_the_first_exactly():
    """C = 1 Mbit/s, no latency. m1 (1 Mbit) at 0: alone until 0.5 s (0.5 Mbit sent), then
    0.5 Mbit/s: its last 0.5 Mbit take 1 s → 1.5 s (0.5 s later than alone). m2 (1 Mbit)
    at 0.5: 0.5 Mbit by 1.5 s, then alone at 1 Mbit/s for 0.5 s → 2.0 s."""
    out, net = _run(_line(), [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 0.5, 1e6)])
    assert out == {1: approx(1.5), 2: approx(2.0)}
    assert net.hop_bits[("a", "b")] == approx(2e6)


def test_cancel_speeds_the_others_up():
    """Two 1 Mbit messages on C = 1 Mbit/s from 0; m2 abandoned at 0.5 s (0.25 Mbit sent
    each): m1's last 0.75 Mbit at 1 Mbit/s → 1.25 s."""
    env = simpy.Environment()
    net = WiredNet(env)
    path = _line().path("a", "b")
    m1, m2 = net.send(path, 1e6), net.send(path, 1e6)

    def stop():
        yield env.timeout(0.5)
        net.cancel(m2)

    def wait(out):
        yield m1.done
        out.append(env.now)

    out: list = []
    env.process(stop())
    env.process(wait(out))
    env.run()
    assert out == [approx(1.25)] and not m2.done.triggered
    assert net.hop_bits[("a", "b")] == approx(1.25e6)


def test_lone_message_removed_lazily_after_draining():
    """m1 (1 Mbit, C = 1 Mbit/s, 0.5 s latency) drains at 1.0, arrives at 1.5. m2 at 1.2
    finds the link free: drains 2.2, arrives 2.7. With m2 at 0.9 instead: m1 has 0.1 Mbit
    left at 0.5 Mbit/s → drains 1.1, arrives 1.6; m2 sends 0.1 Mbit by 1.1, then 0.9 Mbit
    alone → 2.0, arrives 2.5."""
    bh = _line(1e6, 0.5)
    out, _ = _run(bh, [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 1.2, 1e6)])
    assert out == {1: approx(1.5), 2: approx(2.7)}
    out, _ = _run(bh, [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 0.9, 1e6)])
    assert out == {1: approx(1.6), 2: approx(2.5)}


def test_disjoint_links_and_opposite_directions_do_not_interact():
    """Star: site0 → edge and site1 → edge are different links; edge → site0 is the other
    direction of a full-duplex link. Every 1 Mbit message alone: 1 s."""
    bh = Backhaul.star(2, site_edge_capacity_bps=1e6, site_edge_latency_s=0.0)
    out, _ = _run(bh, [(1, "site0", "edge", 0.0, 1e6), (2, "site1", "edge", 0.0, 1e6),
                       (3, "edge", "site0", 0.0, 1e6)])
    assert out == {1: approx(1.0), 2: approx(1.0), 3: approx(1.0)}


def test_max_min_fair_over_multi_hop_paths():
    """m1: site0 → edge (0.5 Mbit/s) → cloud; m2: site1 → edge (10 Mbit/s) → cloud; edge →
    cloud 1.5 Mbit/s. Progressive filling: site0's link fixes m1 at 0.5 Mbit/s, m2 gets the
    rest of edge → cloud, 1 Mbit/s. 1 Mbit each: m2 at 1.0 s, m1 at 2.0 s (m2 leaving does
    not speed m1 up: its own link is its bottleneck)."""
    g = nx.Graph()
    g.add_edge("site0", "edge", capacity_bps=0.5e6, latency_s=0.0)
    g.add_edge("site1", "edge", capacity_bps=10e6, latency_s=0.0)
    g.add_edge("edge", "cloud", capacity_bps=1.5e6, latency_s=0.0)
    out, net = _run(Backhaul(g), [(1, "site0", "cloud", 0.0, 1e6), (2, "site1", "cloud", 0.0, 1e6)])
    assert out == {1: approx(2.0), 2: approx(1.0)}
    assert net.hop_bits[("edge", "cloud")] == approx(2e6)


def test_infinite_capacity_links_never_constrain():
    g = nx.Graph()
    g.add_edge("a", "b", capacity_bps=math.inf, latency_s=0.25)
    out, _ = _run(Backhaul(g), [(1, "a", "b", 0.0, 1e6), (2, "a", "b", 0.0, 1e6)])
    assert out == {1: approx(0.25), 2: approx(0.25)}


def test_bits_conservation_random_traffic(monkeypatch):
    """Random messages on a star: every hop carried exactly the bits of the messages that
    cross it; every message's settled bits equal its size; at every re-plan the rates of the
    messages on a hop sum to at most its capacity, and a contended hop is filled (max-min
    fairness leaves no capacity idle on a bottleneck)."""
    plans = []
    rates_of = WiredNet._rates

    def recording(self, msgs, hops):
        rates = rates_of(self, msgs, hops)
        plans.append([(self._cap[h], [rates[mid] for mid in self._on_hop[h]]) for h in hops])
        return rates

    monkeypatch.setattr(WiredNet, "_rates", recording)
    rng = np.random.default_rng(3)
    bh = Backhaul.star(3, site_edge_capacity_bps=2e6, site_edge_latency_s=0.001,
                       edge_cloud_capacity_bps=3e6, edge_cloud_latency_s=0.01)
    nodes = ["site0", "site1", "site2", "edge", "cloud"]
    sends, expect = [], {}
    for i in range(40):
        src, dst = rng.choice(nodes, 2, replace=False)
        bits = float(rng.integers(1, 2_000_000))
        sends.append((i, str(src), str(dst), float(rng.uniform(0, 5)), bits))
        for hop in bh.path(str(src), str(dst)).hops:
            expect[hop] = expect.get(hop, 0.0) + bits
    out, net = _run(bh, sends)
    assert len(out) == 40
    assert net.n_active == 0 and net.n_in_flight == 0  # every message drained and landed
    assert len(plans) > 40 and any(len(hops) > 1 for hops in plans)  # shared, multi-hop plans
    for hops in plans:
        for cap, rates in hops:
            assert sum(rates) <= cap * (1 + 1e-12)
        assert any(sum(rates) == pytest.approx(cap, rel=1e-12) for cap, rates in hops)  # a bottleneck
    for hop, bits in expect.items():
        assert net.hop_bits[hop] == pytest.approx(bits, rel=1e-9)
        cap = bh.graph.edges[hop]["capacity_bps"]
        assert bits <= cap * max(out.values()) * (1 + 1e-12)
    assert net.bits_drained == pytest.approx(net.bits_offered, rel=1e-12)
    for key, src, dst, t0, bits in sends:  # never faster than alone
        assert out[key] >= t0 + bh.path(src, dst).delay_s(bits) - 1e-9


def _two_uploads(sharing: str):
    """Two clients in one cell (1 Mbit/s shared radio): both 1 Mbit uploads leave the radio
    at 2 s, then share site0 → edge (10 Mbit/s): 0.2 s together (0.1 s each alone)."""
    scn = scenario(backhaul={"site_edge_capacity_bps": 1e7, "site_edge_latency_s": 0.0,
                             "edge_cloud_latency_s": 0.0, "sharing": sharing})
    sim = Simulation(scn, algorithm=ScriptAlgo(2), link=TableLink([1e6, 1e6], cells=[0, 0]))
    sim.run()
    return [t for e, t in sim.tracer.events() if e == "wired_end"]


def test_simulation_uploads_share_the_backhaul():
    assert _two_uploads("fair") == [approx(2.2), approx(2.2)]
    assert _two_uploads("none") == [approx(2.1), approx(2.1)]


def test_sharing_must_be_known():
    with pytest.raises(Exception, match="sharing"):
        scenario(backhaul={"sharing": "greedy"})
    with pytest.raises(ValueError, match="'sharing' parameter of WiredNet"):
        WiredNet(simpy.Environment(), "greedy")


@pytest.mark.parametrize("n", [4, 64])
def test_shared_link_schedules_constant_events_per_change(n):
    """n messages of k · 0.1 Mbit (k = 1..n) start together on C = 1 Mbit/s, 10 ms latency.
    Equal shares: message k drains when the n - k + 1 still draining have each sent its
    extra 0.1 Mbit, t_k = Σ_{j ≤ k} (n - j + 1) · 0.1 = 0.1 · (k·n - k(k - 1)/2) s, and
    arrives 10 ms later. SimPy processes O(1) events per message — five of its own (its
    process start, its start timeout, its arrival timer, its ``done``, its process end) and
    at most one timer per change (its start, its drain) — not O(n) per change: the old
    one-timeout-per-sharer scheme processed 46 events at n = 4, about n² in all."""
    env = simpy.Environment()
    net = WiredNet(env, "fair")
    path = _line(1e6, 0.01).path("a", "b")
    out: dict = {}
    for k in range(1, n + 1):
        env.process(_send_at(env, net, path, 0.0, k * 1e5, out, k))
    steps = 0
    while env.peek() < math.inf:
        env.step()
        steps += 1
    assert out == {k: approx(0.1 * (k * n - k * (k - 1) / 2) + 0.01) for k in range(1, n + 1)}
    assert steps <= 7 * n


@pytest.mark.parametrize("sharing", ["fair", "none"])
def test_predicted_wired_time_counts_the_flows_sharing_a_hop(sharing):
    """Two clients behind site0 (site0 → edge 10 Mbit/s, everything else unconstrained, no
    latency): a 1 Mbit upload each. Both selected (k = 2 of 2): with fair sharing they are
    expected to split the hop, 1e6 / 5e6 = 0.2 s each; k = 1 of 2 expects one flow, 0.1 s;
    without sharing it is 0.1 s whatever k. The download direction adds its own bits."""
    scn = scenario(backhaul={"site_edge_capacity_bps": 1e7, "site_edge_latency_s": 0.0,
                             "edge_cloud_capacity_bps": math.inf, "edge_cloud_latency_s": 0.0,
                             "sharing": sharing})
    sim = Simulation(scn, algorithm=ScriptAlgo(2), link=TableLink([1e6, 1e6], cells=[0, 0]))
    ids = np.array([0, 1])
    both = predicted_wired(sim, ids, 2, 2, 1e6, 0.0)
    one = predicted_wired(sim, ids, 2, 1, 1e6, 0.0)
    assert both == pytest.approx([0.2, 0.2] if sharing == "fair" else [0.1, 0.1])
    assert one == pytest.approx([0.1, 0.1])
    assert predicted_wired(sim, ids[:1], 2, 1, 1e6, 1e6) == pytest.approx([0.2])  # 0.1 up + 0.1 down

"""Round drivers: whole-trace tests, deadlines, failures as data, capacity, async staleness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fl.core.actions import ClientResult, Failure, Receive, Send, SendPlan, ServerCompute
from sim.drivers import AsyncDriver, Driver, HierarchicalDriver, SyncDriver, make_driver
from sim.links import TableLink
from sim.scenario import DEFAULT_DROPOUT_WINDOW_S
from sim.simulation import Simulation

from simkit import ScriptAlgo, approx, scenario

NO_WIRE = {"site_edge_latency_s": 0.0, "edge_cloud_latency_s": 0.0,
           "site_edge_capacity_bps": math.inf, "edge_cloud_capacity_bps": math.inf}


def _sim(rates, cells=None, algo=None, **sections):
    sections.setdefault("backhaul", NO_WIRE)
    scn = scenario(**sections)
    n = scn.clients.n_clients
    algo = algo or ScriptAlgo(n)
    sim = Simulation(scn, algorithm=algo, link=TableLink(rates, cells=cells))
    return sim, algo


def test_sync_round_whole_trace():
    """Two clients share one cell (1 Mbit/s each alone, equal share). Receive 1 Mbit: both at
    0.5 Mbit/s → 2 s. Compute 1 GFLOP at 1 GFLOP/s → 3 s. Send 1 Mbit shared → 5 s."""
    algo = ScriptAlgo(2, up_bits=1_000_000, down_bits=1_000_000, flops=1e9)
    sim, _ = _sim([1e6, 1e6], algo=algo)
    res = sim.run()
    assert sim.tracer.events() == [
        ("evaluate", 0),  # the untrained model, round -1 (the baseline in summary.json)
        ("round_start", 0), ("selected", 0), ("selected", 0),
        ("wired_end", 0), ("send_start", 0), ("wired_end", 0), ("send_start", 0),
        ("send_end", 2.0), ("send_end", 2.0),
        ("compute_start", 2.0), ("compute_start", 2.0),
        ("compute_end", 3.0), ("send_start", 3.0), ("compute_end", 3.0), ("send_start", 3.0),
        ("send_end", 5.0), ("send_end", 5.0),
        ("wired_end", 5.0), ("client_done", 5.0), ("wired_end", 5.0), ("client_done", 5.0),
        ("aggregate", 5.0), ("evaluate", 5.0), ("round_end", 5.0),
    ]
    row = res.rounds.iloc[0]
    assert (row.n_selected, row.n_completed, row.n_failed) == (2, 2, 0)
    assert row.bits_up == 2e6 and row.bits_down == 2e6
    # energy: compute 2 W × 1 s each + tx 23 dBm (0.19953 W) × 2 s each; rx power 0
    assert row.energy_j == approx(2 * (2.0 + 10 ** (-0.7) * 2.0))
    assert row.accuracy == 0.5 and row.n_results == 2
    assert res.summary["initial"]["accuracy"] == algo.evaluate(-1)["accuracy"]


def test_deadline_min_updates_and_failures_as_data():
    """Three clients alone in their cells at 1, 1, 0.1 Mbit/s; 1 Mbit uploads; deadline 2 s.
    Two finish at 1 s; the third is interrupted at 2 s with 0.2 Mbit delivered."""
    algo = ScriptAlgo(3)
    sim, _ = _sim([1e6, 1e6, 0.1e6], cells=[0, 1, 2], algo=algo,
                  clients={"n_clients": 3}, fl={"clients_per_round": 3, "deadline_s": 2.0,
                                                "min_updates": 2})
    res = sim.run()
    (rnd, results, failures), = algo.aggregates
    assert [r.client for r in results] == [0, 1]
    assert all(isinstance(r, ClientResult) for r in results)
    assert failures == [Failure(2, "deadline", "update", approx(200_000))]
    assert algo.work_calls == [0, 1], "work never runs for the failed upload"
    assert algo.closed == [2], "the failed client's generator is closed"
    row = res.rounds.iloc[0]
    assert row.t_end_s == approx(2.0)
    assert (row.n_completed, row.n_failed) == (2, 1)
    assert row.bits_up == approx(2_200_000)
    failed = [r for r in sim.tracer.rows if r[1] == "send_failed"]
    assert len(failed) == 1 and failed[0][0] == approx(2.0) and failed[0][7] == approx(200_000)


def test_round_fails_below_min_updates():
    algo = ScriptAlgo(3)
    sim, _ = _sim([1e6, 1e6, 0.1e6], cells=[0, 1, 2], algo=algo,
                  clients={"n_clients": 3}, fl={"clients_per_round": 3, "deadline_s": 2.0,
                                                "min_updates": 3, "rounds": 2})
    res = sim.run()
    assert algo.aggregates == []
    assert [e for e, _ in sim.tracer.events()].count("round_failed") == 2
    assert res.rounds["n_failed"].tolist() == [1, 1]
    assert res.rounds["t_end_s"].tolist() == [approx(2.0), approx(4.0)]


def test_capacity_handed_to_sizer_is_rate_times_budget():
    """2 Mbit/s alone; compute 1 s; deadline 10 s → budget 9 s → capacity 18 Mbit. A second
    client already uploading in the same cell halves the predicted rate."""
    algo = ScriptAlgo(1, flops=1e9,
                      sizer=lambda cap: SendPlan(bits=int(cap // 10), k=7))
    sim, _ = _sim([2e6], algo=algo, clients={"n_clients": 1},
                  fl={"clients_per_round": 1, "deadline_s": 10.0})
    sim.run()
    assert algo.capacities == [(0, approx(18e6))]
    start = [r for r in sim.tracer.rows if r[1] == "send_start" and r[5] == "up"][0]
    assert start[10] == approx(18e6) and start[11] == 7 and start[6] == 1_800_000

    algo = ScriptAlgo(1)
    sim, _ = _sim([2e6], algo=algo, clients={"n_clients": 1},
                  fl={"clients_per_round": 1, "capacity_budget_s": 3.0})
    sim.run()
    assert algo.capacities == [(0, approx(6e6))]


def test_capacity_reflects_current_mac_share():
    """Client 1 starts uploading 1 s after client 0 (compute 1 s): predicted share is 1/2."""
    class Staggered(ScriptAlgo):
        def client_round(self, rnd, client):
            if client == 1:
                from fl.core.actions import Compute
                yield Compute(1e9)
            return (yield from super().client_round(rnd, client))

    algo = Staggered(2, up_bits=10_000_000)
    sim, _ = _sim([1e6, 1e6], algo=algo, fl={"capacity_budget_s": 1.0})
    sim.run()
    assert algo.capacities == [(0, approx(1e6)), (1, approx(0.5e6))]


def test_async_staleness_values():
    """Upload times 1, 2.5 and 4.2 s (cells apart); buffer 1, concurrency 3, 5 aggregations.
    Arrivals: c0@1 (base 0, v0), c0@2 (base 1, v1), c1@2.5 (base 0, v2), c0@3 (base 2, v3),
    c0@4 (base 4, v4) → staleness 0, 0, 2, 1, 0."""
    algo = ScriptAlgo(3)
    sim, _ = _sim([1e6, 1e6 / 2.5, 1e6 / 4.2], cells=[0, 1, 2], algo=algo,
                  clients={"n_clients": 3},
                  fl={"driver": "async", "clients_per_round": 3, "buffer_size": 1, "rounds": 5})
    res = sim.run()
    got = [(r.client, r.base_round, r.staleness) for _, rs, _ in algo.aggregates for r in rs]
    assert got == [(0, 0, 0), (0, 1, 0), (1, 0, 2), (0, 2, 1), (0, 4, 0)]
    assert res.rounds["t_end_s"].tolist() == [approx(t) for t in (1, 2, 2.5, 3, 4)]


def test_async_max_staleness_discards_as_failure():
    algo = ScriptAlgo(3)
    sim, _ = _sim([1e6, 1e6 / 2.5, 1e6 / 4.2], cells=[0, 1, 2], algo=algo,
                  clients={"n_clients": 3},
                  fl={"driver": "async", "clients_per_round": 3, "buffer_size": 1, "rounds": 4,
                      "max_staleness": 1})
    sim.run()
    staleness = [r.staleness for _, rs, _ in algo.aggregates for r in rs]
    assert max(staleness) <= 1
    fails = [f for _, _, fs in algo.aggregates for f in fs]
    assert Failure(1, "stale", "update", 1_000_000.0) in fails
    assert "stale_discarded" in [e for e, _ in sim.tracer.events()]


def test_dropout_reaches_aggregate():
    algo = ScriptAlgo(2, up_bits=10_000_000)
    sim, _ = _sim([1e6, 1e6], algo=algo,
                  clients={"dropout_prob": 1.0, "dropout_window_s": 1.0},
                  fl={"min_updates": 0})
    sim.run()
    (_, results, failures), = algo.aggregates
    assert results == [] and [f.reason for f in failures] == ["dropout", "dropout"]
    assert algo.work_calls == []
    assert all(0 < f.bits_delivered < 1e6 for f in failures)


def test_server_compute_sequential_vs_parallel():
    class WithServer(ScriptAlgo):
        def client_round(self, rnd, client):
            yield ServerCompute(1e12)
            return (yield from super().client_round(rnd, client))

    ends = {}
    for service in ("sequential", "parallel"):
        sim, _ = _sim([1e9, 1e9], cells=[0, 1], algo=WithServer(2, up_bits=0),
                      server={"flops_per_s": 1e12, "service": service})
        sim.run()
        ends[service] = [t for e, t in sim.tracer.events() if e == "server_compute_end"]
    assert ends["sequential"] == [approx(1.0), approx(2.0)]
    # processor sharing: two 1 TFLOP jobs at 0.5 TFLOP/s each
    assert ends["parallel"] == [approx(2.0), approx(2.0)]


def test_backhaul_adds_latency_and_serialization():
    """Radio 1 Mbit at 1 Mbit/s = 1 s; wired site0 → edge (10 ms, 100 Mbit/s) → cloud
    (20 ms, 10 Mbit/s): 30 ms + 1 Mbit / 10 Mbit/s = 0.13 s → done at 1.13 s."""
    algo = ScriptAlgo(1)
    sim, _ = _sim([1e6], algo=algo, clients={"n_clients": 1}, fl={"clients_per_round": 1},
                  backhaul={"site_edge_latency_s": 0.01, "site_edge_capacity_bps": 1e8,
                            "edge_cloud_latency_s": 0.02, "edge_cloud_capacity_bps": 1e7},
                  server={"placement": "cloud"})
    sim.run()
    done = [t for e, t in sim.tracer.events() if e == "client_done"]
    assert done == [approx(1.13)]
    sim, _ = _sim([1e6], algo=ScriptAlgo(1), clients={"n_clients": 1},
                  fl={"clients_per_round": 1},
                  backhaul={"site_edge_latency_s": 0.01, "site_edge_capacity_bps": 1e8},
                  server={"placement": "edge"})
    sim.run()
    assert [t for e, t in sim.tracer.events() if e == "client_done"] == [approx(1.02)]


def test_hierarchical_round_goes_through_edges():
    """Two cells, each site with its own edge server (5 ms, ∞ capacity) and edges → cloud
    (50 ms, 10 Mbit/s). Global model (1 Mbit) cloud → edge: 0.15 s; then edge → site 5 ms,
    radio 1 s; upload 1 Mbit 1 s; site → edge 5 ms. Each edge forwards one 1 Mbit partial
    aggregate: 0.15 s. Round ends at 0.15 + 0.005 + 1 + 1 + 0.005 + 0.15 = 2.31 s."""
    algo = ScriptAlgo(2, down_bits=1_000_000)
    bh = {"preset": "custom",
          "nodes": [{"name": "ea", "kind": "edge"}, {"name": "eb", "kind": "edge"},
                    {"name": "cloud", "kind": "cloud"}],
          "edges": [{"a": "site0", "b": "ea", "capacity_bps": math.inf, "latency_s": 0.005},
                    {"a": "site1", "b": "eb", "capacity_bps": math.inf, "latency_s": 0.005},
                    {"a": "ea", "b": "cloud", "capacity_bps": 1e7, "latency_s": 0.05},
                    {"a": "eb", "b": "cloud", "capacity_bps": 1e7, "latency_s": 0.05}]}
    sim, _ = _sim([1e6, 1e6], cells=[0, 1], algo=algo, backhaul=bh,
                  server={"placement": "cloud"}, fl={"hierarchical": True})
    res = sim.run()
    syncs = [r for r in sim.tracer.rows if r[1] == "edge_sync"]
    assert [(r[5], r[13]) for r in syncs] == [("down", "ea"), ("down", "eb"), ("up", "ea"),
                                              ("up", "eb")]
    assert res.rounds.iloc[0].t_end_s == approx(2.31)


def test_same_seed_same_trace_different_seed_different():
    def run(seed):
        algo = ScriptAlgo(6, flops=1e9)
        sim, _ = _sim([1e6] * 6, cells=[0, 1, 0, 1, 0, 1], algo=algo, seed=seed,
                      clients={"n_clients": 6,
                               "devices": [{"name": "d", "flops_per_s": 1e9, "jitter_sigma": 0.3}]},
                      fl={"clients_per_round": 3, "selection": "random", "rounds": 3})
        res = sim.run()
        return sim.tracer.to_frame(), res.rounds

    (e1, r1), (e2, r2), (e3, r3) = run(1), run(1), run(2)
    assert e1.equals(e2) and r1.equals(r2)
    assert not e1.equals(e3)


_EDGES = {"preset": "custom",
          "nodes": [{"name": "ea", "kind": "edge"}, {"name": "cloud", "kind": "cloud"}],
          "edges": [{"a": "site0", "b": "ea", "capacity_bps": math.inf, "latency_s": 0.0},
                    {"a": "ea", "b": "cloud", "capacity_bps": math.inf, "latency_s": 0.0}]}
_DRIVERS = {
    "sync": ({"driver": "sync"}, {}, SyncDriver),
    "hierarchical": ({"driver": "sync", "hierarchical": True},
                     {"backhaul": _EDGES, "server": {"placement": "cloud"}}, HierarchicalDriver),
    "async": ({"driver": "async", "buffer_size": 1}, {}, AsyncDriver),
}


def test_each_driver_extends_the_base():
    """The shared work lives in Driver; a driver only writes its rounds (run) and, for async,
    adds the per-task deadline to start_task (super() does the rest)."""
    for name, (fl, extra, cls) in _DRIVERS.items():
        sim, _ = _sim([1e6, 1e6], fl=fl, **extra)
        driver = make_driver(sim)
        assert type(driver) is cls and isinstance(driver, Driver), name
        assert cls.run is not Driver.run
        for shared in ("select", "mark_selected", "end_round", "_evaluate", "_round_row",
                       "_on_dropout"):
            assert getattr(cls, shared) is getattr(Driver, shared), (name, shared)
    assert SyncDriver.start_task is Driver.start_task
    assert HierarchicalDriver.run is SyncDriver.run


@pytest.mark.parametrize("name", sorted(_DRIVERS))
def test_every_driver_drops_out_within_the_default_window(name):
    """No deadline and no dropout_window_s: drop-outs happen within DEFAULT_DROPOUT_WINDOW_S
    of the task's start, by the base class's start_task, in every driver. Uploads of 1 Gbit
    at 1 Mbit/s (1,000 s) are under way then (async dispatches new clients as they drop:
    the run stops at 200 s)."""
    fl, extra, _ = _DRIVERS[name]
    algo = ScriptAlgo(2, up_bits=10**9)
    sim, _ = _sim([1e6, 1e6], algo=algo, clients={"dropout_prob": 1.0},
                  fl={**fl, "min_updates": 0, "rounds": 1, "deadline_s": None},
                  duration_s=200.0, **extra)
    assert make_driver(sim).dropout_window_s == DEFAULT_DROPOUT_WINDOW_S == 60.0
    sim.run()
    drops = [t for e, t in sim.tracer.events() if e == "dropout"]
    assert len(drops) >= 2 and all(0 < t < DEFAULT_DROPOUT_WINDOW_S for t in drops[:2])
    assert all(e != "client_done" for e, _ in sim.tracer.events())

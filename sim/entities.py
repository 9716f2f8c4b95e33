"""The network entities and the builders that make them from a scenario.

- :class:`Cell` (a base station or sector), :class:`Client` (a UE), :class:`Server` (the
  aggregator): plain state, owned by :class:`sim.simulation.Simulation`.
- :func:`build_backhaul`, :func:`build_server`, :func:`make_algorithm`: the wired graph,
  the aggregator and the FL algorithm a scenario describes.
- :func:`road_segments`: the roads the scenario's vehicles drive along (for the cell map).

Checkpoints store these classes by name: files written while they lived in
:mod:`sim.simulation` are read through ``fl.core.statefile``'s table of moved classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from fl.core.algorithm import Algorithm, AlgorithmContext, get_algorithm
from sim.backhaul import Backhaul, site_node
from sim.compute import DeviceProfile, ProcessorSharing
from sim.scenario import Scenario

__all__ = ["Cell", "Client", "Server", "dbm_to_w", "build_backhaul", "build_server",
           "make_algorithm", "road_segments"]


def dbm_to_w(dbm: float) -> float:
    """Power in W of ``dbm`` dBm."""
    return 10.0 ** ((dbm - 30.0) / 10.0)


@dataclass
class Cell:
    """A base station (or sector): its site and its uplink/downlink bands.

    The bandwidth pools and the MAC scheduler state live in :class:`sim.network.Network`
    (``network.pool_flows(cell, direction)`` lists the active flows).
    """

    id: int
    site: int
    uplink_bandwidth_hz: float
    downlink_bandwidth_hz: float
    mac: str


@dataclass
class Client:
    """A UE: group (mobility), device profile, radio power, data shard, energy account."""

    id: int
    group: str
    device: DeviceProfile
    tx_power_dbm: float
    shard: int
    energy_j: float = 0.0
    last_selected: int = -1
    busy: bool = False

    @property
    def tx_power_w(self) -> float:
        return dbm_to_w(self.tx_power_dbm)


@dataclass
class Server:
    """The aggregator: backhaul node, FLOP/s, sequential (queued) or parallel service
    (processor sharing)."""

    node: str
    flops_per_s: float
    service: str
    resource: simpy.Resource | None = None
    ps: ProcessorSharing | None = None

    _state_renames = {"flops": "flops_per_s"}  # checkpoints written before 0.2 (fl.core.statefile)


def build_backhaul(scn: Scenario, n_sites: int) -> Backhaul:
    """The wired graph of ``backhaul``: its ``star`` preset, or its explicit nodes and edges
    (sites ``0 .. n_sites - 1`` are added as nodes)."""
    import networkx as nx

    bh = scn.backhaul
    if bh.preset == "star":
        return Backhaul.star(n_sites, bh.site_edge_capacity_bps, bh.site_edge_latency_s,
                             bh.edge_cloud_capacity_bps, bh.edge_cloud_latency_s)
    g = nx.Graph()
    for s in range(n_sites):
        g.add_node(site_node(s), kind="site")
    for node in bh.nodes:
        g.add_node(node.name, kind=node.kind)
    for e in bh.edges:
        g.add_edge(e.a, e.b, capacity_bps=e.capacity_bps, latency_s=e.latency_s)
    return Backhaul(g)


def build_server(scn: Scenario, backhaul: Backhaul, env: simpy.Environment) -> Server:
    """The aggregator of ``server``: on its node (or the first node of its placement kind),
    with a FIFO resource (``sequential``) or processor sharing (``parallel``)."""
    s = scn.server
    node = s.node or backhaul.nodes_of_kind(s.placement)[0]
    if s.service == "sequential":
        return Server(node, s.flops_per_s, s.service, simpy.Resource(env, capacity=1))
    return Server(node, s.flops_per_s, s.service, ps=ProcessorSharing(env, s.flops_per_s))


def make_algorithm(scn: Scenario, run_dir: str | None) -> Algorithm:
    """The FL algorithm ``fl.algorithm`` with its validated ``fl.options``."""
    cls = get_algorithm(scn.fl.algorithm)
    return cls(scn.fl.options,  # already the algorithm's validated config
               AlgorithmContext(n_clients=scn.clients.n_clients, seed=scn.seed, run_dir=run_dir,
                                rounds=scn.fl.rounds, runtime=scn.execution.runtime()))


def road_segments(scn: Scenario) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """(group, start (x, y) m, end (x, y) m) of every distinct road segment a group drives
    along (``mobility: {kind: constant_velocity}``), for the cell map."""
    out = []
    for g in scn.clients.groups:
        mob = g.mobility
        if mob.kind != "constant_velocity":
            continue
        starts = np.asarray(mob.start_xy_m, dtype=float).reshape(-1, 2)
        ends = np.asarray(mob.end_xy_m, dtype=float).reshape(-1, 2)
        starts, ends = np.broadcast_arrays(starts, ends)
        seen = set()
        for a, b in zip(starts, ends):
            key = (*a, *b)
            if key not in seen:
                seen.add(key)
                out.append((g.name, (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))))
    return out

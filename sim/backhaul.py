"""The wired side: base-station sites, edge servers and the cloud on a networkx graph.

A message crosses the radio hop and then its wired path — the shortest path by latency —
taking ``Σ latency_s + bits / min(capacity_bps)`` (store-and-forward at the bottleneck;
propagation delays add). Wired links are not shared between messages (no contention): the
bottleneck figure is the capacity available to one message.

Node names: ``site<i>`` for the radio sites (one per layout site), plus the edge servers
and the cloud named in the scenario (``kind: edge`` / ``kind: cloud``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

__all__ = ["Backhaul", "WiredPath", "site_node"]


def site_node(site: int) -> str:
    """The graph node of radio site ``site``."""
    return f"site{site}"


@dataclass(frozen=True)
class WiredPath:
    """A wired route: node names, total propagation latency (s), bottleneck (bit/s)."""

    nodes: tuple[str, ...]
    latency_s: float
    bottleneck_bps: float

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
                p = WiredPath(tuple(nodes), sum(h["latency_s"] for h in hops),
                              min(h["capacity_bps"] for h in hops))
            self._paths[key] = p
            self._paths[(dst, src)] = WiredPath(tuple(reversed(p.nodes)), p.latency_s,
                                                p.bottleneck_bps)
        return p

    def nearest(self, src: str, kind: str) -> str:
        """The node of ``kind`` closest to ``src`` by latency (ties: name order)."""
        cands = self.nodes_of_kind(kind)
        if not cands:
            raise ValueError(f"The backhaul has no node of kind {kind!r}.")
        return min(cands, key=lambda n: (self.path(src, n).latency_s, n))

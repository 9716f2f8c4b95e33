"""Helpers for the kernel tests: tiny scenarios, a scripted algorithm, exact fake links."""

from __future__ import annotations

import copy
import math
import textwrap

import pytest

from fl.core.actions import Compute, Receive, Send, SendPlan
from fl.core.algorithm import Algorithm, AlgorithmConfig, AlgorithmContext
from sim.scenario import Scenario

# A small valid scenario as YAML text (scenario-loading tests edit it line by line).
GOOD_YAML = textwrap.dedent("""\
    name: tiny
    seed: 3
    network:
      layout: {kind: single_cell, radius_m: 200}
      pathloss: {kind: uma}
      uplink_bandwidth_hz: 10.0e6
    clients:
      n_clients: 4
      groups:
        - {name: walkers, mobility: {kind: static}}
    fl:
      algorithm: surrogate
      rounds: 2
      clients_per_round: 2
""")

BASE = {
    "name": "t",
    "seed": 1,
    "network": {"layout": {"kind": "single_cell"}, "uplink_bandwidth_hz": 1e6,
                "downlink_bandwidth_hz": 1e6},
    "clients": {"n_clients": 2, "devices": [{"name": "d", "flops_per_s": 1e9, "power_w": 2.0,
                                              "rx_power_w": 0.0}]},
    "backhaul": {"site_edge_latency_s": 0.0, "edge_cloud_latency_s": 0.0},
    "fl": {"rounds": 1, "clients_per_round": 2, "selection": "all"},
}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def scenario(**sections) -> Scenario:
    """BASE merged with ``sections`` (nested dicts), validated without radio plug-ins."""
    return Scenario.model_validate(_merge(BASE, sections))


class _Payload:
    def __init__(self, bits):
        self.bits = bits


class ScriptAlgo(Algorithm):
    """Receive(down_bits) → Compute(flops) → Send(up_bits); records everything it is told."""

    name = "script"
    Config = AlgorithmConfig

    def __init__(self, n_clients: int, up_bits: int = 1_000_000, down_bits: int = 0,
                 flops: float = 0.0, sizer=None, n_samples: int = 10) -> None:
        super().__init__(AlgorithmConfig(), AlgorithmContext(n_clients=n_clients, seed=0))
        self.up_bits = up_bits
        self.down_bits = down_bits
        self.flops = flops
        self.custom_sizer = sizer
        self._n = n_samples
        self.capacities: list[tuple[int, float]] = []
        self.work_calls: list[int] = []
        self.aggregates: list[tuple[int, list, list]] = []
        self.closed: list[int] = []

    def n_samples(self, client):
        return self._n

    def client_round(self, rnd, client):
        try:
            if self.down_bits:
                yield Receive(_Payload(self.down_bits))
            if self.flops:
                yield Compute(self.flops)

            def sizer(cap):
                self.capacities.append((client, cap))
                if self.custom_sizer is not None:
                    return self.custom_sizer(cap)
                return SendPlan(bits=self.up_bits)

            def work(plan):
                self.work_calls.append(client)
                return _Payload(plan.bits)

            update = yield Send(sizer=sizer, work=work)
            return update
        except GeneratorExit:
            self.closed.append(client)
            raise

    def aggregate(self, rnd, results, failures):
        self.aggregates.append((rnd, list(results), list(failures)))
        return {"n_results": float(len(results))}

    def evaluate(self, rnd):
        return {"accuracy": 0.5, "loss": 1.0}




def approx(x, rel=1e-12):
    return pytest.approx(x, rel=rel, abs=1e-12)


INF = math.inf

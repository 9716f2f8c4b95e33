"""Server processor sharing (``server.service: parallel``): hand-computed completion times."""

from __future__ import annotations

import pytest
import simpy

from fl.core.actions import ServerCompute
from sim.compute import ProcessorSharing
from sim.links import TableLink
from sim.simulation import Simulation

from simkit import ScriptAlgo, approx, scenario


def _jobs(flops_s, jobs, cancel=None):
    """jobs: (key, t0, flops); cancel: (key, t). Returns completion times by key."""
    env = simpy.Environment()
    ps = ProcessorSharing(env, flops_s)
    out, events = {}, {}

    def job(key, t0, flops):
        yield env.timeout(t0)
        events[key] = ev = ps.submit(flops)
        yield ev
        out[key] = env.now

    for key, t0, flops in jobs:
        env.process(job(key, t0, flops))
    if cancel is not None:
        def stop():
            yield env.timeout(cancel[1])
            ps.cancel(events[cancel[0]])
        env.process(stop())
    env.run()
    return out, ps


def test_second_job_midway_shares_the_server():
    """1 TFLOP/s. A (1 TFLOP) at 0 runs alone until 0.5 s (0.5 TFLOP done), then at
    0.5 TFLOP/s: its last 0.5 TFLOP take 1 s → 1.5 s. B (1 TFLOP) at 0.5: 0.5 TFLOP by
    1.5 s, then alone for 0.5 s → 2.0 s."""
    out, ps = _jobs(1e12, [("a", 0.0, 1e12), ("b", 0.5, 1e12)])
    assert out == {"a": approx(1.5), "b": approx(2.0)}
    assert ps.n_jobs == 0 and ps.flops_served == 2e12


def test_three_jobs_finish_in_size_order():
    """3 TFLOP/s, jobs of 1, 2, 3 TFLOP at 0: 1 TFLOP/s each → the first at 1.0 s; then 1.5
    TFLOP/s each: the second's last 1 TFLOP → 1 + 2/3 s; the third's last 1 TFLOP alone at
    3 TFLOP/s → 2.0 s (= 6 TFLOP / 3 TFLOP/s: the server never idles)."""
    out, _ = _jobs(3e12, [(1, 0.0, 1e12), (2, 0.0, 2e12), (3, 0.0, 3e12)])
    assert out == {1: approx(1.0), 2: approx(1 + 2 / 3), 3: approx(2.0)}


def test_cancel_speeds_the_others_up():
    """Two 1 TFLOP jobs on 1 TFLOP/s from 0; B abandoned at 0.5 s (0.25 TFLOP done each):
    A's last 0.75 TFLOP alone → 1.25 s."""
    out, ps = _jobs(1e12, [("a", 0.0, 1e12), ("b", 0.0, 1e12)], cancel=("b", 0.5))
    assert out == {"a": approx(1.25)}
    assert ps.flops_served == approx(1.25e12)


def test_flops_must_be_positive():
    with pytest.raises(ValueError, match="'flops_per_s' parameter of ProcessorSharing must be > 0"):
        ProcessorSharing(simpy.Environment(), 0.0)


class _ServerFirst(ScriptAlgo):
    def client_round(self, rnd, client):
        yield ServerCompute(1e12 * (client + 1))
        return (yield from super().client_round(rnd, client))


@pytest.mark.parametrize("service, ends", [
    # FIFO: 1 TFLOP (1 s), then 2 TFLOP (2 s more)
    ("sequential", [1.0, 3.0]),
    # shared: 0.5 TFLOP/s each → the 1 TFLOP job at 2 s; the 2 TFLOP job has 1 TFLOP
    # left, alone → 3 s
    ("parallel", [2.0, 3.0]),
])
def test_simulation_server_service(service, ends):
    scn = scenario(server={"flops_per_s": 1e12, "service": service},
                   backhaul={"site_edge_capacity_bps": float("inf"),
                             "edge_cloud_capacity_bps": float("inf")})
    sim = Simulation(scn, algorithm=_ServerFirst(2, up_bits=0),
                     link=TableLink([1e9, 1e9], cells=[0, 1]))
    sim.run()
    assert [t for e, t in sim.tracer.events() if e == "server_compute_end"] == [
        approx(t) for t in ends]

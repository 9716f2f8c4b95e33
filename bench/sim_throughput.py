"""Kernel throughput: fedwave's simulator against raw SimPy, and cost per client-round.

Prints two tables:

1. Events per second of a surrogate scenario (hex grid, 21 cells, Rayleigh block fading,
   radio and transfers modelled) against raw SimPy running a comparable event pattern in
   the same process: as many processes (one per client task) and as many scheduled events
   (timeouts), with no model behind them. The ratio says what the modelling costs per event.
2. Wall time per simulated client-round at 100, 1,000 and 10,000 clients (10 % of the
   clients selected per round), to show how the cost grows.

Run: ``python bench/sim_throughput.py`` (``--quick`` skips the 10,000-client point).
Benchmarks print figures; no test asserts them.
"""

from __future__ import annotations

import argparse
import time

import simpy

from sim.scenario import parse_scenario
from sim.simulation import Simulation


def scenario(n_clients: int, k: int, rounds: int = 3, block_s: float = 0.05):
    return parse_scenario({
        "name": f"bench{n_clients}",
        "seed": 1,
        "network": {"layout": {"kind": "hex_grid", "n_rings": 1, "isd_m": 500, "n_sectors": 3},
                    "pathloss": {"kind": "uma"}, "fading": {"kind": "rayleigh", "block_s": block_s},
                    "uplink_bandwidth_hz": 20e6, "downlink_bandwidth_hz": 40e6,
                    "rate": {"kind": "shannon", "gap_db": 3, "max_se_bps_hz": 6}},
        "clients": {"n_clients": n_clients, "drop": {"kind": "in_cells", "min_distance_m": 35},
                    "groups": [{"name": "walkers", "mobility": {
                        "kind": "random_waypoint", "speed_mps": [0.5, 1.5]}}]},
        "fl": {"algorithm": "surrogate", "rounds": rounds, "clients_per_round": k,
               "selection": "random", "deadline_s": 60.0,
               "options": {"upload_bits": 2_000_000, "download_bits": 2_000_000,
                           "flops_per_round": 4e10}},
    })


def run_sim(n_clients: int, k: int, rounds: int = 3):
    sim = Simulation(scenario(n_clients, k, rounds))
    t0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - t0
    n_events = next(sim.env._eid)  # every event ever scheduled (simpy's own counter)
    n_tasks = sum(1 for r in sim.tracer.rows if r[1] == "selected")
    return wall, n_events, n_tasks, sim


def run_raw(n_procs: int, n_events: int):
    """Raw SimPy: ``n_procs`` processes sharing ``n_events`` timeouts, nothing modelled."""
    env = simpy.Environment()
    per = max(1, n_events // max(n_procs, 1) - 2)  # start + end events of each process

    def proc(i):
        for j in range(per):
            yield env.timeout(((i * 7919 + j * 104729) % 1000) / 1000.0 + 0.001)

    for i in range(n_procs):
        env.process(proc(i))
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0, next(env._eid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 10,000-client point")
    args = ap.parse_args()

    print("1. events per second: fedwave kernel vs raw SimPy (same process)")
    wall, ev, tasks, sim = run_sim(200, 40, rounds=5)
    rwall, rev = run_raw(tasks, ev)
    sim_rate, raw_rate = ev / wall, rev / rwall
    print(f"   fedwave : {ev:9d} events in {wall:7.3f} s = {sim_rate:12,.0f} events/s "
          f"({tasks} client tasks, {len(sim.tracer)} trace rows)")
    print(f"   raw SimPy: {rev:9d} events in {rwall:7.3f} s = {raw_rate:12,.0f} events/s "
          f"({tasks} processes)")
    print(f"   ratio fedwave / raw = {sim_rate / raw_rate:.3f}")

    print("\n2. wall time per simulated client-round (hex grid, 21 cells, K = 10 % of clients)")
    print(f"   {'clients':>8} {'client-rounds':>14} {'events':>10} {'wall (s)':>9} "
          f"{'ms / client-round':>18} {'sim time (s)':>13}")
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    for n in sizes:
        wall, ev, tasks, sim = run_sim(n, max(1, n // 10), rounds=3)
        print(f"   {n:8d} {tasks:14d} {ev:10d} {wall:9.3f} {1e3 * wall / tasks:18.3f} "
              f"{sim.env.now:13.1f}")


if __name__ == "__main__":
    main()

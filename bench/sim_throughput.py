"""Kernel throughput: fedwave's simulator against raw SimPy, cost per client-round, and the
kernel's cost per client-block against a hand-tuned vectorised channel pipeline.

Prints two tables and the headline ratio.

1. Events per second, fedwave against raw SimPy running the *same event pattern* in the
   same process. fedwave runs a surrogate scenario (hex grid, 7 sites × 3 sectors = 21
   cells, UMa, Rayleigh block fading of 50 ms, walkers, Shannon rates, equal-share MAC,
   200 clients, 40 per round, 20 rounds; radio, transfers and compute modelled; the event
   trace recorded). Raw SimPy then replays that run's event pattern with nothing behind
   it: one driver process that, per round, starts one process per client task and waits
   for them as fedwave's synchronous driver does (``AnyOf(AllOf(tasks), deadline)`` then
   ``AllOf(tasks)``, then the server's time); each task process makes one timeout per
   stage its fedwave counterpart went through (wired downlink, downlink transfer, compute,
   uplink transfer, wired uplink — durations read from fedwave's trace), and the transfer
   stages are cut into extra timeouts until both sides have processed exactly the same
   number of SimPy events. fedwave's extra events are its transfer change points (pool
   wake-ups: completions, outage transitions, handovers and plan ends — transfers are
   planned many fading blocks at a time) and its transfer-completion events. Counted on
   both sides: every event SimPy scheduled (timeouts, process starts and ends, conditions,
   plain events), i.e. SimPy's own event counter. Times are the best of ``--repeats`` runs,
   fedwave and raw SimPy alternating. A last line splits fedwave's time into the channel
   (``RadioChannel.gains_over``: path loss, shadowing, LOS and fading of the chunks of
   blocks evaluated) and the rest.
2. Wall time per simulated client-round at 100, 1,000 and 10,000 clients (10 % of the
   clients selected per round, 3 rounds), next to the figures before the history-free
   channel and the planned transfers (1.57 / 1.19 / 2.01 ms, measured on an idle machine,
   issue 18), with the link work behind it: *client-blocks* — the fading blocks each
   transfer spanned, summed (the model's work, whatever the implementation evaluates) —
   and the client-blocks the channel evaluated (chunks of 16 blocks for the transferring
   clients and the round's participants, single blocks for clients asked about); the
   kernel's cost per client-block (wall time / client-blocks) and that cost against the
   vectorised channel pipeline's (``bench/channel_throughput.py``'s reference: the same
   stages, hand-written in numpy, measured in this run) for the same 21 links.

The headline line ``kernel cost per client-block / vectorised channel ceiling: X.X×`` is
taken at the largest client count of table 2.

Run: ``python bench/sim_throughput.py`` (``--quick``: skip the 10,000-client point).
Benchmarks print figures; no test asserts them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import simpy

from sim.scenario import parse_scenario
from sim.simulation import Simulation

# Trace events that end a stage of a client task (the task process resumes after them).
_STAGE_END = {"wired_end", "send_end", "send_failed", "compute_end", "server_compute_end",
              "client_done", "client_failed"}


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


def run_sim(n_clients: int, k: int, rounds: int = 3, trace: bool = True):
    """One fedwave run: (wall s, SimPy events, the Simulation).

    ``sim.channel_wall_s`` holds the wall time spent evaluating the channel
    (``RadioChannel.gains_over``, timed through an instance wrapper, well under 1 µs per
    call)."""
    sim = Simulation(scenario(n_clients, k, rounds), trace=trace)
    sim.channel_wall_s = 0.0
    channel = sim.link.channel
    gains_over = channel.gains_over

    def timed(*args):
        t = time.perf_counter()
        try:
            return gains_over(*args)
        finally:
            sim.channel_wall_s += time.perf_counter() - t

    channel.gains_over = timed
    t0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - t0
    return wall, next(sim.env._eid), sim  # _eid: SimPy's counter of scheduled events


def event_pattern(sim: Simulation) -> list[dict]:
    """Per round of a traced fedwave run: its start, deadline, end, and each client task's
    stages as (duration s, is a radio transfer)."""
    rows = sim.tracer.rows  # (t_s, event, round, client, cell, direction, ...)
    rounds = []
    for r in sim.rows:
        rounds.append({"t_start": r["t_start_s"], "t_end": r["t_end_s"], "tasks": {}})
    deadline = sim.scenario.fl.deadline_s
    for row in rows:
        t, ev, rnd, client = row[0], row[1], row[2], row[3]
        if rnd is None or client is None or rnd >= len(rounds):
            continue
        tasks = rounds[rnd]["tasks"]
        if ev == "selected":
            tasks[client] = {"t": t, "stages": []}
        elif ev == "send_start" and client in tasks:
            tasks[client]["radio_from"] = t
        elif ev in _STAGE_END and client in tasks:
            task = tasks[client]
            radio = ev in ("send_end", "send_failed")
            if t > task["t"]:
                task["stages"].append((t - task["t"], radio))
            task["t"] = t
    for r in rounds:
        r["deadline"] = deadline
        r["tasks"] = [r["tasks"][c]["stages"] for c in sorted(r["tasks"])]
    return rounds


def _split(rounds: list[dict], extra: int) -> None:
    """Cut radio stages into ``extra`` more timeouts in all, in proportion to their length."""
    radio = [(d, ri, ti, si) for ri, r in enumerate(rounds) for ti, st in enumerate(r["tasks"])
             for si, (d, is_radio) in enumerate(st) if is_radio]
    total = sum(d for d, *_ in radio)
    pieces = {}
    if radio and extra > 0 and total > 0:
        exact = [extra * d / total for d, *_ in radio]
        base = [int(math.floor(x)) for x in exact]
        rest = extra - sum(base)
        for i in sorted(range(len(radio)), key=lambda i: base[i] - exact[i])[:rest]:
            base[i] += 1
        pieces = {(ri, ti, si): n for (_, ri, ti, si), n in zip(radio, base)}
    for ri, r in enumerate(rounds):
        r["plan"] = [[(d, 1 + pieces.get((ri, ti, si), 0)) for si, (d, _) in enumerate(st)]
                     for ti, st in enumerate(r["tasks"])]


def run_raw(rounds: list[dict]) -> tuple[float, int, int]:
    """Replay the pattern in plain SimPy: (wall s, SimPy events, processes)."""
    env = simpy.Environment()
    n_procs = [1]

    def task(stages):
        for d, n in stages:
            step = d / n
            for _ in range(n):
                yield env.timeout(step)

    def driver():
        for r in rounds:
            if r["t_start"] - env.now > 1e-9:  # (summed pieces differ from d in the last bits)
                yield env.timeout(r["t_start"] - env.now)
            procs = [env.process(task(st)) for st in r["plan"]]
            n_procs[0] += len(procs)
            if procs:
                if r["deadline"] is not None:
                    yield env.any_of([env.all_of(procs), env.timeout(r["deadline"])])
                yield env.all_of(procs)
            if r["t_end"] - env.now > 1e-9:
                yield env.timeout(r["t_end"] - env.now)  # the server's part of the round

    env.process(driver())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0, next(env._eid), n_procs[0]


def table_events(n_clients: int, k: int, rounds: int, repeats: int) -> None:
    print(f"1. events per second: fedwave kernel vs raw SimPy, same event pattern, same process")
    print(f"   scenario: {n_clients} clients, {k} per round, {rounds} rounds, 21 cells, "
          f"50 ms fading blocks, trace recorded; best of {repeats}")
    best, chan_s = math.inf, math.nan
    for _ in range(repeats):
        wall, ev, sim = run_sim(n_clients, k, rounds)
        if wall < best:
            best, chan_s = wall, sim.channel_wall_s
    net = sim.network
    pattern = event_pattern(sim)
    n_tasks = sum(len(r["tasks"]) for r in pattern)
    _split(pattern, 0)
    _, base_ev, _ = run_raw(pattern)  # the pattern's own events, before cutting stages
    _split(pattern, ev - base_ev)
    raw_best = math.inf
    for _ in range(repeats):
        rwall, rev, n_procs = run_raw(pattern)
        raw_best = min(raw_best, rwall)
    off_best = math.inf
    for _ in range(repeats):
        off_best = min(off_best, run_sim(n_clients, k, rounds, trace=False)[0])
    n_stage = sum(len(st) for r in pattern for st in r["tasks"])
    other = ev - n_stage - net.n_wakeups
    sim_rate, raw_rate = ev / best, rev / raw_best
    print(f"   fedwave  : {ev:7d} events in {best:7.3f} s = {sim_rate:10,.0f} events/s  "
          f"({n_procs} processes: 1 driver + {n_tasks} client tasks)")
    print(f"              events: {n_stage} task stages, {net.n_wakeups} transfer change points "
          f"({net.n_plans} plans covering {net.n_plan_blocks} flow-blocks), {other} process "
          f"starts/ends, conditions and transfer completions")
    print(f"              ({len(sim.tracer)} trace rows; {net.n_flow_blocks} client-blocks of "
          f"transfers, {sim.link.n_evaluated} evaluated; with the trace off: "
          f"{ev / off_best:10,.0f} events/s)")
    print(f"   raw SimPy: {rev:7d} events in {raw_best:7.3f} s = {raw_rate:10,.0f} events/s  "
          f"({n_procs} processes: the same driver and task processes, timeouts only)")
    print(f"   ratio fedwave / raw = {sim_rate / raw_rate:.3f}   "
          f"(fedwave: {1e6 * best / ev:.1f} µs per event, raw SimPy: {1e6 * raw_best / rev:.1f})")
    rest = best - chan_s
    print(f"   of fedwave's time: the channel (path loss, shadowing, LOS, fading) {chan_s:.3f} s "
          f"= {100 * chan_s / best:.0f} %; the rest {1e6 * rest / ev:.1f} µs per event")


#: wall time per client-round before the history-free channel and the planned transfers
#: (issue 18, idle machine), ms
BEFORE_MS = {100: 1.57, 1000: 1.19, 10000: 2.01}
LINKS = 21  # 7 sites × 3 sectors


def channel_ceiling_us(repeats: int = 3) -> float:
    """µs the hand-tuned vectorised channel pipeline of bench/channel_throughput.py needs
    for one client's 21 links in one block (its best link-sample rate at 1,000 and 10,000
    clients, this run)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import channel_throughput as ct

    rate = 0.0
    for n in (1000, 10_000):
        blocks = max(5, min(200, int(2e7 / (19 * n))))
        rate = max(rate, max(ct.run_reference(n, blocks) for _ in range(repeats)))
    return 1e6 * LINKS / rate


def _kernels_line() -> str:
    """Which kernels the runs used: numba's compilations or the numpy twins."""
    from sim import kernels

    if kernels.load():
        import numba

        return f"compiled (numba {numba.__version__})"
    return "numpy twins (numba missing or FEDWAVE_JIT=0)"


def table_scaling(sizes: list[int], ceiling_us: float) -> float:
    print("\n2. wall time per simulated client-round (21 cells, K = 10 % of clients, 3 rounds)")
    print(f"   vectorised channel ceiling (bench/channel_throughput.py reference, this run): "
          f"{ceiling_us:.2f} µs per client-block of {LINKS} links")
    print(f"   the transfer engine's arithmetic (sim/kernels.py): {_kernels_line()}")
    print(f"   {'clients':>8} {'client-rounds':>13} {'events':>8} {'wall (s)':>9} "
          f"{'ms/client-round':>16} {'before (ms)':>11} {'speed-up':>8} {'client-blocks':>14} "
          f"{'per client-round':>17} {'evaluated':>10} {'µs/client-block':>16} {'/ ceiling':>10} "
          f"{'sim time (s)':>13}")
    ratio = math.nan
    for n in sizes:
        wall, ev, sim = run_sim(n, max(1, n // 10), rounds=3)
        tasks = sum(1 for r in sim.tracer.rows if r[1] == "selected")
        per = 1e3 * wall / tasks
        cb = sim.network.n_flow_blocks
        cost = 1e6 * wall / cb
        ratio = cost / ceiling_us
        before = BEFORE_MS.get(n, math.nan)
        print(f"   {n:8d} {tasks:13d} {ev:8d} {wall:9.3f} {per:16.3f} {before:11.2f} "
              f"{before / per:7.1f}x {cb:14d} {cb / tasks:17.1f} {sim.link.n_evaluated:10d} "
              f"{cost:16.1f} {ratio:9.1f}x {sim.env.now:13.1f}")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 10,000-client point")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (table 1)")
    args = ap.parse_args()
    import pandas  # noqa: F401  (imported by every run's outputs; not counted in any time)

    run_sim(100, 10)  # warm-up: first calls, imports, caches (not counted)
    table_events(200, 40, 20, args.repeats)
    ceiling = channel_ceiling_us()
    ratio = table_scaling([100, 1000] if args.quick else [100, 1000, 10000], ceiling)
    print(f"\nkernel cost per client-block / vectorised channel ceiling: {ratio:.1f}×")


if __name__ == "__main__":
    main()

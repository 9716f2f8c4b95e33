"""The radio-backed link and the kernel's fast paths: scalar and vector queries agree, the
link evaluates only the clients that matter, tracing changes nothing, memory stays bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from sim.links import DOWN, UP
from sim.network import Network
from sim.scenario import parse_scenario
from sim.simulation import Simulation


def _scenario(n_clients=30, k=8, rounds=3, mobility=None, mac="equal_share", seed=3):
    mobility = mobility or {"kind": "random_waypoint", "speed_mps": [0.5, 1.5]}
    return parse_scenario({
        "name": "radio", "seed": seed,
        "network": {"layout": {"kind": "hex_grid", "n_rings": 1, "isd_m": 500, "n_sectors": 3},
                    "pathloss": {"kind": "uma"}, "fading": {"kind": "rayleigh", "block_s": 0.05},
                    "uplink_bandwidth_hz": 20e6, "downlink_bandwidth_hz": 40e6,
                    "mac": {"kind": mac},
                    "rate": {"kind": "shannon", "gap_db": 3, "max_se_bps_hz": 6}},
        "clients": {"n_clients": n_clients, "drop": {"kind": "in_cells", "min_distance_m": 35},
                    "groups": [{"name": "g", "mobility": mobility}]},
        "fl": {"algorithm": "surrogate", "rounds": rounds, "clients_per_round": k,
               "selection": "random", "deadline_s": 60.0,
               "options": {"upload_bits": 2_000_000, "download_bits": 2_000_000,
                           "flops_per_round": 4e10}},
    })


def test_scalar_and_vector_link_queries_agree():
    sim = Simulation(_scenario())
    link = sim.link
    ids = np.arange(30)
    tx = np.zeros(30, bool)
    tx[::4] = True
    link.refresh(0.12, ids, tx, np.ones(link.n_cells, bool))
    for d in (UP, DOWN):
        full = link.full_rate_bps(ids, d, 20e6)
        part = link.rate_bps(ids, d, np.full(30, 5e6), np.full(30, 20e6))
        db = link.sinr_db(ids, d)
        for c in ids.tolist():
            assert link.rate_of(c, d, 20e6, 20e6) == pytest.approx(full[c], rel=1e-13)
            assert link.rate_of(c, d, 5e6, 20e6) == pytest.approx(part[c], rel=1e-13)
            assert link.sinr_db_of(c, d) == pytest.approx(db[c], rel=1e-13)
        assert link.rates_of(ids.tolist(), d, None, 20e6) == [link.rate_of(c, d, 20e6, 20e6) for c in ids]
        assert link.rates_of([3, 4], d, [0.25, 0.5], 20e6) == [link.rate_of(3, d, 5e6, 20e6),
                                                              link.rate_of(4, d, 10e6, 20e6)]
        if d == UP:  # the UE's power concentrates on its sub-band
            assert (part >= full / 4).all() and (part > full / 4).any()
        else:  # the BS's power is spread over the band
            assert part == pytest.approx(full / 4, rel=1e-13)


def test_link_evaluates_only_what_is_asked_and_held():
    sim = Simulation(_scenario())
    net, link = sim.network, sim.link
    env = sim.env
    evaluated = []
    orig = link._evaluate

    def spy(k, need, tx):
        evaluated.append((k, need.tolist()))
        return orig(k, need, tx)

    link._evaluate = spy
    net.hold(7)
    net.hold(7)
    net.refresh([3])  # block 0: the asked client and the held one, one batch
    net.refresh([3, 7])  # nothing new in block 0
    env.run(until=0.07)  # block 1
    net.refresh([5])
    net.release(7)
    assert evaluated == [(0, [3, 7]), (1, [5, 7])]
    net.release(7)
    env.run(until=0.12)
    net.refresh([5])
    assert evaluated[-1] == (2, [5])
    assert link.n_evaluated == 5


def test_block_boundaries_replace_stale_wakeups():
    """One 100 Mbit download over ~5 s: the link changes every 50 ms block; completion is
    planned by the boundaries, with one wake-up in the last block only."""
    sim = Simulation(_scenario())
    net, env = sim.network, sim.env
    out = {}

    def go():
        flow = net.start(4, DOWN, 100_000_000)
        yield flow.done
        out["flow"] = flow

    env.process(go())
    env.run()
    flow = out["flow"]
    n_blocks = math.floor(flow.t_end / 0.05 + 1e-9)
    assert flow.ok and flow.sent == 100_000_000
    assert net.n_block_events == n_blocks + 1 and net.n_wakeups <= 2
    net.check_accounting()


@pytest.mark.parametrize("mac", ["equal_share", "proportional_fair"])
def test_results_identical_with_and_without_the_trace(mac):
    a = Simulation(_scenario(mac=mac), trace=True).run()
    b = Simulation(_scenario(mac=mac), trace=False).run()
    assert len(a.tracer) > 0 and len(b.tracer) == 0
    assert a.rounds.equals(b.rounds)
    ta, tb = dict(a.summary["totals"]), dict(b.summary["totals"])
    ta.pop("events"), tb.pop("events")
    assert ta == tb
    assert a.summary["simulated_time_s"] == b.summary["simulated_time_s"]


def test_same_seed_same_events_different_seed_different():
    runs = [Simulation(_scenario(seed=s)).run() for s in (3, 3, 4)]
    e = [r.tracer.to_frame() for r in runs]
    assert e[0].equals(e[1]) and runs[0].rounds.equals(runs[1].rounds)
    assert not e[0].equals(e[2])


def test_long_runs_forget_trajectory_history_and_plots_replay_it():
    gm = {"kind": "gauss_markov", "mean_speed_mps": 10.0, "alpha": 0.8, "step_s": 0.1}
    sim = Simulation(_scenario(rounds=12, mobility=gm))
    mob = sim.radio._mobilities[0][1]
    res = sim.run()
    # Gauss–Markov makes a waypoint every 0.1 s; the run dropped the past at round starts
    last_round = res.rounds.iloc[-1]
    kept = mob.n_waypoints
    assert kept < (sim.env.now - last_round.t_start_s) / 0.1 + 64
    traj = res.trajectories
    fresh = Simulation(_scenario(rounds=12, mobility=gm)).radio
    want = np.stack([fresh.positions_m(float(t))[traj["clients"]] for t in traj["t_s"]])
    assert np.array_equal(traj["xy_m"], want)


def test_equal_share_fast_path_equals_the_generic_rates():
    sim = Simulation(_scenario())
    net = sim.network
    net.refresh(np.arange(30))
    cells = sim.link.serving.tolist()
    crowded = max(set(cells), key=cells.count)
    members = [c for c in range(30) if cells[c] == crowded]
    assert len(members) >= 3
    for c in members:
        net.start(c, UP, 50_000_000)
    pool = net._pools[(crowded, UP)]
    flows = list(pool.flows.values())
    rate, full, tf = net._rates(pool, [f.client for f in flows], [f.fid for f in flows])
    assert [f.rate for f in flows] == rate and [f.full_rate for f in flows] == full
    assert len(set(rate)) > 1


def test_twin_shares_match_the_policies():
    from sim.mac import make_mac
    from sim.network import _shares

    rng = np.random.default_rng(0)
    for kind in ("equal_share", "round_robin", "max_rate", "proportional_fair"):
        mac = make_mac(kind)
        for n in (1, 2, 5):
            full = rng.uniform(1e5, 1e7, n)
            full[rng.random(n) < 0.3] = 0.0
            bw, tf = mac.shares(list(range(n)), full)
            assert _shares(mac, list(range(n)), full.tolist()) == (bw.tolist(), tf.tolist())


def test_network_with_radio_accounts_exactly():
    sim = Simulation(_scenario(n_clients=40, k=20, rounds=2))
    res = sim.run()
    tot = res.summary["totals"]
    assert tot["bits_offered"] == pytest.approx(tot["bits_over_the_air"] + tot["bits_lost"], rel=1e-12)
    assert isinstance(sim.network, Network) and isinstance(sim.env, simpy.Environment)

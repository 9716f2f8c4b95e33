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


def test_link_evaluates_only_what_is_asked_and_transfers_by_whole_chunks():
    """Asked-about clients are evaluated for their block alone; a transfer's client gets
    its whole chunk of 16 blocks in one call, with every other transferring client that
    lacks it; nothing is evaluated twice."""
    sim = Simulation(_scenario())
    net, link = sim.network, sim.link
    env = sim.env
    calls = []
    orig = link.channel.gains_over

    def spy(blocks, xy, ids):
        calls.append((np.asarray(blocks).tolist(), np.asarray(ids).tolist()))
        return orig(blocks, xy, ids)

    link.channel.gains_over = spy
    net.refresh([3])  # block 0: client 3 alone, this block only
    net.refresh([3, 7])  # client 7 only
    assert calls == [([0], [3]), ([0], [7])]
    net.start(7, DOWN, 5_000_000_000)  # a transfer: client 7's chunk 0
    assert calls[-1] == (list(range(16)), [7])
    net.start(3, DOWN, 5_000_000_000)
    assert calls[-1] == (list(range(16)), [3])
    n = len(calls)
    env.run(until=0.07)  # block 1: in the chunk already
    net.refresh([3, 7])
    assert len(calls) == n
    env.run(until=0.8 + 1e-9)  # chunk 1 (from 0.8 s) for both transfers in one call
    assert calls[n:] and calls[n] == (list(range(16, 32)), [3, 7])
    assert link.n_evaluated == 2 + 16 * 4


def test_transfers_are_planned_chunk_by_chunk_and_complete_exactly():
    """One 1.6 Gbit download over ~7 s (about 140 blocks of 50 ms) with nobody else on the
    air: the pool is planned a chunk (16 blocks) at a time, so it wakes at chunk ends and at
    the completion only, not per block; the completion time equals a block-by-block oracle
    built from the channel's public API."""
    sim = Simulation(_scenario())
    net, env, link = sim.network, sim.env, sim.link
    out = {}

    def go():
        flow = net.start(4, DOWN, 1_600_000_000)
        yield flow.done
        out["flow"] = flow

    env.process(go())
    env.run()
    flow = out["flow"]
    assert flow.ok and flow.sent == 1_600_000_000 and flow.cell == link.serving[4]
    n_blocks = math.ceil(flow.t_end / 0.05)
    assert n_blocks > 60
    assert net.n_wakeups <= n_blocks // 16 + 3 and net.n_plans <= n_blocks // 16 + 3
    assert net.n_flow_blocks == n_blocks
    assert not [r for r in sim.tracer.rows if r[1] == "handover"]
    # the oracle: per block, the downlink rate alone on 40 MHz (no interferer), bits summed
    fresh = Simulation(_scenario())
    ch, radio = fresh.radio.link.channel, fresh.radio
    cell = int(flow.cell)
    bits, t = 0.0, 0.0
    for k in range(n_blocks + 1):
        t0 = ch.block_start_s(k)
        g = ch.sample([k], radio.positions_at([t0], np.array([4])), np.array([4])).gain_linear[0, cell, 0]
        sinr = 10 ** (46.0 / 10) * g / 10 ** (link.noise_down_dbm / 10)  # bs_tx_power_dbm default
        rate = 40e6 * min(math.log2(1 + sinr / 10 ** 0.3), 6.0)
        t1 = ch.block_start_s(k + 1)
        if bits + rate * (t1 - max(t0, 0.0)) >= 1_600_000_000:
            t = max(t0, 0.0) + (1_600_000_000 - bits) / rate
            break
        bits += rate * (t1 - max(t0, 0.0))
    assert flow.t_end == pytest.approx(t, rel=1e-12)
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


def test_planned_rates_equal_the_per_event_path():
    """A crowded cell: each flow's planned rate in the current block equals what the scalar
    per-event path (link.rates_of with the MAC's shares) gives for the same block."""
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
    sim.link.refresh(sim.env.now, [f.client for f in flows], net._tx_up, net._tx_down)
    full = sim.link.rates_of([f.client for f in flows], UP, None, pool.bandwidth_hz)
    assert [f.full_rate for f in flows] == pytest.approx(full, rel=1e-12)
    n = len(flows)
    want = sim.link.rates_of([f.client for f in flows], UP, [1.0 / n] * n, pool.bandwidth_hz)
    assert [f.rate for f in flows] == pytest.approx(want, rel=1e-12)
    assert len(set(f.rate for f in flows)) > 1


def test_block_shares_match_the_policies_block_by_block():
    from sim.mac import make_mac
    from sim.network import _block_shares

    rng = np.random.default_rng(1)
    for kind in ("equal_share", "round_robin", "max_rate"):
        mac = make_mac(kind)
        full = rng.uniform(1e5, 1e7, (5, 9))
        full[rng.random(full.shape) < 0.3] = 0.0
        full[:, 2] = 0.0  # everybody in outage in one block
        bw, tf = _block_shares(mac, list(range(5)), full)
        for h in range(9):
            b, t = mac.shares(list(range(5)), full[:, h])
            assert np.array_equal(bw[:, h], b) and np.array_equal(tf[:, h], t), (kind, h)


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


def test_a_handover_during_a_transfer_happens_at_the_block_where_the_rule_fires():
    """The plan looks the handover rule ahead over the transfer's blocks: the pool wakes at
    the start of the block where a handover fires, the flow moves there, and ends in its new
    cell (or a later one); a rerun has the same handovers at the same times."""
    from pathlib import Path

    from sim.scenario import load_scenario

    scn = load_scenario(Path(__file__).resolve().parents[2] / "scenarios" / "hex7_uma_mixed.yaml",
                        ["fl.rounds=3"])
    sim = Simulation(scn)
    ev = sim.run().tracer.to_frame()
    ch = sim.link.channel
    starts = ev[ev["event"] == "send_start"]
    ends = ev[ev["event"].isin(["send_end", "send_failed"])]
    during = 0
    for _, h in ev[ev["event"] == "handover"].iterrows():
        mine_s, mine_e = starts[starts["client"] == h["client"]], ends[ends["client"] == h["client"]]
        for _, st in mine_s.iterrows():
            after = mine_e[mine_e["t_s"] >= st["t_s"]]
            end = after.iloc[0] if len(after) else None
            if end is not None and st["t_s"] < h["t_s"] < end["t_s"]:
                during += 1
                assert h["t_s"] == ch.block_start_s(ch.block_index(h["t_s"]))
                assert end["cell"] == h["cell"] or (
                    ev[(ev["event"] == "handover") & (ev["client"] == h["client"])
                       & (ev["t_s"] > h["t_s"]) & (ev["t_s"] < end["t_s"])].shape[0] > 0)
    assert during >= 2
    again = Simulation(scn).run().tracer.to_frame()
    assert again[again["event"] == "handover"].equals(ev[ev["event"] == "handover"])

"""split_lora in the kernel, on exact TableLink links: every step's airtime is the link's,
a fade mid-round stretches exactly the steps it overlaps, a deadline keeps only completed
steps, the server's service queues or overlaps clients, and runs are reproducible."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from fl.core.algorithm import AlgorithmContext
from fl.lm.models import lora_state
from fl.core.runner import drive
from fl.algorithms.split_lora.algorithm import SplitLoRA, SplitLoRAConfig, StepRecord
from sim.links import TableLink
from sim.scenario import Scenario
from sim.simulation import Simulation

DEVICE_FLOPS = 1e9
SERVER_FLOPS = 1e10
R1, R2 = 1e6, 0.25e6  # bit/s before and after the fade

BASE = {
    "name": "split",
    "seed": 1,
    "network": {"layout": {"kind": "single_cell"}, "uplink_bandwidth_hz": 1e6, "downlink_bandwidth_hz": 1e6},
    "clients": {"n_clients": 1, "devices": [{"name": "d", "flops_per_s": DEVICE_FLOPS, "power_w": 1.0, "rx_power_w": 0.0}]},
    "backhaul": {"site_edge_latency_s": 0.0, "edge_cloud_latency_s": 0.0,
                 "site_edge_capacity_bps": math.inf, "edge_cloud_capacity_bps": math.inf},
    "server": {"flops_per_s": SERVER_FLOPS, "service": "parallel"},
    "fl": {"rounds": 1, "clients_per_round": 1, "selection": "all", "min_updates": 0},
}
OPTIONS = dict(
    model={"kind": "tiny", "n_layers": 2, "hidden": 32, "intermediate": 64},
    lora={"rank": 2, "alpha": 4}, data={"max_per_class": 12, "n_test": 6, "max_len": 80},
    partition={"kind": "iid"}, cut_layer=1, batch_size=2, lr=1e-2,
    activation_dtype="fp32", upload_dtype="fp32", download_dtype="fp32",
)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _algo(n_clients=1, seed=0, **over) -> SplitLoRA:
    return SplitLoRA(SplitLoRAConfig(**{**OPTIONS, **over}), AlgorithmContext(n_clients=n_clients, seed=seed))


def _run(algo, link, **sections):
    scn = Scenario.model_validate(_merge(BASE, sections))
    sim = Simulation(scn, algorithm=algo, link=link)
    res = sim.run()
    return res, res.tracer.to_frame()


def _xfer_end(t0: float, bits: int, t_fade: float) -> float:
    """Hand computation: end of a transfer of ``bits`` started at ``t0`` on a link of rate R1
    before ``t_fade`` and R2 after."""
    if t0 >= t_fade:
        return t0 + bits / R2
    if t0 + bits / R1 <= t_fade:
        return t0 + bits / R1
    return t_fade + (bits - (t_fade - t0) * R1) / R2


def _timeline(algo: SplitLoRA, t_fade: float = math.inf) -> list[tuple[str, float]]:
    """(label, end time) of every event of client 0's round 0, by hand."""
    out, t = [], _xfer_end(0.0, algo.download_bits, t_fade)
    out.append(("model", t))
    for s in algo.round_plan(0, 0):
        t += s["client_fwd_flops"] / DEVICE_FLOPS
        out.append(("client_fwd", t))
        t = _xfer_end(t, s["bits_up"], t_fade)
        out.append(("activations", t))
        t += s["server_flops"] / SERVER_FLOPS
        out.append(("server_step", t))
        t = _xfer_end(t, s["bits_down"], t_fade)
        out.append(("gradients", t))
        t += s["client_bwd_flops"] / DEVICE_FLOPS
        out.append(("client_bwd", t))
    out.append(("update", _xfer_end(t, algo.upload_bits, t_fade)))
    return out


def _observed(events) -> list[tuple[str, float]]:
    ends = events[events["event"].isin(["send_end", "compute_end", "server_compute_end"])]
    return [(d, float(t)) for d, t in zip(ends["detail"], ends["t_s"])]


def test_step_bits_are_the_formula():
    """B=2 examples, hidden H=32, fp32: uplink B·T·H·32 + B·T (mask) + B·A·17 (answer ids of
    ceil(log2 49152)=16 bits + 1 mask bit); downlink B·T·H·32."""
    algo = _algo(local_steps=2)
    for s in algo.round_plan(0, 0):
        B, T, A = s["B"], s["T"], s["A"]
        assert s["bits_up"] == B * T * 32 * 32 + B * T + B * A * 17
        assert s["bits_down"] == B * T * 32 * 32


def test_two_rate_link_gives_the_hand_computed_step_times():
    """The link drops from 1 to 0.25 Mbit/s halfway through step 1's activation upload: the
    steps before keep their 1 Mbit/s airtime, step 1's upload is stretched exactly, the
    later steps run at 0.25 Mbit/s."""
    algo = _algo(local_steps=3)
    flat = _timeline(algo)
    up1_start = flat[1 + 5][1]  # step 1: its client_fwd end is the upload's start
    up1_end = flat[1 + 5 + 1][1]
    t_fade = 0.5 * (up1_start + up1_end)
    expected = _timeline(algo, t_fade)
    res, ev = _run(algo, TableLink([[R1], [R2]], block_s=t_fade))
    observed = _observed(ev)
    assert [label for label, _ in observed] == [label for label, _ in expected]
    for (label, t_obs), (_, t_exp) in zip(observed, expected):
        assert t_obs == pytest.approx(t_exp, rel=1e-9, abs=1e-12), label
    # by hand for the faded upload: half its bits at R1, the rest at R2
    bits = algo.round_plan(0, 0)[1]["bits_up"]
    half = 0.5 * (up1_end - up1_start)
    assert expected[7][1] - t_fade == pytest.approx((bits - half * R1) / R2, rel=1e-12)
    assert expected[7][1] - up1_start == pytest.approx(half + (bits - half * R1) / R2, rel=1e-12)
    for (label, t_obs), (_, t_flat) in zip(observed[:7], flat[:7]):  # before the fade: unchanged
        assert t_obs == pytest.approx(t_flat, rel=1e-9), label
    assert res.rounds["steps_completed"].iloc[0] == 3 and res.rounds["n_completed"].iloc[0] == 1


def test_deadline_mid_round_keeps_only_completed_steps():
    """The deadline falls while step 2's gradients travel: 2 steps completed, 3 server steps
    applied. The global client adapter is the adapter after 2 steps (= a 2-step round), the
    server adapter includes the 3rd server update (= the server after a 3-step round)."""
    algo = _algo(local_steps=4)
    init = lora_state(algo.model)
    flat = _timeline(algo)
    grads2_start, grads2_end = flat[1 + 2 * 5 + 2][1], flat[1 + 2 * 5 + 3][1]
    deadline = 0.5 * (grads2_start + grads2_end)
    res, ev = _run(algo, TableLink([R1]), fl={"deadline_s": deadline})

    row = res.rounds.iloc[0]
    assert (row["n_completed"], row["n_failed"], row["n_partial"]) == (0, 1, 1)
    assert (row["steps_planned"], row["steps_completed"], row["server_steps"]) == (4, 2, 3)
    assert row["partial_adapter_bits"] == algo.upload_bits
    assert algo.step_log == [StepRecord(0, 0, "partial", "deadline", 4, 2, 3, float(algo.n_samples(0)))]
    failed = ev[ev["event"] == "client_failed"]
    assert list(failed["detail"]) == ["deadline:gradients"] and float(failed["t_s"].iloc[0]) == pytest.approx(deadline)

    two, _ = drive(_algo(local_steps=2).client_round(0, 0))  # the client after 2 steps
    three = _algo(local_steps=3)
    drive(three.client_round(0, 0))  # the server after 3 steps (the 3rd used the 2-step client)
    for n in algo.split.client_names:
        assert torch.equal(algo.global_client_state[n], two.state[n])
    got, ref = lora_state(algo.model), lora_state(three.model)
    for n in algo.split.server_names:
        assert torch.equal(got[n], ref[n])
    assert any(not torch.equal(got[n], init[n]) for n in algo.split.server_names)


@pytest.mark.parametrize("service", ["sequential", "parallel"])
def test_server_service_queues_or_overlaps_clients(service):
    """Two clients on identical links reach the server at the same time: sequential service
    runs their server steps back to back, parallel at once, sharing the server's FLOP/s."""
    algo = _algo(n_clients=2, local_steps=1)
    res, ev = _run(algo, TableLink([R1, R1]), clients={"n_clients": 2}, fl={"clients_per_round": 2},
                   server={"service": service, "flops_per_s": 1e9})
    def times(event, detail=None):
        rows = ev[(ev["event"] == event) & ((ev["detail"] == detail) if detail else True)]
        return rows.sort_values("client")["t_s"].tolist()

    arrive, start, end = times("send_end", "activations"), times("server_compute_start"), times("server_compute_end")
    flops = [algo.round_plan(0, c)[0]["server_flops"] for c in (0, 1)]
    first, second = sorted((0, 1), key=lambda c: arrive[c])
    assert start[first] == pytest.approx(arrive[first])
    if service == "sequential":  # the second waits for the first, each at the full 1 GFLOP/s
        for c in (0, 1):
            assert end[c] - start[c] == pytest.approx(flops[c] / 1e9)
        assert arrive[second] < end[first] and start[second] == pytest.approx(end[first])
    else:  # served at once, sharing the 1 GFLOP/s (processor sharing) while both are in service
        assert start[second] == pytest.approx(arrive[second]) and start[second] < end[first]
        rem = {first: flops[first] - (start[second] - start[first]) * 1e9, second: flops[second]}
        a, b = sorted(rem, key=rem.get)  # a finishes first: both at 0.5 GFLOP/s until then
        t_a = start[second] + 2 * rem[a] / 1e9
        assert end[a] == pytest.approx(t_a)
        assert end[b] == pytest.approx(t_a + (rem[b] - rem[a]) / 1e9)
    assert res.rounds["server_steps"].iloc[0] == 2


def test_same_seed_identical_events_and_adapters():
    def run(seed):
        algo = _algo(n_clients=2, seed=seed, local_steps=1, lora={"rank": 2, "alpha": 4, "dropout": 0.1})
        res, ev = _run(algo, TableLink([[R1, 2 * R1], [R2, R1]], block_s=0.3),
                       clients={"n_clients": 2}, fl={"clients_per_round": 2, "rounds": 2, "eval_every": 2})
        return res.rounds, ev, lora_state(algo.model), algo.global_client_state

    a, b, c = run(0), run(0), run(1)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert all(torch.equal(a[2][n], b[2][n]) for n in a[2])
    assert all(torch.equal(a[3][n], b[3][n]) for n in a[3])
    assert not a[0]["train_loss"].equals(c[0]["train_loss"])

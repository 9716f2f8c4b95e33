"""kd_topk driven by the simulator over exact links (sim.links.TableLink, as tests/sim/simkit.py):
a fade that starts during the round, before the upload, gives a smaller k in the trace."""

import math

import pytest

from sim.links import UP, TableLink
from sim.scenario import Scenario
from sim.simulation import Simulation

from test_kd_topk import _algo

BUDGET_S = 0.1
BLOCK_S = 0.05


def _scenario(capacity_budget_s=BUDGET_S, **fl):
    return Scenario.model_validate({
        "name": "kd-fade", "seed": 0,
        "network": {"layout": {"kind": "single_cell"}, "uplink_bandwidth_hz": 1e6, "downlink_bandwidth_hz": 1e6},
        "clients": {"n_clients": 2, "devices": [{"name": "d", "flops_per_s": 1e9, "power_w": 1.0, "rx_power_w": 0.0}]},
        "backhaul": {"site_edge_latency_s": 0.0, "edge_cloud_latency_s": 0.0},
        "fl": {"rounds": 1, "clients_per_round": 2, "selection": "all", "capacity_budget_s": capacity_budget_s, **fl},
    })


def test_a_fade_during_the_round_gives_a_smaller_k_in_the_trace():
    """Each client alone in its cell at 1 Mbit/s. From 50 ms on — after the teacher's
    downlink (~10 kbit, ~10 ms), before the upload (local training takes ~1 s at 1 GFLOP/s) —
    client 1 fades to 10 kbit/s. Its sizer sees 10 kbit/s × 0.1 s = 1 kbit instead of 100 kbit."""
    algo = _algo(n_clients=2)
    link = TableLink([[1e6, 1e6], [1e6, 1e4]], cells=[0, 1], block_s=BLOCK_S)
    sim = Simulation(_scenario(), algorithm=algo, link=link)
    result = sim.run()
    ev = result.tracer.to_frame()
    up = ev[(ev.event == "send_start") & (ev.direction == UP)].set_index("client")
    assert (up.t_s > BLOCK_S).all()  # the uploads start inside the fade
    assert up.loc[0, "capacity_bits"] == pytest.approx(1e6 * BUDGET_S)
    assert up.loc[1, "capacity_bits"] == pytest.approx(1e4 * BUDGET_S)
    assert up.loc[1, "snr_db"] < up.loc[0, "snr_db"]
    k0, k1 = int(up.loc[0, "k"]), int(up.loc[1, "k"])
    assert 2 <= k1 < k0 <= 512
    row = result.rounds.iloc[0]
    assert row.n_completed == 2 and row.k_min == k1 and row.k_max == k0 and not math.isnan(row.accuracy)
    ends = ev[(ev.event == "send_end") & (ev.direction == UP)].set_index("client")
    assert list(ends.bits.loc[[0, 1]]) == list(up.bits.loc[[0, 1]])  # what was sized is what travelled
    assert "server_compute_end" in set(ev.event)  # the server's distillation is timed


@pytest.mark.parametrize("scenario_budget, airtime, expected", [
    (None, 0.05, 0.05),    # the algorithm's own airtime budget
    (BUDGET_S, 0.05, BUDGET_S),  # the scenario's fl.capacity_budget_s wins
])
def test_the_sizer_budget_is_the_scenarios_else_the_algorithms(scenario_budget, airtime, expected):
    algo = _algo(n_clients=2, airtime_s=airtime)
    link = TableLink([[1e6, 1e6], [1e6, 1e6]], cells=[0, 1], block_s=BLOCK_S)
    scn = _scenario(capacity_budget_s=scenario_budget, deadline_s=30.0)
    up = Simulation(scn, algorithm=algo, link=link).run().tracer.to_frame()
    up = up[(up.event == "send_start") & (up.direction == UP)]
    assert list(up.capacity_bits) == pytest.approx([1e6 * expected] * 2)


def test_kd_topk_defaults_are_a_top_k_message_without_mutual_distillation():
    """The defaults: adaptive k in [8, 256] for 20 ms of airtime, no server logits sent back
    (an untrained server teaches its mistakes)."""
    from fl.algorithms.kd_topk.algorithm import KDTopKConfig

    cfg = KDTopKConfig()
    assert (cfg.k, cfg.k_min, cfg.k_max, cfg.airtime_s, cfg.mutual) == ("adaptive", 8, 256, 0.02, False)

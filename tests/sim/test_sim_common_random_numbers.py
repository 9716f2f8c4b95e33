"""Common random numbers: runs that differ only in uplink bandwidth, in the algorithm or in
the selection policy see the same channel — and, in a single cell, the same SINR — for the
same client at the same time (the channel is a function of seed, client, link, position and
time, whatever each run asked before)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sim.links import DOWN, UP
from sim.scenario import load_scenario
from sim.simulation import Simulation

from simkit import ScriptAlgo

SCN = Path(__file__).resolve().parents[2] / "scenarios"


def _recorded_run(name: str, sets: list[str], algorithm=None) -> dict:
    """Run a scenario and record what its link saw: the gains of every (client, block) the
    channel computed, and the full-band SINR (dB) of every (client, block, direction) the
    transfer engine planned with."""
    sim = Simulation(load_scenario(SCN / name, sets), algorithm=algorithm)
    link = sim.link
    seen = {"gain": {}, "sinr": {}}
    gains_over, plan_blocks = link.channel.gains_over, link.plan_blocks

    def spy_gains(blocks, xy, ids):
        lin, ls = gains_over(blocks, xy, ids)
        for i, c in enumerate(np.asarray(ids).tolist()):
            for j, k in enumerate(np.asarray(blocks).tolist()):
                seen["gain"][(c, k)] = lin[i, :, j].copy()
        return lin, ls

    def spy_plan(t_s, clients, direction, cell, bw, tx_up, tx_down):
        lb = plan_blocks(t_s, clients, direction, cell, bw, tx_up, tx_down)
        k0 = link.block_index(t_s)
        for i, c in enumerate(lb.clients.tolist()):
            for h in range(lb.sinr_db.shape[1]):
                seen["sinr"][(c, k0 + h, direction)] = float(lb.sinr_db[i, h])
        return lb

    link.channel.gains_over, link.plan_blocks = spy_gains, spy_plan
    sim.run()
    return seen


def _common(a: dict, b: dict, at_least: int) -> list:
    keys = sorted(set(a) & set(b))
    assert len(keys) >= at_least, f"only {len(keys)} (client, block) pairs in common"
    return keys


BASE = ["fl.rounds=3"]


def test_bandwidth_changes_the_noise_not_the_channel():
    """20 MHz against 10 MHz of uplink (the issue's example): the same gains bit for bit;
    downlink SINR identical; uplink SINR lower by exactly the 3.01 dB of noise."""
    a = _recorded_run("surrogate_quickstart.yaml", BASE + ["network.uplink_bandwidth_hz=20e6"])
    b = _recorded_run("surrogate_quickstart.yaml", BASE + ["network.uplink_bandwidth_hz=10e6"])
    for key in _common(a["gain"], b["gain"], 200):
        assert np.array_equal(a["gain"][key], b["gain"][key]), key
    noise = 10 * math.log10(2.0)
    ups = [k for k in _common(a["sinr"], b["sinr"], 50) if k[2] == UP]
    downs = [k for k in _common(a["sinr"], b["sinr"], 50) if k[2] == DOWN]
    assert len(ups) >= 20 and len(downs) >= 20
    for key in ups:
        assert a["sinr"][key] - b["sinr"][key] == pytest.approx(-noise, abs=1e-9), key
    for key in downs:
        assert a["sinr"][key] == b["sinr"][key], key


@pytest.mark.parametrize("variant", ["algorithm", "selection"])
def test_algorithm_or_selection_change_nothing_on_the_air(variant):
    """A scripted algorithm (1 Mbit uploads) instead of the surrogate (4 Mbit), or the fair
    selection instead of random: transfers happen at other times, yet wherever both runs
    looked at the same client in the same block they saw the same gains and the same SINR."""
    a = _recorded_run("surrogate_quickstart.yaml", BASE)
    if variant == "algorithm":
        b = _recorded_run("surrogate_quickstart.yaml", BASE,
                          algorithm=ScriptAlgo(10, up_bits=1_000_000, down_bits=2_000_000, flops=4e10))
    else:
        b = _recorded_run("surrogate_quickstart.yaml", BASE + ["fl.selection.kind=fair"])
    for key in _common(a["gain"], b["gain"], 100):
        assert np.array_equal(a["gain"][key], b["gain"][key]), key
    for key in _common(a["sinr"], b["sinr"], 20):
        assert a["sinr"][key] == b["sinr"][key], key


def test_multi_cell_gains_are_common_whatever_the_load():
    """Seven sites, three sectors: interference differs between the runs (other transfers
    at other times), the channel does not."""
    a = _recorded_run("hex7_uma_mixed.yaml", ["fl.rounds=2", "network.uplink_bandwidth_hz=20e6"])
    b = _recorded_run("hex7_uma_mixed.yaml", ["fl.rounds=2", "network.uplink_bandwidth_hz=5e6"])
    for key in _common(a["gain"], b["gain"], 200):
        assert np.array_equal(a["gain"][key], b["gain"][key]), key


def test_the_parameter_caches_change_no_value(monkeypatch):
    """The channel keeps per-client parameters (fading sinusoids, shadowing and LOS fields)
    in rings of 4,096 clients; a run whose rings hold 3 clients — evicted and redrawn in
    nearly every batch, cached and new clients mixed — computes the same gains and plans
    the same SINR as the default run."""
    from channel import _sos

    a = _recorded_run("hex7_uma_mixed.yaml", ["fl.rounds=2"])
    init = _sos.ParamCache.__init__
    monkeypatch.setattr(_sos.ParamCache, "__init__", lambda self, capacity=4096: init(self, 3))
    b = _recorded_run("hex7_uma_mixed.yaml", ["fl.rounds=2"])
    assert a["gain"].keys() == b["gain"].keys() and a["sinr"].keys() == b["sinr"].keys()
    for key in a["gain"]:
        assert np.array_equal(a["gain"][key], b["gain"][key]), key
    assert a["sinr"] == b["sinr"]

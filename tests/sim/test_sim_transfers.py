"""The transfer engine: exact completion times, re-sharing, interruption, handover, outage.

Links are :class:`TableLink` (rates given per block), so every expected time is computed by
hand in the test's docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.links import DOWN, UP, TableLink
from sim.network import Network
from sim.trace import Tracer

from simkit import approx


def _net(link, mac="equal_share", bw=1e6, outage_timeout_s=None):
    env = simpy.Environment()
    tr = Tracer()
    return env, Network(env, link, bw, bw, mac, None, tr, outage_timeout_s), tr


def _upload(env, net, client, t0, bits, out, power_w=0.0):
    yield env.timeout(t0)
    flow = net.start(client, UP, bits, power_w=power_w)
    yield flow.done
    out[client] = (env.now, flow)


def test_constant_link_exact_completion():
    """8 Mbit at 2 Mbit/s, started at t = 0.5 s: done at 0.5 + 4 = 4.5 s."""
    env, net, tr = _net(TableLink([2e6]))
    out = {}
    env.process(_upload(env, net, 0, 0.5, 8_000_000, out, power_w=0.2))
    env.run()
    t, flow = out[0]
    assert t == approx(4.5)
    assert flow.ok and flow.sent == 8_000_000
    assert flow.airtime_s == approx(4.0)
    assert flow.energy_j == approx(0.8)  # 0.2 W × 4 s
    assert tr.events() == [("send_start", 0.5), ("send_end", t)]


def test_two_rate_link_exact_completion():
    """Blocks of 1 s: 1 Mbit/s in block 0, 3 Mbit/s afterwards. 2.5 Mbit from t = 0.25:
    0.75 Mbit by t = 1, then 1.75 Mbit / 3 Mbit/s = 0.58333 s → t = 1.583333 s."""
    env, net, _ = _net(TableLink([[1e6], [3e6]], block_s=1.0))
    out = {}
    env.process(_upload(env, net, 0, 0.25, 2_500_000, out))
    env.run()
    assert out[0][0] == approx(1.0 + 1.75 / 3.0)


def test_second_upload_reshares_bandwidth_exactly():
    """Equal share, each client 1 Mbit/s alone. A: 3 Mbit from 0; B: 1 Mbit from 1 s.
    0–1 s: A alone, 1 Mbit. From 1 s both at 0.5 Mbit/s: B needs 2 s → 3 s; A has 1 Mbit
    left at 3 s, alone again at 1 Mbit/s → 4 s."""
    env, net, tr = _net(TableLink([1e6, 1e6]))
    out = {}
    env.process(_upload(env, net, 0, 0.0, 3_000_000, out))
    env.process(_upload(env, net, 1, 1.0, 1_000_000, out))
    env.run()
    assert out[1][0] == approx(3.0)
    assert out[0][0] == approx(4.0)
    assert tr.events() == [("send_start", 0.0), ("send_start", 1.0), ("send_end", 3.0),
                           ("send_end", 4.0)]
    net.check_accounting()


def test_cancel_accounts_partial_bits():
    """2 Mbit at 1 Mbit/s cancelled at 0.75 s: 0.75 Mbit delivered, 1.25 Mbit lost."""
    env, net, tr = _net(TableLink([1e6]))
    box = {}

    def proc():
        box["flow"] = net.start(0, UP, 2_000_000)
        yield env.timeout(0.75)
        net.cancel(box["flow"], "deadline")

    env.process(proc())
    env.run()
    f = box["flow"]
    assert f.ok is False and f.reason == "deadline"
    assert f.sent == approx(750_000)
    assert net.bits_delivered == approx(750_000) and net.bits_lost == approx(1_250_000)
    assert net.bits_offered == net.bits_delivered + net.bits_lost
    assert tr.rows[-1][1] == "send_failed" and tr.rows[-1][13] == "deadline"


def test_handover_mid_upload_completes_on_new_cell():
    """Client 0 serves from cell 0 in block 0 and cell 1 from block 1 (block 1 s); client 1
    stays in cell 0 uploading too. 0–1 s: cell 0 shared, client 0 gets 0.5 Mbit/s (0.5 Mbit).
    From 1 s it is alone in cell 1 at 1 Mbit/s: 1.5 Mbit left → done at 2.5 s."""
    link = TableLink([1e6, 1e6], cells=[[0, 0], [1, 0]], block_s=1.0)
    env, net, tr = _net(link)
    out = {}
    env.process(_upload(env, net, 0, 0.0, 2_000_000, out))
    env.process(_upload(env, net, 1, 0.0, 10_000_000, out))
    env.run(until=3.0)
    t, flow = out[0]
    assert t == approx(2.5)
    assert flow.ok and flow.cell == 1 and flow.sent == 2_000_000
    ev = [(e, t) for e, t in tr.events()]
    assert ("handover", 1.0) in ev
    ho = [r for r in tr.rows if r[1] == "handover"][0]
    assert ho[3] == 0 and ho[4] == 1 and ho[13] == "from 0"
    end = [r for r in tr.rows if r[1] == "send_end"][0]
    assert end[4] == 1 and end[7] == 2_000_000  # cell 1, bits delivered


def test_outage_pauses_transfer():
    """Blocks of 1 s: 1 Mbit/s, 0 (outage), 1 Mbit/s. 1.5 Mbit from 0: 1 Mbit by 1 s, paused
    1–2 s, 0.5 Mbit more → 2.5 s; outage_start at 1 s and outage_end at 2 s."""
    env, net, tr = _net(TableLink([[1e6], [0.0], [1e6]], block_s=1.0))
    out = {}
    env.process(_upload(env, net, 0, 0.0, 1_500_000, out))
    env.run()
    assert out[0][0] == approx(2.5)
    assert out[0][1].airtime_s == approx(1.5)
    assert tr.events() == [("send_start", 0.0), ("outage_start", 1.0), ("outage_end", 2.0),
                           ("send_end", 2.5)]


def test_outage_timeout_fails_transfer():
    """Outage from 1 s on, timeout 0.5 s: the flow fails at 1.5 s with 1 Mbit delivered."""
    env, net, tr = _net(TableLink([[1e6], [0.0]], block_s=1.0), outage_timeout_s=0.5)
    out = {}
    env.process(_upload(env, net, 0, 0.0, 3_000_000, out))
    env.run()
    t, flow = out[0]
    assert t == approx(1.5) and flow.ok is False and flow.reason == "outage"
    assert flow.sent == approx(1_000_000)


def test_zero_bit_transfer_is_instant():
    env, net, tr = _net(TableLink([1e6]))
    out = {}
    env.process(_upload(env, net, 0, 1.0, 0, out))
    env.run()
    assert out[0][0] == 1.0 and out[0][1].ok
    assert tr.events() == [("send_start", 1.0), ("send_end", 1.0)]


def test_predict_rate_includes_current_share():
    env, net, _ = _net(TableLink([1e6, 1e6, 1e6]))
    assert net.predict_rate(0, UP) == approx(1e6)
    net.start(1, UP, 10_000_000)
    assert net.predict_rate(0, UP) == approx(0.5e6)
    assert net.predict_rate(0, DOWN) == approx(1e6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 5), st.integers(1, 5_000_000),
                          st.one_of(st.none(), st.floats(0, 4))), min_size=1, max_size=8),
       st.sampled_from(["equal_share", "round_robin", "proportional_fair", "max_rate"]))
def test_bits_sent_equal_delivered_plus_lost(specs, mac):
    """Property: whatever starts and cancels, offered = delivered + lost (+ in flight)."""
    rates = [[1e6, 2e6, 0.5e6, 3e6], [2e6, 0.0, 1e6, 1e6], [0.5e6, 1e6, 2e6, 0.0]]
    cells = [[0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0]]
    env, net, _ = _net(TableLink(rates, cells=cells, block_s=0.7), mac=mac)

    def proc(c, t0, bits, cancel_after):
        yield env.timeout(t0)
        f = net.start(c, UP, bits)
        if cancel_after is None:
            yield f.done
        else:
            yield env.any_of([f.done, env.timeout(cancel_after)])
            net.cancel(f, "deadline")

    for c, t0, bits, cancel in specs:
        env.process(proc(c, t0, bits, cancel))
    env.run(until=50.0)
    net.check_accounting()

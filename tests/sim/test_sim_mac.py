"""MAC policies: a contract over the registry, effective rates, PF fairness vs max rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from sim.links import UP, LinkModel, TableLink
from sim.mac import MAC, MAC_POLICIES, EqualShare, MaxRate, ProportionalFair, RoundRobin, make_mac
from sim.network import Network

from simkit import approx


@pytest.mark.parametrize("kind", sorted(MAC_POLICIES))
def test_mac_contract(kind):
    rng = np.random.default_rng(0)
    for n in (1, 2, 5):
        pol = make_mac(kind)
        keys = list(range(n))
        rates = rng.uniform(1e5, 1e7, n)
        rates[0] = 0.0 if n > 1 else rates[0]  # one flow in outage
        bw, tf = pol.shares(keys, rates)
        bw2, tf2 = pol.shares(keys, rates)
        assert np.array_equal(bw, bw2) and np.array_equal(tf, tf2), "shares() must be pure"
        assert bw.shape == tf.shape == (n,)
        assert np.all((0 <= bw) & (bw <= 1)) and np.all((0 <= tf) & (tf <= 1))
        assert (bw * tf).sum() <= 1 + 1e-12
        assert np.all((bw * tf)[rates == 0] == 0), "flows in outage get nothing"
        if rates.max() > 0:
            assert (bw * tf).sum() > 0, "a live flow gets resources"
        pol.observe(keys, rates * tf, 0.1)
        pol.forget(0)


def test_unknown_mac_lists_known():
    with pytest.raises(KeyError, match="Known: equal_share, max_rate, proportional_fair, round_robin"):
        make_mac("fifo")


class ShannonLink(LinkModel):
    """Uplink Shannon rate with the UE's power concentrated on its sub-band:
    rate(b) = b · log2(1 + snr · B / b)."""

    block_s = math.inf

    def __init__(self, snr_linear):
        self.snr = np.asarray(snr_linear, float)
        self.n_clients = len(self.snr)
        self.n_cells = 1
        self.serving = np.zeros(self.n_clients, dtype=np.int64)

    def refresh(self, t_s, clients, transmitting_up=None, transmitting_down=None):
        return []

    def sinr_db(self, clients, direction):
        return 10 * np.log10(self.snr[clients])

    def rate_bps(self, clients, direction, bandwidth_hz, cell_bandwidth_hz):
        b = np.asarray(bandwidth_hz, float)
        return b * np.log2(1 + self.snr[clients] * np.asarray(cell_bandwidth_hz) / b)


def _two_flow_rates(link, mac):
    env = simpy.Environment()
    net = Network(env, link, 1e6, 1e6, mac)
    f0 = net.start(0, UP, 10**12)
    f1 = net.start(1, UP, 10**12)
    return f0.rate, f1.rate


def test_equal_share_and_round_robin_on_a_linear_link():
    """Linear link (rate ∝ bandwidth): both policies give each of two flows r / 2."""
    for mac in ("equal_share", "round_robin"):
        r0, r1 = _two_flow_rates(TableLink([2e6, 1e6]), mac)
        assert (r0, r1) == (approx(1e6), approx(0.5e6))


def test_fdma_beats_tdma_when_power_concentrates():
    """SNR 0 dB, B = 1 MHz, two flows. FDMA: 0.5 MHz · log2(1 + 2) = 792.48 kbit/s each;
    TDMA: ½ · 1 MHz · log2(2) = 500 kbit/s each."""
    link = ShannonLink([1.0, 1.0])
    r_eq = _two_flow_rates(link, "equal_share")
    r_rr = _two_flow_rates(link, "round_robin")
    assert r_eq[0] == approx(0.5e6 * math.log2(3.0))
    assert r_rr[0] == approx(0.5e6)


def _long_run_throughput(mac, rates, block_s):
    env = simpy.Environment()
    net = Network(env, TableLink(rates, block_s=block_s), 1e6, 1e6, mac,
                  {"time_constant_s": 0.5} if mac == "proportional_fair" else None)
    f = [net.start(c, UP, 10**13) for c in (0, 1)]
    env.run(until=20.0)
    net._settle(net._pools[(0, UP)])
    return np.array([x.sent for x in f]) / 20.0


def _jain(x):
    return x.sum() ** 2 / (len(x) * (x ** 2).sum())


def test_pf_fairer_than_max_rate_which_has_more_throughput():
    """Constant rates 4 and 1 Mbit/s: max rate starves the weak flow (throughputs 4, 0);
    PF converges to equal time shares (2, 0.5)."""
    pf = _long_run_throughput("proportional_fair", [4e6, 1e6], math.inf)
    mr = _long_run_throughput("max_rate", [4e6, 1e6], math.inf)
    assert mr == pytest.approx([4e6, 0.0])
    assert pf == pytest.approx([2e6, 0.5e6])
    assert _jain(pf) > _jain(mr)
    assert mr.sum() > pf.sum()


def test_pf_exploits_fading_peaks_over_round_robin():
    """Rates alternate per 0.1 s block between (4, 1) and (1, 4) Mbit/s. RR: 2.5 Mbit/s in
    total; PF gives the peak flow more time (≈ 3.4 Mbit/s) and stays fair."""
    rows = [[4e6, 1e6], [1e6, 4e6]] * 100
    pf = _long_run_throughput("proportional_fair", rows, 0.1)
    rr = _long_run_throughput("round_robin", rows, 0.1)
    assert rr.sum() == pytest.approx(2.5e6)
    assert pf.sum() > 3.0e6
    assert _jain(pf) > 0.99


class _Recording(EqualShare):
    """Equal share that records the hooks the network calls (a stateful policy's view)."""

    name = "recording"

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.calls: list[tuple] = []

    def on_flow_start(self, key, full_rate_bps):
        self.calls.append(("start", key, full_rate_bps))

    def observe(self, keys, achieved_bps, dt_s):
        self.calls.append(("observe", list(keys), [float(r) for r in achieved_bps], dt_s))

    def forget(self, key):
        self.calls.append(("forget", key))


@pytest.fixture
def recording_mac():
    MAC.register(_Recording.name, _Recording.Config, _Recording)
    yield _Recording.name
    MAC._entries.pop(_Recording.name)


def test_hooks_are_flagged_per_class():
    """The network calls on_flow_start / observe only where the policy overrides them."""
    assert not EqualShare.wants_flow_start and not EqualShare.wants_observe
    assert not MaxRate.wants_flow_start and not RoundRobin.wants_observe
    assert ProportionalFair.wants_flow_start and ProportionalFair.wants_observe
    assert _Recording.wants_flow_start and _Recording.wants_observe


def test_network_calls_the_mac_hooks(recording_mac):
    """A new stateful policy needs no edit of the engine: the network calls its hooks —
    on_flow_start with the flow's full-band rate, observe at the block change points with
    the achieved rates, forget when the flow ends."""
    env = simpy.Environment()
    net = Network(env, TableLink([[4e6, 1e6], [1e6, 4e6]] * 3, block_s=0.5), 1e6, 1e6, recording_mac)
    mac = net._pools[(0, UP)].mac
    f0 = net.start(0, UP, 10**6)
    f1 = net.start(1, UP, 10**6)
    env.run()
    assert f0.ok and f1.ok
    kinds = [c[0] for c in mac.calls]
    assert mac.calls[:2] == [("start", f0.fid, 4e6), ("start", f1.fid, 1e6)]
    assert "observe" in kinds
    assert {c[1] for c in mac.calls if c[0] == "forget"} == {f0.fid, f1.fid}
    observed = [c for c in mac.calls if c[0] == "observe"]
    assert all(dt > 0 for *_, dt in observed)
    assert observed[0][1] == [f0.fid, f1.fid] and observed[0][2] == approx([2e6, 0.5e6])

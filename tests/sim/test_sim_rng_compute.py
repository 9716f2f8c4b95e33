"""Named random streams and the device compute model."""

from __future__ import annotations

import numpy as np
import pytest

from sim.compute import ComputeModel, DeviceProfile
from sim.rng import RngStreams


def test_streams_are_stable_by_name_not_order():
    a = RngStreams(42)
    first = a.get("fading").random(3)
    b = RngStreams(42)
    b.get("a_new_consumer").random(10)  # requested first: must not shift "fading"
    assert np.array_equal(b.get("fading").random(3), first)
    assert not np.array_equal(RngStreams(43).get("fading").random(3), first)
    assert not np.array_equal(RngStreams(42).get("shadowing").random(3), first)
    assert a.get("fading") is a.get("fading")


def test_bad_seed():
    with pytest.raises(ValueError, match="non-negative integer. Got -1"):
        RngStreams(-1)


def test_compute_time_and_energy_exact_without_jitter():
    prof = [DeviceProfile("phone", flops_per_s=2e10, power_w=3.0)]
    cm = ComputeModel(prof, 4, np.random.default_rng(0), np.random.default_rng(1))
    assert cm.duration_s(2, 1e11) == pytest.approx(5.0)
    assert cm.energy_j(2, 5.0) == pytest.approx(15.0)
    assert cm.duration_s(0, 0.0) == 0.0


def test_compute_heterogeneity_and_jitter_are_seeded():
    prof = [DeviceProfile("phone", 2e10, 3.0, weight=3, spread_sigma=0.3, jitter_sigma=0.2),
            DeviceProfile("laptop", 1e11, 15.0, weight=1)]

    def draw(seed):
        cm = ComputeModel(prof, 200, np.random.default_rng(seed), np.random.default_rng(seed + 1))
        return cm.profile_of.copy(), cm.flops_per_s_of.copy(), [cm.duration_s(i, 1e11) for i in range(5)]

    p1, f1, d1 = draw(0)
    p2, f2, d2 = draw(0)
    assert np.array_equal(p1, p2) and np.array_equal(f1, f2) and d1 == d2
    assert 0.6 < np.mean(p1 == 0) < 0.9  # weights 3 : 1
    assert np.all(f1[p1 == 1] == 1e11)  # no spread on laptops
    assert np.std(np.log(f1[p1 == 0])) == pytest.approx(0.3, abs=0.06)
    assert draw(5)[2] != d1

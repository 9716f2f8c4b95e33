"""Correlated shadowing: stationary σ, Gudmundson correlation exp(−Δd/d_corr), replay."""

import numpy as np
import pytest

from channel.shadowing import CorrelatedShadowing

N = 40_000  # links; sampling error of a correlation ≈ 1/sqrt(N) = 0.005


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_stationary_std():
    sh = CorrelatedShadowing(6.0, 37.0, 2, N // 2, np.random.default_rng(1))
    s0 = sh.value_db(0.0)
    assert s0.shape == (2, N // 2)
    assert s0.std() == pytest.approx(6.0, rel=0.02) and abs(s0.mean()) < 0.1
    for _ in range(5):
        s = sh.value_db(10.0)
    assert s.std() == pytest.approx(6.0, rel=0.02)


@pytest.mark.parametrize("dd", [5.0, 20.0, 60.0])
def test_correlation_follows_exponential(dd):
    sh = CorrelatedShadowing(4.0, 37.0, 1, N, np.random.default_rng(2))
    s0 = sh.value_db(0.0)
    s1 = sh.value_db(dd)
    assert corr(s0, s1) == pytest.approx(np.exp(-dd / 37.0), abs=0.015)


def test_many_small_steps_equal_one_big_step():
    # a field of position: ten 3 m steps land where one 30 m step does (the same values,
    # not only the same distribution, as the Markov model this replaced gave)
    sh = CorrelatedShadowing(8.0, 50.0, 1, N, np.random.default_rng(3))
    big = CorrelatedShadowing(8.0, 50.0, 1, N, np.random.default_rng(3))
    s0 = sh.value_db(0.0)
    for _ in range(10):
        s = sh.value_db(3.0)
    assert np.allclose(s, big.value_db(30.0), rtol=0, atol=1e-9)
    assert corr(s0, s) == pytest.approx(np.exp(-30.0 / 50.0), abs=0.015)
    assert s.std() == pytest.approx(8.0, rel=0.02)


def test_per_link_std_and_decorrelation():
    std = np.array([[4.0], [6.0]])  # LOS row, NLOS row
    dc = np.array([[37.0], [50.0]])
    sh = CorrelatedShadowing(std, dc, 2, N, np.random.default_rng(4))
    s0 = sh.value_db(0.0)
    s1 = sh.value_db(25.0)
    assert s1[0].std() == pytest.approx(4.0, rel=0.02) and s1[1].std() == pytest.approx(6.0, rel=0.02)
    assert corr(s0[0], s1[0]) == pytest.approx(np.exp(-25 / 37), abs=0.02)
    assert corr(s0[1], s1[1]) == pytest.approx(np.exp(-25 / 50), abs=0.02)


def test_static_clients_keep_their_value_and_moving_ones_change():
    sh = CorrelatedShadowing(6.0, 37.0, 3, 4, np.random.default_rng(5))
    s0 = sh.value_db(0.0)
    s1 = sh.value_db(np.array([0.0, 10.0, 0.0, 1.0]))
    assert np.array_equal(s0[:, [0, 2]], s1[:, [0, 2]])
    assert np.all(s0[:, [1, 3]] != s1[:, [1, 3]])


def test_reset_replays_and_seeds_differ():
    a = CorrelatedShadowing(6.0, 37.0, 2, 5, np.random.default_rng(6))
    first = [a.value_db(d) for d in (0.0, 3.0, 7.0)]
    a.reset()
    again = [a.value_db(d) for d in (0.0, 3.0, 7.0)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    b = CorrelatedShadowing(6.0, 37.0, 2, 5, np.random.default_rng(7))
    assert not np.array_equal(b.value_db(0.0), first[0])


def test_parameter_errors():
    with pytest.raises(
        ValueError, match=r"'decorrelation_m' parameter of CorrelatedShadowing must be > 0. Got 0 instead"
    ):
        CorrelatedShadowing(6.0, 0.0, 1, 1, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"'rng' parameter of CorrelatedShadowing must be a numpy.random.Generator"):
        CorrelatedShadowing(6.0, 10.0, 1, 1, 42)


def test_field_is_exactly_gaussian_and_isotropic():
    from scipy import stats

    sh = CorrelatedShadowing(1.0, 37.0, 2, N // 2, np.random.default_rng(8))
    xy = np.random.default_rng(9).uniform(-2000, 2000, (N // 2, 2))
    u0 = sh.unit_at(xy)
    assert stats.kstest(u0.ravel(), "norm").pvalue > 1e-3  # N(0, 1) at every point
    for ang in (0.0, 0.7, 2.0):  # the same correlation in every direction
        d = 20.0 * np.array([np.cos(ang), np.sin(ang)])
        assert corr(u0, sh.unit_at(xy + d)) == pytest.approx(np.exp(-20.0 / 37.0), abs=0.015)


def test_value_at_a_position_does_not_depend_on_history_or_batch():
    a = CorrelatedShadowing(6.0, 37.0, 3, 50, np.random.default_rng(10))
    xy = np.random.default_rng(11).uniform(-500, 500, (50, 2))
    full = a.value_db_at(xy)
    a.value_db(17.0)  # the stateful API moved everybody: the field is unchanged
    ids = np.array([49, 3, 20])
    assert np.array_equal(a.value_db_at(xy[ids], ids), full[:, ids])

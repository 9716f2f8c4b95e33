"""Block fading: unit mean power, Rician K, Jakes autocorrelation, i.i.d. case, coherence time."""

import numpy as np
import pytest
from scipy.special import j0

from channel.fading import BlockFading, coherence_time_s, doppler_hz

N = 40_000  # links


def make(kind="rayleigh", n_ue=N, **kw):
    kw.setdefault("block_s", 1e-3)
    kw.setdefault("carrier_hz", 3e9)
    return BlockFading(1, n_ue, kind, rng=np.random.default_rng(kw.pop("seed", 1)), **kw)


def test_rayleigh_unit_mean_and_exponential_distribution():
    f = make()
    p = np.concatenate([f.power_gain(k, 30.0).ravel() for k in (0, 50, 100)])
    assert p.mean() == pytest.approx(1.0, abs=0.01)
    # |h|² ~ Exp(1): P(|h|² < 0.1) = 1 − e^{−0.1} = 0.0952
    assert (p < 0.1).mean() == pytest.approx(1 - np.exp(-0.1), abs=0.005)


@pytest.mark.parametrize("k_db", [3.0, 10.0])
def test_rician_k_factor_by_moments(k_db):
    f = make("rician", k_factor_db=k_db)
    p = f.power_gain(0, 10.0).ravel()
    assert p.mean() == pytest.approx(1.0, abs=0.01)
    # Var(|h|²)/E²  = (2K + 1)/(K + 1)²  →  K = sqrt(1 − γ)/(1 − sqrt(1 − γ))
    g = p.var() / p.mean() ** 2
    k_hat = np.sqrt(1 - g) / (1 - np.sqrt(1 - g))
    assert 10 * np.log10(k_hat) == pytest.approx(k_db, abs=0.3)


def complex_corr(a, b):
    return float(np.real(np.mean(np.conj(a) * b)))


@pytest.mark.parametrize("n_blocks", [1, 3, 8, 20])
def test_autocorrelation_follows_jakes_for_a_jump(n_blocks):
    # v = 10 m/s at 3 GHz: f_D = 100.07 Hz; block 1 ms. 2π f_D τ = 0.63, 1.89, 5.03, 12.6 rad:
    # J0 = 0.90, 0.32, −0.17 (past the first zero), 0.11
    v = 10.0
    f = make(seed=2)
    f.power_gain(0, v)
    h0 = f.coefficients().ravel()
    f.power_gain(n_blocks, v)
    h1 = f.coefficients().ravel()
    want = j0(2 * np.pi * doppler_hz(v, 3e9) * n_blocks * 1e-3)
    assert complex_corr(h0, h1) == pytest.approx(want, abs=0.02)
    # power correlation of the pair is J0² (Jakes)
    p0, p1 = np.abs(h0) ** 2, np.abs(h1) ** 2
    assert np.corrcoef(p0, p1)[0, 1] == pytest.approx(want**2, abs=0.03)


def test_consecutive_blocks_chain_the_one_step_correlation():
    v, f = 10.0, make(seed=3)
    f.power_gain(0, v)
    h0 = f.coefficients().ravel()
    f.power_gain(1, v)
    f.power_gain(2, v)
    h2 = f.coefficients().ravel()
    rho1 = j0(2 * np.pi * doppler_hz(v, 3e9) * 1e-3)
    assert complex_corr(h0, h2) == pytest.approx(rho1**2, abs=0.02)


def test_iid_blocks_are_uncorrelated():
    f = make(iid=True, seed=4)
    p0 = f.power_gain(0, 0.0).ravel().copy()
    h0 = f.coefficients().ravel()
    p1 = f.power_gain(1, 0.0).ravel()
    h1 = f.coefficients().ravel()
    assert abs(complex_corr(h0, h1)) < 0.02 and abs(np.corrcoef(p0, p1)[0, 1]) < 0.02
    assert p1.mean() == pytest.approx(1.0, abs=0.02)


def test_static_client_is_frozen_unless_a_minimum_speed_is_set():
    f = make(n_ue=4, seed=5)
    a = f.power_gain(0, 0.0)
    assert np.array_equal(a, f.power_gain(100, 0.0))
    g = make(n_ue=4, seed=5, min_speed_mps=1.0)
    assert not np.array_equal(g.power_gain(0, 0.0), g.power_gain(100, 0.0))


def test_mixed_speeds_only_moving_links_change():
    f = make(n_ue=6, seed=6)
    a = f.power_gain(0, 0.0)
    b = f.power_gain(1, np.array([0, 5, 0, 5, 0, 5.0]))
    assert np.array_equal(a[:, 0::2], b[:, 0::2]) and np.all(a[:, 1::2] != b[:, 1::2])


def test_block_order_same_block_and_reset():
    f = make(n_ue=5, seed=7)
    a = f.power_gain(3, 2.0)
    assert np.array_equal(a, f.power_gain(3, 2.0))
    b = f.power_gain(4, 2.0)
    with pytest.raises(ValueError, match=r"'block_index' parameter of BlockFading must not go back in time"):
        f.power_gain(3, 2.0)
    f.reset()
    assert np.array_equal(f.power_gain(3, 2.0), a) and np.array_equal(f.power_gain(4, 2.0), b)


def test_per_link_k_factor_minus_inf_is_rayleigh():
    f = make("rician", n_ue=N, k_factor_db=15.0, seed=8)
    f.set_k_factor_db(np.where(np.arange(N) % 2 == 0, 15.0, -np.inf)[None, :])
    p = f.power_gain(0, 1.0).ravel()
    ray, ric = p[1::2], p[0::2]
    assert ray.mean() == pytest.approx(1, abs=0.02) and ray.var() == pytest.approx(1, abs=0.05)
    assert ric.var() < 0.1  # K = 15 dB: (2K+1)/(K+1)² = 0.061


def test_coherence_time_and_doppler_values():
    # f_D = 30 m/s · 3e9 / 299792458 = 300.20769 Hz ; T_c = 0.423 / f_D = 1.409025 ms
    assert float(doppler_hz(30.0, 3e9)) == pytest.approx(300.207686, abs=1e-6)
    assert float(coherence_time_s(30.0, 3e9)) == pytest.approx(1.409025e-3, rel=1e-6)
    assert np.isinf(coherence_time_s(0.0, 3e9))
    # T_c falls as 1/v
    t = coherence_time_s(np.array([1.0, 2.0, 4.0]), 3.5e9)
    assert t[0] / t[1] == pytest.approx(2) and t[1] / t[2] == pytest.approx(2)


def test_parameter_errors():
    with pytest.raises(
        ValueError, match=r"'kind' parameter of BlockFading must be one of 'rayleigh', 'rician'. Got 'nakagami'"
    ):
        make("nakagami")
    with pytest.raises(ValueError, match=r"'block_s' parameter of BlockFading must be > 0. Got -1 instead"):
        make(block_s=-1.0)

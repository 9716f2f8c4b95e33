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
    assert complex_corr(h0, h1) == pytest.approx(want, abs=0.015)
    # power correlation of the pair is J0² (Jakes), + Var(ρ̂) of the sum (< 1.2e-3 here)
    p0, p1 = np.abs(h0) ** 2, np.abs(h1) ** 2
    assert np.corrcoef(p0, p1)[0, 1] == pytest.approx(want**2, abs=0.02)


def test_consecutive_blocks_follow_j0_of_the_whole_lag():
    """Two blocks apart the correlation is J0 of the two-block lag (Jakes), not the square
    of the one-block value that a first-order Markov chain gives (the previous model)."""
    v, f = 10.0, make(seed=3)
    f.power_gain(0, v)
    h0 = f.coefficients().ravel()
    f.power_gain(1, v)
    f.power_gain(2, v)
    h2 = f.coefficients().ravel()
    x1 = 2 * np.pi * doppler_hz(v, 3e9) * 1e-3
    assert complex_corr(h0, h2) == pytest.approx(j0(2 * x1), abs=0.015)
    assert abs(j0(2 * x1) - j0(x1) ** 2) > 0.15  # the two rules are told apart


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


# -- the sum of sinusoids: accuracy at M = 16, and no memory ---------------------------------
def _points(n, seed=11):
    """n clients scattered over a 2 km square (one position each), [1, n, 2]."""
    return np.random.default_rng(seed).uniform(-1000.0, 1000.0, (1, n, 2))


def test_envelope_is_exactly_rayleigh_at_every_point():
    # the amplitudes are Gaussian, so s ~ CN(0, 1) at any point: |s|² ~ Exp(1)
    from scipy import stats

    f = make(n_ue=N, seed=12)
    re, im = f.scattered_at([7], _points(N), np.arange(N))
    p = (re**2 + im**2).ravel()
    assert stats.kstest(p, "expon").pvalue > 1e-3
    assert p.mean() == pytest.approx(1.0, abs=0.015) and p.var() == pytest.approx(1.0, abs=0.05)
    assert (p < 0.1).mean() == pytest.approx(1 - np.exp(-0.1), abs=0.004)  # deep fades
    assert abs(np.corrcoef(re.ravel(), im.ravel())[0, 1]) < 0.02


@pytest.mark.parametrize("kd", [1.0, 2.405, 5.0, 8.0, 12.0])
@pytest.mark.parametrize("direction", [0.0, 1.1])
def test_spatial_autocorrelation_is_j0_in_any_direction(kd, direction):
    """E[s(p)* s(p + Δ)] = J0(k|Δ|) over links; the power correlation is J0² + Var(ρ̂),
    Var(ρ̂) = 2 Σ J_{16m}(k|Δ|)² (the sum's own error, < 1e-5 for k|Δ| <= 10)."""
    from scipy.special import jv

    f = make(n_ue=N, seed=13)
    p0 = _points(N, seed=14)
    d = kd / f.wavenumber * np.array([np.cos(direction), np.sin(direction)])
    a = f.scattered_at([3], p0, np.arange(N))
    b = f.scattered_at([3], p0 + d, np.arange(N))
    h0, h1 = a[0] + 1j * a[1], b[0] + 1j * b[1]
    assert complex_corr(h0.ravel(), h1.ravel()) == pytest.approx(j0(kd), abs=0.012)
    var_rho = 2 * sum(jv(16 * m, kd) ** 2 for m in range(1, 40))
    pc = np.corrcoef(np.abs(h0.ravel()) ** 2, np.abs(h1.ravel()) ** 2)[0, 1]
    assert pc == pytest.approx(j0(kd) ** 2 + var_rho, abs=0.02)


def test_link_mean_power_spread_is_one_over_sqrt_m():
    """The documented per-link offset: over a long walk a link's mean power is Σ|c_n|²,
    Gamma(M, 1/M) distributed (std 1/√M = 0.25 for M = 16)."""
    f = make(n_ue=400, seed=15)
    steps = np.arange(2000) * 0.37  # 740 m along x, far beyond the correlation distance
    xy = np.zeros((steps.size, 400, 2))
    xy[:, :, 0] = steps[:, None]
    re, im = f.scattered_at(np.arange(steps.size), xy, np.arange(400))
    mean = (re**2 + im**2).mean(axis=2).ravel()  # (400,) one per link
    assert mean.mean() == pytest.approx(1.0, abs=0.04)
    assert mean.std() == pytest.approx(0.25, abs=0.04)


def test_values_do_not_depend_on_what_was_asked_before():
    """Common random numbers: a link's fading at a block is a function of (seed, client,
    link, block, position) — alone, after other blocks, within a chunk of blocks, in a batch
    of other clients, or through the stateful API: the same bits."""
    xy = np.random.default_rng(16).uniform(-300, 300, (40, 50, 2))
    blocks = np.arange(100, 140)
    ref = make("rician", n_ue=50, seed=17, min_speed_mps=0.7)
    re, im = ref.scattered_at(blocks, xy, np.arange(50))  # 40 blocks, 50 clients at once
    for k, cols in ((5, [3]), (17, [0, 3, 49]), (31, np.arange(50))):
        other = make("rician", n_ue=50, seed=17, min_speed_mps=0.7)
        other.scattered_at([3], xy[:1, :7], np.arange(7))  # asked about something else first
        r1, i1 = other.scattered_at([blocks[k]], xy[k:k + 1, cols], cols)
        assert np.array_equal(r1[:, :, 0], re[cols, :, k]) and np.array_equal(i1[:, :, 0], im[cols, :, k])
    # the stateful API at constant speed: one jump or block by block, the same values
    a, b = make(n_ue=6, seed=18), make(n_ue=6, seed=18)
    a.advance_to(0, 3.0)
    a.advance_to(9, 3.0)
    for k in range(10):
        b.advance_to(k, 3.0)
    assert np.array_equal(a.coefficients(), b.coefficients())


def test_values_hold_when_the_parameter_cache_wraps():
    """The per-client parameter cache is a ring: batches that mix cached clients with new
    ones whose rows evict theirs, and batches larger than the ring, still give each client
    its own values (the cache changes no value, only the cost)."""
    from channel._sos import ParamCache

    rng = np.random.default_rng(21)
    n = 60
    xy = rng.uniform(-300, 300, (1, n, 2))
    ref = make("rician", n_ue=n, seed=22, min_speed_mps=0.7)
    re, im = ref.scattered_at([7], xy, np.arange(n))
    small = make("rician", n_ue=n, seed=22, min_speed_mps=0.7)
    small._params = ParamCache(8)
    batches = [np.arange(0, 4), np.arange(4, 8), np.array([0, 40, 41]), np.array([1, 2, 50]),
               np.arange(10, 30), np.array([29, 28, 3, 55, 56, 57, 58, 59]), np.array([59, 0])]
    batches += [np.sort(rng.choice(n, size=int(rng.integers(1, 12)), replace=False)) for _ in range(40)]
    for cols in batches:
        r, i = small.scattered_at([7], xy[:, cols], cols)
        assert np.array_equal(r[:, :, 0], re[cols, :, 0]) and np.array_equal(i[:, :, 0], im[cols, :, 0]), cols


def test_iid_blocks_are_keyed_by_block():
    f = make(n_ue=5, iid=True, seed=19)
    xy = np.zeros((3, 5, 2))
    re, im = f.scattered_at([4, 9, 2], xy, np.arange(5))
    r2, i2 = f.scattered_at([9], xy[:1, 1:3], np.array([1, 2]))
    assert np.array_equal(r2[:, :, 0], re[1:3, :, 1]) and np.array_equal(i2[:, :, 0], im[1:3, :, 1])
    assert not np.array_equal(re[:, :, 0], re[:, :, 1])


def test_environment_doppler_decorrelates_a_parked_client_with_j0():
    f = make(n_ue=N, seed=20, min_speed_mps=2.0)
    p0 = _points(N, seed=21)
    a = f.scattered_at([0], p0, np.arange(N))
    b = f.scattered_at([3], p0, np.arange(N))  # 3 ms later, same place
    want = float(f.rho(3, 0.0)[0])  # J0(2π f_min τ)
    assert want == pytest.approx(j0(2 * np.pi * doppler_hz(2.0, 3e9) * 3e-3))
    got = complex_corr((a[0] + 1j * a[1]).ravel(), (b[0] + 1j * b[1]).ravel())
    assert got == pytest.approx(want, abs=0.015)

"""Block fading: Rayleigh and Rician, a sum of sinusoids with the Jakes autocorrelation.

Each link's small-scale gain h is constant over a fading block [n·block_s, (n+1)·block_s)
and equals the value of a fixed random field at the client's position at the block's
start. The scattered (diffuse) part of link (client u, BS b) is Clarke's plane-wave sum

    s(p, t) = Σ_{n<M} c_{u,b,n} · exp(j(k (x cos α_{u,n} + y sin α_{u,n}) + 2π f_min cos β_{u,n} t)),

k = 2π f_c / c, with M = ``n_sinusoids`` (default 16) arrival angles equally spaced and
rotated at random per client (α_{u,n} = 2π(n + θ_u)/M), complex Gaussian amplitudes
c ~ CN(0, 1/M) per link and sinusoid, and an optional environment Doppler f_min =
``min_speed_mps``·f_c/c (scatterers that move; β uniform). Everything random is a
counter-based draw keyed by (seed, client, BS) (:mod:`channel._keyed`), so the fading is a
function of (seed, client, link, position, time) alone: it does not depend on which blocks
or clients were evaluated before (common random numbers across scenarios), and any number
of blocks can be evaluated in one vectorised call. A client moving at v sees the temporal
autocorrelation J0(2π f_D τ), f_D = v f_c / c (Clarke/Jakes), whatever its path; a static
client's fading is frozen unless ``min_speed_mps`` > 0 (then it decorrelates with
J0(2π f_min τ), and a moving one with J0(2π f_D τ)·J0(2π f_min τ)).

Rician links add a fixed line-of-sight component, with φ uniform per link
(``los_phase="random"``) or 0:

    h = sqrt(K/(K+1))·e^{jφ} + sqrt(1/(K+1))·s,     E|h|² = 1.

``iid=True`` draws every block afresh (a keyed CN(0, 1) per client, link and block).

Accuracy of the sum at M = 16 (tested in tests/channel/test_channel_fading.py):

- envelope: exact. At every point s is a sum of Gaussians, so s ~ CN(0, 1), |s| is
  Rayleigh and |s|² ~ Exp(1) (a Kolmogorov–Smirnov test finds no difference);
- J0 autocorrelation: exact over the ensemble (the random rotation makes each angle
  uniform): E[s(p)* s(p + Δ)] = J0(k|Δ|) for every displacement Δ. One link's own
  correlation, ρ̂(Δ) = (1/M) Σ_n exp(j k|Δ| cos(α_n − ψ)) (ψ the direction of Δ), is
  J0(k|Δ|) + 2 Σ_{m>=1} j^{mM} J_{mM}(k|Δ|) cos(mMψ − 2πmθ) (Jacobi–Anger): within 1.6e−4 of
  J0 for k|Δ| <= 8 (|Δ| <= 1.3 λ) and 3e−3 for k|Δ| <= 10; beyond, it fluctuates around
  J0 by about 1/√M (a sum of M sinusoids is quasi-periodic, not ergodic);
- power correlation: the Gaussian value 1 + |ρ̂|² gives J0² + Var(ρ̂); Var(ρ̂) < 1e−5 for
  k|Δ| <= 10, 1.1e−3 at k|Δ| = 12.6 (2 λ), and about 1/M at large distances: each link
  keeps a mean power Σ|c_n|² ~ Gamma(M, 1/M) around 1 (std 1/√M = 0.25, about ±1.1 dB),
  a persistent per-link offset that a larger M shrinks (cost: linear in M).

Classes: :class:`BlockFading`. A *stateless* evaluation, :meth:`BlockFading.scattered_at`
and :meth:`BlockFading.power_at`, takes the blocks and the positions; the stateful
convenience API (:meth:`BlockFading.advance_to`, :meth:`BlockFading.power_gain`) keeps one
coordinate per client along a straight path (the x axis) advanced by speed × time, for
standalone use with speeds only.
"""

from __future__ import annotations

import numpy as np
from scipy.special import j0

from ._checks import check_choice, check_nonnegative, check_positive, check_range, child_rng, per_client
from ._keyed import KeyedStream
from ._sos import ParamCache, chunk_product, cos_sin_into

__all__ = ["BlockFading", "doppler_hz", "coherence_time_s", "SPEED_OF_LIGHT_MPS", "DEFAULT_N_SINUSOIDS"]

SPEED_OF_LIGHT_MPS = 299_792_458.0
#: Sinusoids per link (see the module docstring for the accuracy at this number).
DEFAULT_N_SINUSOIDS = 16


def doppler_hz(speed_mps, carrier_hz) -> np.ndarray:
    """Maximum Doppler shift f_D = v·f_c/c, Hz (float64, shape of ``speed_mps``)."""
    return np.asarray(speed_mps, dtype=float) * (float(carrier_hz) / SPEED_OF_LIGHT_MPS)


def coherence_time_s(speed_mps, carrier_hz) -> np.ndarray:
    """Coherence time T_c = 0.423 / f_D, s (inf for a static client).

    0.423 = sqrt(9/(16π)): the geometric mean of 1/f_D and the time over which the Jakes
    envelope correlation stays above 0.5, 9/(16π f_D) (Rappaport, Wireless Communications,
    2nd ed., eq. 5.40.c).
    """
    fd = doppler_hz(speed_mps, carrier_hz)
    with np.errstate(divide="ignore"):
        return np.where(fd > 0.0, 0.423 / np.where(fd > 0.0, fd, 1.0), np.inf)


class BlockFading:
    """Small-scale block fading for [n_bs, n_ue] links.

    Args:
        n_bs, n_ue: link array shape.
        kind: ``"rayleigh"`` or ``"rician"``.
        k_factor_db: Rician K, dB (scalar or [n_bs, n_ue]; −inf = Rayleigh on that link).
            TR 38.901 Table 7.5-6 gives mean K = 9 dB (UMa, UMi LOS), 7 dB (RMa, InH LOS).
        block_s: fading block duration, s.
        carrier_hz: carrier frequency, Hz (the wave number k = 2π f_c / c).
        rng: generator; the model owns a child of it, and ``reset()`` replays.
        iid: draw every block independently instead of the Jakes correlation.
        los_phase: ``"random"`` (uniform per link) or ``"zero"``.
        min_speed_mps: environment Doppler: the fading also evolves in time as if the
            client moved at this speed (a parked client's fading keeps changing; 0 keeps
            it frozen).
        n_sinusoids: M, sinusoids per link (accuracy and cost grow with it).

    State (the stateful API only): each client's coordinate along its path (m), the block
    it is at, and its scattered part there, [2, n_bs, n_ue] float64.
    """

    def __init__(
        self,
        n_bs: int,
        n_ue: int,
        kind: str = "rayleigh",
        k_factor_db=9.0,
        *,
        block_s: float,
        carrier_hz: float,
        rng: np.random.Generator,
        iid: bool = False,
        los_phase: str = "random",
        min_speed_mps: float = 0.0,
        n_sinusoids: int = DEFAULT_N_SINUSOIDS,
    ) -> None:
        owner = "BlockFading"
        self.n_bs, self.n_ue = int(n_bs), int(n_ue)
        self.kind = check_choice(kind, "kind", owner, ("rayleigh", "rician"))
        self.block_s = check_positive(block_s, "block_s", owner)
        self.carrier_hz = check_positive(carrier_hz, "carrier_hz", owner)
        self.iid = bool(iid)
        self.los_phase = check_choice(los_phase, "los_phase", owner, ("random", "zero"))
        self.min_speed_mps = check_nonnegative(min_speed_mps, "min_speed_mps", owner)
        if int(n_sinusoids) != n_sinusoids or n_sinusoids < 4:
            raise ValueError(f"The 'n_sinusoids' parameter of {owner} must be an integer >= 4. "
                             f"Got {n_sinusoids!r} instead.")
        self.n_sinusoids = int(n_sinusoids)
        self.wavenumber = 2.0 * np.pi * self.carrier_hz / 299_792_458.0  # k, rad/m
        self._omega_env = 2.0 * np.pi * float(doppler_hz(self.min_speed_mps, self.carrier_hz))
        self._seed = child_rng(rng, owner)
        m = self.n_sinusoids
        self._amp = KeyedStream(self._seed, self.n_bs * m, purpose=0)  # c_{u,b,n}
        self._angles = KeyedStream(self._seed, 1 + m, purpose=3)  # θ_u, β_{u,n}
        self._draw_iid = KeyedStream(self._seed, self.n_bs, purpose=1)  # iid blocks
        self._params = ParamCache()
        self._k_db = None
        self._k_setting = k_factor_db
        self.reset()

    # -- parameters --------------------------------------------------------------------
    def set_k_factor_db(self, k_factor_db, cols=None) -> None:
        """Set the Rician K (dB; scalar or [n_bs, n_ue]; −inf = Rayleigh) from now on. With
        ``cols`` (client indices) only those columns change; ``k_factor_db`` is then
        [n_bs, len(cols)]."""
        if self.kind != "rician":
            raise ValueError(
                f"The 'k_factor_db' parameter of BlockFading only applies to kind='rician'. "
                f"Got kind={self.kind!r} instead."
            )
        k = check_range(k_factor_db, "k_factor_db", "BlockFading", -np.inf, 60.0)
        los_amp, diff_amp = rician_amplitudes(k)
        if cols is None:
            np.broadcast_shapes(np.shape(k), (self.n_bs, self.n_ue))
            self._k_db = k
            self._los_amp, self._diff_amp = los_amp, diff_amp  # scalar or [n_bs, n_ue]
            # the LOS component a·e^{jφ}, built once per K change (not per block)
            self._los_re = self._los_amp * self._cos
            self._los_im = self._los_amp * self._sin
            return
        shape = (self.n_bs, self.n_ue)
        for name in ("_k_db", "_los_amp", "_diff_amp", "_los_re", "_los_im"):
            v = getattr(self, name)
            if np.shape(v) != shape:
                setattr(self, name, np.array(np.broadcast_to(v, shape), dtype=float))
        self._k_db[:, cols] = k
        self._los_amp[:, cols] = los_amp
        self._diff_amp[:, cols] = diff_amp
        cos = self._cos if np.ndim(self._cos) == 0 else self._cos[:, cols]
        sin = self._sin if np.ndim(self._sin) == 0 else self._sin[:, cols]
        self._los_re[:, cols] = los_amp * cos
        self._los_im[:, cols] = los_amp * sin

    @property
    def k_factor_db(self):
        return self._k_db

    def los_phase_of(self, cols) -> tuple[np.ndarray, np.ndarray]:
        """(cos φ, sin φ) of the LOS component of clients ``cols``, [n_bs, m] each (ones and
        zeros for ``los_phase="zero"``)."""
        cols = np.asarray(cols, dtype=np.int64)
        if self.los_phase == "zero":
            return np.ones((self.n_bs, cols.size)), np.zeros((self.n_bs, cols.size))
        phi = KeyedStream(self._seed, self.n_bs, purpose=2).uniform(cols, 0) * (2.0 * np.pi)
        return np.cos(phi), np.sin(phi)

    # -- the field -----------------------------------------------------------------------
    def _sum_parameters(self, clients: np.ndarray):
        """(Q [m, 2 n_bs, 2M] real form of the amplitudes, cos α, sin α [m, M], ω_env cos β
        [m, M] or None), cached per client."""
        q, ca, sa, omega = self._params.get(clients, self._draw_parameters)
        return q, ca, sa, (omega if self._omega_env > 0.0 else None)

    def _draw_parameters(self, clients: np.ndarray):
        m, b = self.n_sinusoids, self.n_bs
        re, im = self._amp.complex_normal(clients, 0)  # [n_bs·M, m], E|c|² = 1
        s = 1.0 / np.sqrt(m)
        cr = (re * s).T.reshape(clients.size, b, m)
        ci = (im * s).T.reshape(clients.size, b, m)
        q = np.empty((clients.size, 2 * b, 2 * m))
        q[:, :b, :m] = cr  # re = Σ cr cos − ci sin
        np.negative(ci, out=q[:, :b, m:])
        q[:, b:, :m] = ci  # im = Σ ci cos + cr sin
        q[:, b:, m:] = cr
        u = self._angles.uniform(clients, 0)  # [1 + M, m]
        alpha = (np.arange(m, dtype=float)[None, :] + u[0][:, None]) * (2.0 * np.pi / m)  # [m, M]
        omega = self._omega_env * np.cos(u[1:].T * (2.0 * np.pi))  # [m, M]
        return q, np.cos(alpha), np.sin(alpha), omega

    def scattered_at(self, blocks, xy_m, cols=None) -> tuple[np.ndarray, np.ndarray]:
        """The scattered part s of clients ``cols`` at blocks ``blocks``, positions ``xy_m``.

        Args:
            blocks: (W,) distinct int block indices (>= 0); the environment Doppler term
                uses their start times.
            xy_m: [W, m, 2] float64, m: each client's position at each block's start.
            cols: (m,) client indices (default: all, m = n_ue).

        Returns:
            (re, im), each [m, n_bs, W] float64 (a function of the seed, the client, the
            link, the block and the position only: bit for bit the same in any batch).
        """
        blocks = np.atleast_1d(np.asarray(blocks, dtype=np.int64))
        cols = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        xy = np.asarray(xy_m, dtype=float).reshape(blocks.size, cols.size, 2)
        b = self.n_bs
        if self.iid:  # one keyed CN(0, 1) per client, link and block
            re, im = self._draw_iid.complex_normal(np.repeat(cols, blocks.size), np.tile(blocks, cols.size))
            return (re.reshape(b, cols.size, blocks.size).transpose(1, 0, 2).copy(),
                    im.reshape(b, cols.size, blocks.size).transpose(1, 0, 2).copy())
        q, ca, sa, omega = self._sum_parameters(cols)
        basis = fading_basis(ca, sa, omega, xy, blocks * self.block_s, self.wavenumber)
        out = chunk_product(q, basis, blocks)  # [m, 2 n_bs, W]
        return out[:, :b], out[:, b:]

    def power_at(self, blocks, xy_m, cols=None) -> np.ndarray:
        """|h|² of clients ``cols`` at ``blocks`` and positions ``xy_m`` ([W, m, 2]) with
        the current K factors: [W, n_bs, m] float64 (see :meth:`scattered_at`)."""
        cols = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        re, im = self.scattered_at(blocks, xy_m, cols)
        re, im = re.transpose(2, 1, 0), im.transpose(2, 1, 0)  # [W, n_bs, m]
        out = np.empty(re.shape)
        self._power(re, im, out, None, cols)
        return out

    # -- state (the stateful API) ---------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial state (no block drawn yet); the same values follow."""
        self._s = np.zeros((2, self.n_bs, self.n_ue))
        self._at = np.full(self.n_ue, -1, dtype=np.int64)  # block of each client (−1: none)
        self._path_m = np.zeros(self.n_ue)  # coordinate along each client's path
        self._block = None
        self._cos = self._sin = None
        if self.kind == "rician":
            self._cos, self._sin = (1.0, 0.0) if self.los_phase == "zero" else self.los_phase_of(np.arange(self.n_ue))
            self.set_k_factor_db(self._k_setting)

    @property
    def block(self) -> int | None:
        """Latest block any client was advanced to (None before the first call)."""
        return self._block

    @property
    def client_block(self) -> np.ndarray:
        """(n_ue,) int64: the block each client's state is at (−1: not drawn yet). Read-only."""
        v = self._at.view()
        v.flags.writeable = False
        return v

    def rho(self, n_blocks, speeds_mps) -> np.ndarray:
        """Autocorrelation E[s* s'] over ``n_blocks`` blocks at ``speeds_mps`` (m/s):
        J0(2π f_D n·block_s)·J0(2π f_min n·block_s) (0 for ``iid``).

        ``n_blocks`` and ``speeds_mps`` broadcast: per-client arrays give one ρ per
        client of theirs; two scalars give (n_ue,)."""
        shape = np.broadcast_shapes(np.shape(n_blocks), np.shape(speeds_mps)) or (self.n_ue,)
        if self.iid:
            return np.zeros(shape)
        tau = np.broadcast_to(np.asarray(n_blocks) * self.block_s, shape)
        v = np.broadcast_to(np.asarray(speeds_mps, dtype=float), shape)
        return j0(2.0 * np.pi * doppler_hz(v, self.carrier_hz) * tau) * j0(self._omega_env * tau)

    def advance_to(self, block_index: int, speeds_mps, cols=None, power_out=None) -> bool:
        """Move clients ``cols`` (default: all) to ``block_index`` along their paths;
        returns whether any value changed.

        Args:
            block_index: int >= 0, not before any of these clients' current block.
            speeds_mps: scalar or one speed per client of ``cols``, m/s, over the time since
                each client's previous block (a client's first block puts it at the start of
                its path).
            cols: None (every client) or (m,) distinct client indices.
            power_out: optional [n_bs, m] float64 buffer (with ``cols``): receives |h|² of
                these clients afterwards (as :meth:`power_into`).

        The values are :meth:`scattered_at` at the clients' path coordinates (x = travelled
        distance, y = 0) and this block: a client advanced in one jump or block by block at
        a constant speed gets the same values.
        """
        k = int(block_index)
        if k < 0:
            raise ValueError(f"The 'block_index' parameter of BlockFading must be >= 0. Got {k} instead.")
        ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        at = self._at[ids]
        if at.size and int(at.max()) > k:
            raise ValueError(
                f"The 'block_index' parameter of BlockFading must not go back in time: the state is at "
                f"block {int(at.max())}. Got {k} instead. Call reset() to start over."
            )
        self._block = k if self._block is None else max(self._block, k)
        speeds = per_client(speeds_mps, ids.size)
        todo = at < k
        changed = False
        if todo.any():
            who = ids[todo]
            prev = at[todo]
            step = np.where(prev >= 0, speeds[todo] * ((k - prev) * self.block_s), 0.0)
            moved = (prev < 0) | (step > 0.0) | self.iid | (self._omega_env > 0.0)
            self._path_m[who] += step
            self._at[who] = k
            if moved.any():
                who = who[moved]
                xy = np.zeros((1, who.size, 2))
                xy[0, :, 0] = self._path_m[who]
                re, im = self.scattered_at([k], xy, who)
                self._s[0][:, who] = re[:, :, 0].T
                self._s[1][:, who] = im[:, :, 0].T
                changed = True
        if power_out is not None:
            self.power_into(power_out, cols=ids)
        return changed

    def power_into(self, out: np.ndarray, tmp: np.ndarray | None = None, cols=None) -> np.ndarray:
        """Write |h|² of the clients' current blocks into ``out`` ([n_bs, n_ue], or
        [n_bs, m] for ``cols`` of m clients) and return it."""
        if cols is None:
            re, im = self._s[0], self._s[1]
        else:
            re, im = self._s[0][:, cols], self._s[1][:, cols]
        return self._power(re, im, out, tmp, cols)

    def _power(self, re, im, out, tmp, cols) -> np.ndarray:
        """|h|² from the scattered parts ``re``, ``im`` (…, [n_bs, m]) of clients ``cols``
        (None: all)."""
        if tmp is None:
            tmp = np.empty_like(out)
        if self.kind == "rayleigh":
            np.multiply(re, re, out=out)
            np.multiply(im, im, out=tmp)
            out += tmp
            return out
        # Rician: x = a·e^{jφ} + b·s
        b, lr, li = self._diff_amp, self._los_re, self._los_im
        if cols is not None:
            b, lr, li = (x if np.ndim(x) == 0 else x[:, cols] for x in (b, lr, li))
        np.multiply(re, b, out=out)
        out += lr
        np.square(out, out=out)
        np.multiply(im, b, out=tmp)
        tmp += li
        np.square(tmp, out=tmp)
        out += tmp
        return out

    def power_gain(self, block_index: int, speeds_mps) -> np.ndarray:
        """Linear power gain |h|² for the block ``block_index``.

        Args:
            block_index: fading block (int, non-decreasing across calls).
            speeds_mps: (n_ue,) or scalar, m/s — the clients' speeds since their previous
                block.

        Returns:
            [n_bs, n_ue] float64, linear, mean 1. The same block twice returns equal values.
        """
        self.advance_to(block_index, speeds_mps)
        return self.power_into(np.empty((self.n_bs, self.n_ue)))

    def coefficients(self, cols=None) -> np.ndarray:
        """Complex gains h of the clients' current blocks, [n_bs, n_ue] (or [n_bs, m] for
        ``cols``) complex128 (a new array)."""
        sel = slice(None) if cols is None else cols
        s = self._s[0][:, sel] + 1j * self._s[1][:, sel]
        if self.kind == "rayleigh":
            return s
        a, b, c, si = (x if np.ndim(x) == 0 else x[:, sel]
                       for x in (self._los_amp, self._diff_amp, self._cos, self._sin))
        return a * (c + 1j * si) + b * s


def rician_amplitudes(k_factor_db):
    """(sqrt(K/(K+1)), sqrt(1/(K+1))) of K in dB (scalar or array; −inf gives (0, 1))."""
    k_lin = np.power(10.0, np.asarray(k_factor_db, dtype=float) / 10.0)
    return np.sqrt(k_lin / (k_lin + 1.0)), np.sqrt(1.0 / (k_lin + 1.0))


def fading_basis(cos_a: np.ndarray, sin_a: np.ndarray, omega, xy: np.ndarray, t_s: np.ndarray,
                 wavenumber: float) -> np.ndarray:
    """[m, 2M, W] basis (cos then sin of the sinusoids' phases) of clients with arrival
    angles (cos α, sin α) [m, M] and environment frequencies ``omega`` ([m, M] rad/s or
    None) at positions ``xy`` [W, m, 2] (m) and times ``t_s`` (W,) (s)."""
    x = xy[:, :, 0].T[:, None, :] * wavenumber  # [m, 1, W]
    y = xy[:, :, 1].T[:, None, :] * wavenumber
    theta = cos_a[:, :, None] * x  # [m, M, W]
    theta += sin_a[:, :, None] * y
    if omega is not None:
        theta += omega[:, :, None] * np.asarray(t_s, dtype=float)[None, None, :]
    m = cos_a.shape[1]
    out = np.empty((cos_a.shape[0], 2 * m, xy.shape[0]))
    cos_sin_into(theta, out[:, :m], out[:, m:])
    return out

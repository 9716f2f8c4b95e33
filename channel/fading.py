"""Block fading: Rayleigh and Rician, time-correlated through the Jakes autocorrelation.

Each link's small-scale gain h is constant over a fading block [n·block_s, (n+1)·block_s).
Its scattered (diffuse) part s ~ CN(0, 1) evolves as a first-order Gauss–Markov process

    s' = ρ s + sqrt(1 − ρ²) w,    w ~ CN(0, 1),    ρ = J0(2π f_D Δt),  f_D = v f_c / c,

per client (Clarke/Jakes: the autocorrelation of a narrowband channel seen by a receiver
moving at v in isotropic scattering is J0(2π f_D τ)). ``iid=True`` draws every block
afresh (ρ = 0). Rician links add a fixed line-of-sight component:

    h = sqrt(K/(K+1))·e^{jφ} + sqrt(1/(K+1))·s,     E|h|² = 1,

with φ uniform per link (``los_phase="random"``, drawn at reset) or 0. The power gain
|h|² has mean 1 (Rayleigh: exponential; Rician: non-central χ²).

Advancing several blocks at once (the simulator skipped blocks in which nobody looked at a
link) uses ρ = J0(2π f_D n·block_s) for the whole jump, not ρ₁ⁿ. Reason: a first-order
process cannot reproduce J0 at every lag, so we choose to be exact for the pair that is
actually observed (the last block seen and the requested one): the power correlation
between them is then J0² of the true lag, as Jakes predicts, whereas ρ₁ⁿ decays
monotonically and misses J0's oscillation. For consecutive blocks both rules agree. The
consequence (documented, tested) is that a realisation depends on which blocks were
requested — deterministic for a given seed and query sequence, as in the simulator.

Clients are independent: each keeps its own block index, and :meth:`BlockFading.advance_to`
and :meth:`BlockFading.power_into` accept ``cols`` (client indices) to advance or read only
those clients. Random numbers are counter-based (:mod:`channel._keyed`): the innovation of
client u on the jump to block k is a fixed function of (seed, u, k, BS), so a client's
fading is the same whichever other clients are advanced with it, or not at all.
"""

from __future__ import annotations

import numpy as np
from scipy.special import j0

from ._checks import check_choice, check_nonnegative, check_positive, check_range, child_rng, per_client
from ._keyed import KeyedStream

__all__ = ["BlockFading", "doppler_hz", "coherence_time_s", "SPEED_OF_LIGHT_MPS"]

SPEED_OF_LIGHT_MPS = 299_792_458.0


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
        carrier_hz: carrier frequency, Hz (for the Doppler shift).
        rng: generator; the model owns a child of it, and ``reset()`` replays.
        iid: draw every block independently (ρ = 0) instead of the Jakes correlation.
        los_phase: ``"random"`` (uniform per link) or ``"zero"``.
        min_speed_mps: speeds below this are raised to it (a floor on the Doppler shift,
            so that the fading of a parked client still evolves; 0 keeps it frozen).

    State: the scattered part s, [2, n_bs, n_ue] float64 (real and imaginary planes), and
    the block each client is at.
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
    ) -> None:
        owner = "BlockFading"
        self.n_bs, self.n_ue = int(n_bs), int(n_ue)
        self.kind = check_choice(kind, "kind", owner, ("rayleigh", "rician"))
        self.block_s = check_positive(block_s, "block_s", owner)
        self.carrier_hz = check_positive(carrier_hz, "carrier_hz", owner)
        self.iid = bool(iid)
        self.los_phase = check_choice(los_phase, "los_phase", owner, ("random", "zero"))
        self.min_speed_mps = check_nonnegative(min_speed_mps, "min_speed_mps", owner)
        self._seed = child_rng(rng, owner)
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
        k_lin = np.power(10.0, np.asarray(k, dtype=float) / 10.0)
        los_amp = np.sqrt(k_lin / (k_lin + 1.0))
        diff_amp = np.sqrt(1.0 / (k_lin + 1.0))
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

    # -- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial state (no block drawn yet); the same draws follow."""
        self._init = KeyedStream(self._seed, self.n_bs, purpose=0)  # initial state
        self._innov = KeyedStream(self._seed, self.n_bs, purpose=1)  # jump innovations
        self._s = np.zeros((2, self.n_bs, self.n_ue))
        self._at = np.full(self.n_ue, -1, dtype=np.int64)  # block of each client (−1: none)
        self._block = None
        self._cos = self._sin = None
        if self.kind == "rician":
            if self.los_phase == "random":
                u = KeyedStream(self._seed, self.n_bs, purpose=2).uniform(np.arange(self.n_ue), 0)
                phi = u * (2.0 * np.pi)  # [n_bs, n_ue]
                self._cos, self._sin = np.cos(phi), np.sin(phi)
            else:
                self._cos, self._sin = 1.0, 0.0
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
        """Correlation ρ = J0(2π f_D n·block_s) applied for a jump of ``n_blocks`` blocks.

        ``n_blocks`` and ``speeds_mps`` (m/s) broadcast: per-client arrays give one ρ per
        client of theirs; two scalars give (n_ue,)."""
        shape = np.broadcast_shapes(np.shape(n_blocks), np.shape(speeds_mps)) or (self.n_ue,)
        v = np.asarray(speeds_mps, dtype=float)
        if v.shape != shape:
            v = np.broadcast_to(v, shape)
        v = np.maximum(v, self.min_speed_mps)
        if self.iid:
            return np.zeros(shape)
        return j0(2.0 * np.pi * doppler_hz(v, self.carrier_hz) * (np.asarray(n_blocks) * self.block_s))

    def _rho(self, n_blocks: np.ndarray, speeds_mps: np.ndarray) -> np.ndarray:
        """:meth:`rho` of (m,) int jumps and (m,) float speeds (the per-block path: the same
        arithmetic, without the broadcasting)."""
        v = np.maximum(speeds_mps, self.min_speed_mps)
        if self.iid:
            return np.zeros(v.shape)
        return j0(2.0 * np.pi * doppler_hz(v, self.carrier_hz) * (n_blocks * self.block_s))

    def advance_to(self, block_index: int, speeds_mps, cols=None, power_out=None) -> bool:
        """Move the scattered state of clients ``cols`` (default: all) to ``block_index``;
        returns whether any value changed.

        Args:
            block_index: int >= 0, not before any of these clients' current block.
            speeds_mps: scalar or one speed per client of ``cols``, m/s.
            cols: None (every client) or (m,) distinct client indices.
            power_out: optional [n_bs, m] float64 buffer (with ``cols``): receives |h|² of
                these clients afterwards (as :meth:`power_into`, from the values in hand).

        A client not drawn yet starts from its stationary draw; a client already at the
        block is left alone; the others jump with ρ = J0(2π f_D Δn·block_s) over their own
        Δn (clients with ρ = 1, i.e. static ones, keep their state).
        """
        k = int(block_index)
        if k < 0:
            raise ValueError(f"The 'block_index' parameter of BlockFading must be >= 0. Got {k} instead.")
        every = cols is None
        ids = None if every else np.asarray(cols, dtype=np.int64)
        at = self._at if every else self._at[ids]
        a_min = a_max = -1
        if at.size:
            at_list = at.tolist()  # (Python's min/max: cheaper than numpy reductions on a few)
            a_min, a_max = min(at_list), max(at_list)
            if a_max > k:
                raise ValueError(
                    f"The 'block_index' parameter of BlockFading must not go back in time: the state is at "
                    f"block {a_max}. Got {k} instead. Call reset() to start over."
                )
        self._block = k if self._block is None else max(self._block, k)
        speeds = per_client(speeds_mps, at.size)
        changed = False
        in_hand = None  # the new state of every client of cols, when all of them moved
        if at.size and a_min >= 0:  # the usual case: every client jumps
            fresh = None
            jump = None if a_max < k else at < k  # None: every client
        else:
            fresh = at < 0
            jump = (at >= 0) & (at < k)
        if fresh is not None and fresh.any():  # stationary initial draw
            f = (np.arange(self.n_ue) if every else ids)[fresh]
            self._s[0][:, f], self._s[1][:, f] = self._init.complex_normal(f, 0)  # CN(0, 1)
            changed = True
        if jump is None or jump.any():
            whole = jump is None or bool(jump.all())
            rho = self._rho(k - at, speeds) if whole else self._rho(k - at[jump], speeds[jump])
            move = rho != 1.0
            if whole and np.count_nonzero(move) == move.size:  # the usual case: all move
                who = np.arange(self.n_ue) if every else ids
                r = rho
            elif move.any():
                pos = np.flatnonzero(move) if whole else np.flatnonzero(jump)[move]
                who = pos if every else ids[pos]
                r = rho[move]
            else:
                who = None
            if who is not None:
                re, im = self._innov.complex_normal(who, k + 1)  # CN(0, 1) innovations
                sd = np.sqrt(1.0 - r * r)
                if every and who.size == self.n_ue:  # all clients: in place, no gathers
                    self._s *= r
                    re *= sd
                    im *= sd
                    self._s[0] += re
                    self._s[1] += im
                else:
                    re *= sd
                    im *= sd
                    s = self._s[:, :, who]  # [2, n_bs, m]: both planes in one gather
                    s *= r
                    s[0] += re
                    s[1] += im
                    self._s[:, :, who] = s
                    if who is ids:
                        in_hand = (s[0], s[1])
                changed = True
        if every:
            self._at[:] = k
        else:
            self._at[ids] = k
        if power_out is not None:
            if in_hand is None:
                self.power_into(power_out, cols=ids)
            else:
                self._power(in_hand[0], in_hand[1], power_out, None, ids)
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
        """|h|² from the scattered parts ``re``, ``im`` of clients ``cols`` (None: all)."""
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
            speeds_mps: (n_ue,) or scalar, m/s — the clients' speeds (used for the jump from
                the previous block).

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

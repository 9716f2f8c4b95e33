"""Counter-based random draws: every value is a hash of (stream key, client, counter, row).

Why: the simulator evaluates the channel of only the clients that matter in a fading block
(active transfers, queries), not all of them. With one sequential generator a client's
draws would depend on which other clients were drawn before it, and in which batch. Here the
draw of client ``u`` for its ``c``-th update on row ``r`` (a BS or a site) is a fixed
function of ``(key, u, c, r)``: a client's channel evolves identically whether or not
others are computed, in whatever order or batch, and ``reset()`` needs no replay.

The hash is the SplitMix64 output function (Stafford's "Mix13" finaliser), the generator
behind ``java.util.SplittableRandom`` that passes BigCrush as a counter-based generator.
A column seed mixes the stream key with the client and the counter (two rounds); each row
then mixes the column seed with a per-row constant (one round per value).

Normals come from Box–Muller on the two 32-bit halves of one 64-bit hash: the upper half
gives the radius (|z|² ~ Exp, tails to 6.7 σ), the lower half the angle. One hash therefore
gives one complex normal, or two real ones.

Cost (numpy, one core): comparable to drawing the same normals from
``numpy.random.Generator(SFC64)``; the point is not speed but independence of batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KeyedStream"]

# Constants as 0-d arrays of the operands' dtype: a ufunc call takes them about twice as
# fast as numpy or Python scalars (no scalar conversion per call), with the same result.
_U64 = np.uint64


def _u64(x: int) -> np.ndarray:
    return np.array(x, dtype=_U64)


_G = _u64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio (the SplitMix64 increment)
_G2 = _u64(0xD1B54A32D192ED03)  # another odd constant (counter weight)
_M1 = _u64(0xBF58476D1CE4E5B9)
_M2 = _u64(0x94D049BB133111EB)
_ONE = _u64(1)
_S30, _S27, _S31, _S32, _S11 = (_u64(s) for s in (30, 27, 31, 32, 11))
_LO32 = _u64(0xFFFFFFFF)
_HALF = np.array(0.5)
_TWO_M32 = np.array(2.0**-32)
_TWO_PI_M32 = np.array(2.0 * np.pi * 2.0**-32, dtype=np.float32)
_TWO_M53 = np.array(2.0**-53)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, in place on a uint64 array (wrapping arithmetic)."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _mix_int(x: int) -> int:
    """The same finaliser on a Python int (for keys)."""
    m = (1 << 64) - 1
    x &= m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


class KeyedStream:
    """Draws for ``n_rows`` rows per client, keyed by client and counter.

    Args:
        seed_material: uint64 array (e.g. :func:`channel._checks.child_rng`), or an int.
        n_rows: values per (client, counter): e.g. the number of BSs.
        purpose: small int separating streams that share seed material.

    Every method takes ``clients`` ((m,) ints, any order, duplicates give duplicate columns)
    and ``counter`` (an int or (m,) ints >= 0) and returns ``[n_rows, m]`` float64 arrays.
    """

    def __init__(self, seed_material, n_rows: int, purpose: int = 0) -> None:
        words = np.atleast_1d(np.asarray(seed_material)).astype(np.uint64).tolist()
        key = _mix_int(0x6A09E667F3BCC909 + int(purpose))
        for w in words:
            key = _mix_int(key ^ int(w))
        self._key = np.uint64(key)
        self._cseed = np.empty(0, dtype=np.uint64)
        self.n_rows = int(n_rows)
        half = (self.n_rows + 1) // 2
        self._rows = {}
        for n in {self.n_rows, half}:
            self._rows[n] = _mix((np.arange(n, dtype=np.uint64) + _ONE) * _G)[:, None]  # [n, 1]

    # -- hashing ---------------------------------------------------------------------------
    def _column_seeds(self, clients, counter) -> np.ndarray:
        u = np.asarray(clients, dtype=np.int64)
        if u.size and max(u.tolist()) >= self._cseed.size:  # per-client seeds, computed once
            n = max(int(u.max()) + 1, 2 * self._cseed.size)
            z = (np.arange(n, dtype=np.uint64) + _ONE) * _G
            z ^= self._key
            self._cseed = _mix(z)
        z = self._cseed[u]
        if np.ndim(counter) == 0:
            z ^= _u64(((int(counter) + 1) * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        else:
            z ^= (np.asarray(counter, dtype=np.int64).astype(np.uint64) + _ONE) * _G2
        return _mix(z)  # (m,)

    def _hash(self, clients, counter, n: int) -> np.ndarray:
        cs = self._column_seeds(clients, counter)
        z = self._rows[n] ^ cs[None, :]  # [n, m]
        return _mix(z)

    @staticmethod
    def _polar(z: np.ndarray, radius_scale: float):
        """(radius, cos θ, sin θ) of a Box–Muller pair from 64-bit hashes: radius² ~
        scale·Exp(1) from the upper 32 bits (float64), θ uniform in [0, 2π) from the lower 32
        bits (float32 trigonometry: numpy vectorises it, 20× faster than float64 here; the
        angle's 24-bit resolution is far below any statistical effect)."""
        hi = (z >> _S32).astype(np.float64)
        hi += _HALF
        hi *= _TWO_M32  # u1 in (0, 1)
        r = np.log(hi, out=hi)
        r *= -radius_scale
        np.sqrt(r, out=r)
        th = (z & _LO32).astype(np.float32)
        th *= _TWO_PI_M32
        return r, np.cos(th), np.sin(th)

    # -- draws -----------------------------------------------------------------------------
    def complex_normal(self, clients, counter):
        """(re, im), each [n_rows, m]: a CN(0, 1) draw per value (E|z|² = 1, var 1/2 each)."""
        r, c, s = self._polar(self._hash(clients, counter, self.n_rows), 1.0)
        return r * c, r * s

    def normal(self, clients, counter) -> np.ndarray:
        """[n_rows, m] standard normals (both halves of each Box–Muller pair are used)."""
        half = (self.n_rows + 1) // 2
        r, c, s = self._polar(self._hash(clients, counter, half), 2.0)
        out = np.empty((self.n_rows, r.shape[1]))
        np.multiply(r, c, out=out[:half])
        np.multiply(r[: self.n_rows - half], s[: self.n_rows - half], out=out[half:])
        return out

    def uniform(self, clients, counter) -> np.ndarray:
        """[n_rows, m] uniforms in [0, 1) (53 bits)."""
        z = self._hash(clients, counter, self.n_rows)
        return (z >> _S11).astype(np.float64) * _TWO_M53

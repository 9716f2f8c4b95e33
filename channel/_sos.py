"""Sum-of-sinusoids random fields: channel values that are functions of (seed, client, row,
position, time) alone.

Why: a Markov channel (x' = ρ x + sqrt(1 − ρ²) z) depends on where it was last evaluated,
so a client's fading at time t depended on whether it was also asked about earlier, and
two scenarios that differ only in bandwidth saw different channels. Here every value is a
fixed function of the seed, the client, the row (a BS or a site) and the position (and,
for fading, time), evaluated wherever and in whatever batch it is asked for: common random
numbers across configurations, and many blocks in one vectorised call.

Two kinds of field, both sums of sinusoids whose parameters are counter-based draws
(:mod:`channel._keyed`) keyed by client, so a client's field never depends on the others:

- :func:`field_basis` / :func:`field_coefficients`: unit-variance Gaussian fields with the
  exponential (Gudmundson) correlation exp(−|Δp|/d) in the plane, for shadowing and the
  LOS latent. u(p) = Σ_n a_n cos(κ_n·p/d) + b_n sin(κ_n·p/d) with a_n, b_n ~ N(0, 1/N):
  at every point u is exactly N(0, 1); over the random wave vectors κ_n (the 2-D spectral
  density of exp(−r): |κ| has CDF 1 − (1 + |κ|²)^(−1/2), stratified in N equal-probability
  bins, direction uniform) the covariance is exp(−r/d) except for the spectral mass beyond
  the cap |κ| <= :data:`KAPPA_MAX` (1e−4 of it).
- :func:`fading_basis`: the Clarke/Jakes plane-wave sum of :mod:`channel.fading`.

Matrix products (coefficients × basis) run through :func:`chunk_product`, which always
multiplies whole *chunks* of :data:`CHUNK_BLOCKS` fading blocks aligned on multiples of
it (unused columns zero): BLAS rounds a product's columns differently for different widths,
and this way a block's value is the same bit for bit whether it was asked for alone or in
a chunk, in any batch of clients.
"""

from __future__ import annotations

import numpy as np

from ._keyed import KeyedStream

__all__ = ["CHUNK_BLOCKS", "KAPPA_MAX", "N_FIELD_TERMS", "ParamCache", "chunk_product", "cos_sin_into",
           "field_wavevectors", "field_coefficients", "field_basis"]

#: Fading blocks per chunk: the unit of the canonical matrix products (and of the
#: simulator's channel cache).
CHUNK_BLOCKS = 16
#: Sinusoids per Gaussian field (shadowing, LOS latent).
N_FIELD_TERMS = 16
#: Largest normalised wave number |κ| of a field (wavelength 2π·d/1e4, ~2 cm for d = 37 m).
KAPPA_MAX = 1e4

_TWO_PI = 2.0 * np.pi
_INV_TWO_PI = 1.0 / _TWO_PI


def cos_sin_into(theta: np.ndarray, cos_out: np.ndarray, sin_out: np.ndarray) -> None:
    """cos and sin of float64 phases ``theta`` (any shape, rad) into two float64 arrays of
    its shape: reduced to [−π, π] in float64, then float32 trigonometry (numpy vectorises
    it, ~3× faster than float64 here; 1e−7 is far below any statistical effect).
    ``theta`` is overwritten."""
    n = np.rint(theta * _INV_TWO_PI)
    n *= _TWO_PI
    theta -= n
    t32 = theta.astype(np.float32)
    np.cos(t32, out=cos_out)  # the float32 loop, cast on output
    np.sin(t32, out=sin_out)


def chunk_product(q: np.ndarray, basis: np.ndarray, blocks) -> np.ndarray:
    """``q @ basis`` per client, computed chunk by chunk so that every column is rounded the
    same way whatever else is computed with it.

    Args:
        q: [m, R, K] float64, one matrix per client.
        basis: [m, K, W] float64, the basis columns of blocks ``blocks``.
        blocks: (W,) int block indices (any order, distinct).

    Returns:
        [m, R, W] float64.
    """
    blocks = np.asarray(blocks, dtype=np.int64)
    m, k, w = basis.shape
    c = CHUNK_BLOCKS
    first = int(blocks[0]) if w else 0
    if w == c and first % c == 0 and blocks[-1] == first + c - 1 and \
            np.array_equal(blocks, np.arange(first, first + c)):  # one whole chunk, in order
        return np.matmul(q, np.ascontiguousarray(basis))  # one BLAS call per client
    chunk = blocks // c
    col = blocks - chunk * c
    out = np.empty((m, q.shape[1], w))
    for j in np.unique(chunk).tolist():
        sel = np.flatnonzero(chunk == j)
        padded = np.zeros((m, k, c))  # the chunk's other columns are zero
        padded[:, :, col[sel]] = basis[:, :, sel]
        out[:, :, sel] = np.matmul(q, padded)[:, :, col[sel]]
    return out


# -- Gaussian fields with exponential correlation -----------------------------------------
def field_wavevectors(seed_material, clients, n_terms: int = N_FIELD_TERMS, purpose: int = 0):
    """Normalised wave vectors (κx, κy), each [m, N], of the clients' fields.

    |κ_n| = F⁻¹((n + θ)/N), F(κ) = 1 − (1 + κ²)^(−1/2) (the radial law of the 2-D spectral
    density of exp(−r)), one offset θ per client, capped at :data:`KAPPA_MAX`; directions
    uniform and independent."""
    u = KeyedStream(seed_material, n_terms + 1, purpose=purpose).uniform(clients, 0)  # [N+1, m]
    strata = (np.arange(n_terms, dtype=float)[:, None] + u[:1]) / n_terms  # [N, m] in [0, 1)
    tail = 1.0 - strata
    kappa = np.sqrt(np.maximum(1.0 / (tail * tail) - 1.0, 0.0))
    np.minimum(kappa, KAPPA_MAX, out=kappa)
    ang = u[1:] * _TWO_PI
    return (kappa * np.cos(ang)).T.copy(), (kappa * np.sin(ang)).T.copy()  # [m, N] each


def field_coefficients(seed_material, clients, n_rows: int, n_terms: int = N_FIELD_TERMS,
                       purpose: int = 0) -> np.ndarray:
    """[m, n_rows, 2N] coefficients (a_n then b_n), each N(0, 1/N): the field of every row
    is exactly N(0, 1) at any point."""
    clients = np.asarray(clients, dtype=np.int64)
    re, im = KeyedStream(seed_material, n_rows * n_terms, purpose=purpose).complex_normal(clients, 0)
    s = np.sqrt(2.0 / n_terms)  # complex_normal: variance 1/2 per part
    q = np.empty((clients.size, n_rows, 2 * n_terms))
    q[:, :, :n_terms] = (re * s).T.reshape(clients.size, n_rows, n_terms)
    q[:, :, n_terms:] = (im * s).T.reshape(clients.size, n_rows, n_terms)
    return q


def field_basis(kx: np.ndarray, ky: np.ndarray, xy: np.ndarray, scale_m: float) -> np.ndarray:
    """[m, 2N, W] basis (cos then sin of κ·p/d) at positions ``xy`` [W, m, 2] (m) for the
    correlation distance ``scale_m``."""
    inv = 1.0 / float(scale_m)
    x = xy[:, :, 0].T[:, None, :]  # [m, 1, W]
    y = xy[:, :, 1].T[:, None, :]
    theta = (kx * inv)[:, :, None] * x  # [m, N, W]
    theta += (ky * inv)[:, :, None] * y
    n = kx.shape[1]
    out = np.empty((kx.shape[0], 2 * n, xy.shape[0]))
    cos_sin_into(theta, out[:, :n], out[:, n:])
    return out


class ParamCache:
    """Per-client parameters (arrays whose first axis is the client), kept for the most
    recently used ``capacity`` clients in preallocated arrays: they are pure functions of
    (seed, client), so a cache changes no value, only the cost of the keyed draws. Not
    written to checkpoints (:meth:`__getstate__`): a resumed run draws them again, to the
    same bits."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = int(capacity)

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def get(self, clients: np.ndarray, make) -> tuple:
        """``make(ids)`` (a tuple of arrays [len(ids), ...]) for ``clients``, from the cache
        where possible."""
        rowof = self.__dict__.get("_rowof")
        top = int(clients.max()) + 1 if clients.size else 0
        if rowof is None or rowof.size < top:  # client -> row of the arrays (−1: none)
            grown = np.full(max(top, 2 * (0 if rowof is None else rowof.size)), -1, dtype=np.int64)
            if rowof is None:
                self._arrays = None
                self._owner = np.full(self.capacity, -1, dtype=np.int64)
                self._next = 0
            else:
                grown[: rowof.size] = rowof
            rowof = self._rowof = grown
        rows = rowof[clients]
        missing = np.flatnonzero(rows < 0)
        if not missing.size and self._arrays is not None:
            return tuple(a[rows] for a in self._arrays)
        if missing.size == clients.size and (clients.size > self.capacity // 2 or not clients.size):
            return make(clients)  # a large batch of new clients: not worth keeping
        ids = clients[missing]
        fresh = make(ids)
        if self._arrays is None:
            self._arrays = tuple(np.empty((self.capacity,) + a.shape[1:], dtype=a.dtype) for a in fresh)
        # the cached clients' rows are read before the new ones take the oldest rows (which
        # may be theirs)
        out = tuple(a[rows] for a in self._arrays)
        for o, a in zip(out, fresh):
            o[missing] = a
        keep = missing.size if missing.size <= self.capacity else self.capacity
        ids, fresh = ids[-keep:], tuple(a[-keep:] for a in fresh)
        new_rows = (self._next + np.arange(keep)) % self.capacity  # a ring: the oldest go
        self._next = int(new_rows[-1] + 1) % self.capacity
        old = self._owner[new_rows]
        rowof[old[old >= 0]] = -1
        self._owner[new_rows] = ids
        rowof[ids] = new_rows
        for dst, a in zip(self._arrays, fresh):
            dst[new_rows] = a
        return out

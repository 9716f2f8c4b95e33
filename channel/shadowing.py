"""Log-normal shadowing, spatially correlated along each client's path.

Gudmundson's model (Electronics Letters 27(23), 1991; the exponential autocorrelation
TR 38.901 §7.5/§7.6.3 uses for large-scale parameters): the shadowing of a link seen by a
client that moved Δd metres is

    s' = ρ s + sqrt(1 − ρ²) σ z,    ρ = exp(−Δd / d_corr),  z ~ N(0, 1),

a stationary Gaussian process with standard deviation σ and autocorrelation
exp(−|Δd| / d_corr). The state is kept in units of σ (a unit-variance process u with
s = σ·u), so σ may change per link over time (e.g. a LOS/NLOS switch swaps the table's
σ_SF) without breaking stationarity. Links of different BSs (sites) are independent; the
inter-site correlation of TR 38.901 is not modelled.

Clients are independent: :meth:`CorrelatedShadowing.advance` accepts ``cols`` (client
indices) to move only those clients, and the random numbers are counter-based
(:mod:`channel._keyed`): the innovation of client u at its j-th move is a fixed function of
(seed, u, j, BS), whichever other clients move with it.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_nonnegative, check_positive, child_rng, per_client
from ._keyed import KeyedStream

__all__ = ["CorrelatedShadowing"]


class CorrelatedShadowing:
    """Per-link correlated log-normal shadowing, [n_bs, n_ue].

    Args:
        std_db: σ, dB; scalar or broadcastable to [n_bs, n_ue] (e.g. per-link LOS/NLOS σ_SF
            of TR 38.901 Table 7.4.1-1). Stored as a [n_bs, n_ue] array ``std_db``.
        decorrelation_m: d_corr, m; scalar or broadcastable to [n_bs, n_ue] (TR 38.901
            Table 7.5-6 Part-1: UMa 37/50, UMi 10/13, RMa 37/120, InH 10/6 m LOS/NLOS).
        n_bs, n_ue: link array shape.
        rng: generator; the model owns a child of it, and ``reset()`` replays the same
            realisation.

    The initial state is drawn from the stationary distribution N(0, σ²).
    """

    def __init__(self, std_db, decorrelation_m, n_bs: int, n_ue: int, rng: np.random.Generator) -> None:
        self.n_bs, self.n_ue = int(n_bs), int(n_ue)
        self._seed = child_rng(rng, "CorrelatedShadowing")
        self.set_std_db(std_db)
        self.set_decorrelation_m(decorrelation_m)
        self._bufs: dict = {}
        self.reset()

    # -- parameters --------------------------------------------------------------------
    def set_std_db(self, std_db, cols=None) -> None:
        """Set σ (dB): scalar or broadcastable to [n_bs, n_ue]; with ``cols`` (client
        indices) only those columns change and ``std_db`` is [n_bs, len(cols)]."""
        s = check_nonnegative(std_db, "std_db", "CorrelatedShadowing")
        if cols is None:
            self.std_db = np.array(np.broadcast_to(s, (self.n_bs, self.n_ue)), dtype=float)
        else:
            self.std_db[:, cols] = s

    def set_decorrelation_m(self, decorrelation_m, cols=None) -> None:
        """Set d_corr (m): scalar or broadcastable to [n_bs, n_ue]; with ``cols`` only those
        client columns change (``decorrelation_m`` is then [n_bs, len(cols)])."""
        d = check_positive(decorrelation_m, "decorrelation_m", "CorrelatedShadowing")
        if cols is None:
            if np.ndim(d) == 0:
                self._inv_dc = 1.0 / float(d)
            else:
                self._inv_dc = 1.0 / np.array(np.broadcast_to(d, (self.n_bs, self.n_ue)), dtype=float)
            return
        if np.ndim(self._inv_dc) == 0:
            self._inv_dc = np.full((self.n_bs, self.n_ue), self._inv_dc)
        self._inv_dc[:, cols] = 1.0 / np.asarray(d, dtype=float)

    @property
    def decorrelation_m(self):
        """d_corr, m: a float or a [n_bs, n_ue] array."""
        return 1.0 / self._inv_dc

    # -- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial state; the same draws follow."""
        self._draw = KeyedStream(self._seed, self.n_bs)
        self._bufs: dict = {}
        self._moves = np.zeros(self.n_ue, dtype=np.int64)  # moves of each client so far
        self._u = self._draw.normal(np.arange(self.n_ue), 0)  # unit-variance state [n_bs, n_ue]

    @property
    def unit_state(self) -> np.ndarray:
        """[n_bs, n_ue] float64: the unit-variance process u (shadowing = σ·u). Read-only."""
        v = self._u.view()
        v.flags.writeable = False
        return v

    def advance(self, displacement_m, cols=None) -> None:
        """Move each client by ``displacement_m`` (scalar or per client, m; >= 0).

        Args:
            displacement_m: scalar, (n_ue,), or (m,) with ``cols``.
            cols: None (every client) or (m,) distinct client indices.

        Clients that did not move keep their value (ρ = 1).
        """
        self._advance(displacement_m, cols)

    def _advance(self, displacement_m, cols):
        """:meth:`advance`; returns the new unit state of ``cols`` when all of them moved."""
        every = cols is None
        n = self.n_ue if every else len(cols)
        disp = per_client(displacement_m, n)
        moved = disp > 0.0
        n_moved = int(np.count_nonzero(moved))
        if n_moved == 0:
            return None
        if every and n_moved == self.n_ue:
            self._moves += 1
            self._update(self._u, disp, self._inv_dc, np.arange(self.n_ue), self._moves)
            return None
        if n_moved == n:  # every client of cols moved
            pos = slice(None)
            idx = np.asarray(cols, dtype=np.int64)
        else:
            pos = np.flatnonzero(moved)
            idx = pos if every else np.asarray(cols, dtype=np.int64)[pos]
        inv = self._inv_dc
        if np.ndim(inv) == 2 and inv.shape[1] == self.n_ue:
            inv = inv[:, idx]
        moves = self._moves[idx] + 1
        self._moves[idx] = moves
        u = self._u[:, idx]
        self._update(u, disp[pos], inv, idx, moves)
        self._u[:, idx] = u
        return u if n_moved == n else None

    def _update(self, u, disp, inv_dc, clients, counters) -> None:
        # u <- rho u + sqrt(1 - rho²) z, in place. rho per client (scalar d_corr) or per link.
        z = self._draw.normal(clients, counters)
        if np.ndim(inv_dc) == 0:
            rho = np.exp(-disp * float(inv_dc))  # (k,)
            z *= np.sqrt(1.0 - rho * rho)
        else:
            rho = np.multiply(inv_dc, -disp, out=self._scratch("rho", u.shape))  # [n_bs, k]
            np.exp(rho, out=rho)
            c = np.multiply(rho, rho, out=self._scratch("c", u.shape))
            np.subtract(1.0, c, out=c)
            np.sqrt(c, out=c)
            z *= c
        u *= rho
        u += z

    def _scratch(self, key, shape) -> np.ndarray:
        buf = self._bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = self._bufs[key] = np.empty(shape)
        return buf

    def value_db(self, displacement_m=0.0, cols=None) -> np.ndarray:
        """Advance by ``displacement_m`` (see :meth:`advance`) and return the shadowing.

        Returns:
            [n_bs, n_ue] float64, dB (a new array; positive values are extra loss); with
            ``cols``, [n_bs, m] of those clients.
        """
        if cols is None:
            self.advance(displacement_m)
            return self._u * self.std_db
        u = self._advance(displacement_m, cols)
        if u is None:
            u = self._u[:, cols]
        return u * self.std_db[:, cols]

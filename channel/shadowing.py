"""Log-normal shadowing as a spatially correlated field of position.

Gudmundson's model (Electronics Letters 27(23), 1991; the exponential autocorrelation
TR 38.901 §7.5/§7.6.3 uses for large-scale parameters): the shadowing of a link is σ·u(p),
u a stationary unit-variance Gaussian field of the client's position p with autocorrelation
exp(−|Δp| / d_corr). Here u is a sum of sinusoids (:mod:`channel._sos`): exactly N(0, 1)
at every point, with the exponential correlation over the ensemble (one client's own field
is one realisation of 16 random plane waves); every parameter is a counter-based draw keyed
by (seed, client, BS), so the value is a function of (seed, client, link, position) alone —
the same whichever positions were evaluated before, and in any batch (common random
numbers). σ may change per link (e.g. a LOS/NLOS switch swaps the table's σ_SF) without
breaking stationarity. Links of different BSs (sites) are independent; the inter-site
correlation of TR 38.901 is not modelled.

:meth:`CorrelatedShadowing.value_db_at` evaluates the field at positions. The stateful
convenience API (:meth:`CorrelatedShadowing.advance`, :meth:`CorrelatedShadowing.value_db`)
keeps one coordinate per client along a straight path, moved by the displacements given,
for standalone use without positions.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_nonnegative, check_positive, child_rng, per_client
from ._sos import N_FIELD_TERMS, field_basis, field_coefficients, field_wavevectors

__all__ = ["CorrelatedShadowing"]


class CorrelatedShadowing:
    """Per-link spatially correlated log-normal shadowing, [n_bs, n_ue].

    Args:
        std_db: σ, dB; scalar or broadcastable to [n_bs, n_ue] (e.g. per-link LOS/NLOS σ_SF
            of TR 38.901 Table 7.4.1-1). Stored as a [n_bs, n_ue] array ``std_db``.
        decorrelation_m: d_corr, m; scalar or broadcastable to [n_bs, n_ue] (TR 38.901
            Table 7.5-6 Part-1: UMa 37/50, UMi 10/13, RMa 37/120, InH 10/6 m LOS/NLOS).
        n_bs, n_ue: link array shape.
        rng: generator; the model owns a child of it, and ``reset()`` replays the same
            realisation.
        n_terms: sinusoids per field.
    """

    def __init__(self, std_db, decorrelation_m, n_bs: int, n_ue: int, rng: np.random.Generator,
                 n_terms: int = N_FIELD_TERMS) -> None:
        self.n_bs, self.n_ue = int(n_bs), int(n_ue)
        self.n_terms = int(n_terms)
        self._seed = child_rng(rng, "CorrelatedShadowing")
        self.set_std_db(std_db)
        self.set_decorrelation_m(decorrelation_m)
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
            self._dc = np.array(np.broadcast_to(d, (self.n_bs, self.n_ue)), dtype=float)
        else:
            self._dc[:, cols] = d
        if hasattr(self, "_u"):  # the clients' values follow the new distances
            ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
            self._u[:, ids] = self._unit(ids, self._path_xy(ids))

    @property
    def decorrelation_m(self) -> np.ndarray:
        """d_corr, m: [n_bs, n_ue]."""
        return self._dc.copy()

    # -- the field -----------------------------------------------------------------------
    def unit_at(self, xy_m, cols=None) -> np.ndarray:
        """The unit-variance field u of clients ``cols`` (default all) at positions
        ``xy_m`` ((m, 2), m): [n_bs, m] float64 (a function of seed, client, link and
        position only)."""
        ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        return self._unit(ids, np.asarray(xy_m, dtype=float).reshape(ids.size, 2))

    def value_db_at(self, xy_m, cols=None) -> np.ndarray:
        """Shadowing σ·u at positions ``xy_m`` ((m, 2), m) of clients ``cols``: [n_bs, m]
        float64, dB (positive values are extra loss)."""
        ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        return self.unit_at(xy_m, ids) * self.std_db[:, ids]

    def _unit(self, ids: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """[n_bs, m] field values of clients ``ids`` at ``xy`` (m, 2): one basis per
        distinct correlation distance among their links."""
        if ids.size == 0:
            return np.empty((self.n_bs, 0))
        kx, ky = field_wavevectors(self._seed, ids, self.n_terms, purpose=10)
        q = field_coefficients(self._seed, ids, self.n_bs, self.n_terms, purpose=11)  # [m, n_bs, 2N]
        dc = self._dc[:, ids]
        out = np.empty((self.n_bs, ids.size))
        for d in np.unique(dc):
            basis = field_basis(kx, ky, xy[None], d)  # [m, 2N, 1]
            u = np.matmul(q, basis)[:, :, 0].T  # [n_bs, m]
            np.copyto(out, u, where=dc == d)
        return out

    # -- state (the stateful API) ---------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial state; the same values follow."""
        self._path_m = np.zeros(self.n_ue)  # coordinate along each client's path
        self._u = self._unit(np.arange(self.n_ue), self._path_xy(np.arange(self.n_ue)))

    def _path_xy(self, ids) -> np.ndarray:
        xy = np.zeros((len(ids), 2))
        xy[:, 0] = self._path_m[ids]
        return xy

    @property
    def unit_state(self) -> np.ndarray:
        """[n_bs, n_ue] float64: the unit-variance field u at each client's path coordinate
        (shadowing = σ·u). Read-only."""
        v = self._u.view()
        v.flags.writeable = False
        return v

    def advance(self, displacement_m, cols=None) -> None:
        """Move each client by ``displacement_m`` along its path (scalar or per client, m;
        >= 0).

        Args:
            displacement_m: scalar, (n_ue,), or (m,) with ``cols``.
            cols: None (every client) or (m,) distinct client indices.

        Clients that did not move keep their value; a client's value depends only on its
        total travel, not on the steps it took.
        """
        ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        disp = per_client(displacement_m, ids.size)
        moved = disp > 0.0
        if not moved.any():
            return
        who = ids[moved]
        self._path_m[who] += disp[moved]
        self._u[:, who] = self._unit(who, self._path_xy(who))

    def value_db(self, displacement_m=0.0, cols=None) -> np.ndarray:
        """Advance by ``displacement_m`` (see :meth:`advance`) and return the shadowing.

        Returns:
            [n_bs, n_ue] float64, dB (a new array; positive values are extra loss); with
            ``cols``, [n_bs, m] of those clients.
        """
        self.advance(displacement_m, cols)
        if cols is None:
            return self._u * self.std_db
        return self._u[:, cols] * self.std_db[:, cols]

"""Link budget: noise, SINR (downlink and uplink), association with
hysteresis, and rate mapping (Shannon with gap and cap; TS 38.214 CQI tables).

Units: powers in dBm (``*_dbm``) or milliwatts (``*_mw``), gains in dB (``*_db``) or linear,
bandwidth in Hz, rates in bit/s. Link arrays are ``[n_bs, n_ue]``; per-client vectors
``(n_ue,)``. The ``*_linear`` functions are the fast paths (no dB round trip per link).
The dB/dBm/W conversions live in :mod:`channel.units` (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import exp1

from ._checks import check_choice, check_nonnegative, check_positive, check_range, per_client
from .units import db_to_linear, dbm_to_mw, dbm_to_watt, linear_to_db, mw_to_dbm, watt_to_dbm

__all__ = [
    "db_to_linear",
    "linear_to_db",
    "dbm_to_watt",
    "dbm_to_mw",
    "watt_to_dbm",
    "mw_to_dbm",
    "thermal_noise_dbm",
    "rx_power_dbm",
    "sinr_db",
    "downlink_sinr_db",
    "downlink_sinr_linear",
    "uplink_sinr_db",
    "uplink_sinr_linear",
    "Association",
    "CQI_TABLES",
    "OVERHEAD_TS38306",
    "cqi_thresholds_db",
    "cqi_from_sinr_db",
    "cqi_rate_bps",
    "shannon_rate_bps",
    "RateMapper",
    "RATE_MAPPERS",
    "predict_capacity_bits",
]

#: Thermal noise power spectral density at 290 K, dBm/Hz (10·log10(k·290 K·1000)).
THERMAL_NOISE_DBM_PER_HZ = -174.0


def thermal_noise_dbm(bandwidth_hz, noise_figure_db=0.0) -> np.ndarray:
    """Noise power −174 dBm/Hz + 10·log10(B) + NF, dBm (e.g. 20 MHz, NF 9 dB → −92.99 dBm)."""
    b = check_positive(bandwidth_hz, "bandwidth_hz", "thermal_noise_dbm")
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * np.log10(b) + np.asarray(noise_figure_db, dtype=float)


def rx_power_dbm(tx_power_dbm, gain_db) -> np.ndarray:
    """Received power tx + gain, dBm, by numpy broadcasting against ``gain_db`` [n_bs, n_ue].

    Pass per-BS powers as ``(n_bs, 1)`` (downlink) and per-UE powers as ``(n_ue,)`` (uplink).
    """
    return np.asarray(tx_power_dbm, dtype=float) + np.asarray(gain_db, dtype=float)


def _serving(serving, n_bs: int, n_ue: int, owner: str) -> np.ndarray:
    s = np.asarray(serving)
    if s.shape != (n_ue,) or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(
            f"The 'serving' parameter of {owner} must be an integer array of shape ({n_ue},). "
            f"Got {s.dtype} array of shape {s.shape} instead."
        )
    if n_ue and (s.min() < 0 or s.max() >= n_bs):
        bad = s[(s < 0) | (s >= n_bs)][0]
        raise ValueError(
            f"The 'serving' parameter of {owner} must hold BS indices in [0, {n_bs - 1}]. Got {bad} instead."
        )
    return s


def _mask(mask, shape_bs, shape_link, owner, name):
    m = np.asarray(mask, dtype=bool)
    if m.shape not in (shape_bs, shape_link):
        raise ValueError(
            f"The {name!r} parameter of {owner} must have shape {shape_bs} or {shape_link}. "
            f"Got shape {m.shape} instead."
        )
    return m


def downlink_sinr_linear(gain_linear, tx_power_mw, serving, noise_mw, transmitting=None) -> np.ndarray:
    """Downlink SINR, linear, (n_ue,) float64.

    SINR_u = P_s g[s, u] / (Σ_{b ≠ s, b transmitting} P_b g[b, u] + N_u), s = serving[u].

    Args:
        gain_linear: [n_bs, n_ue] float64, linear channel gains (antenna, path loss,
            shadowing, fading).
        tx_power_mw: scalar or (n_bs,), mW — each BS's transmit power over the band.
        serving: (n_ue,) int, serving BS of each client.
        noise_mw: scalar or (n_ue,), mW.
        transmitting: None (all BSs transmit), (n_bs,) bool (active cells), or [n_bs, n_ue]
            bool (which BS interferes with which client, e.g. co-channel allocations).
            The serving BS's power is always the signal.
    """
    g = np.asarray(gain_linear, dtype=float)
    n_bs, n_ue = g.shape
    owner = "downlink_sinr_linear"
    s = _serving(serving, n_bs, n_ue, owner)
    p = per_client(tx_power_mw, n_bs)
    cols = np.arange(n_ue)
    signal = p[s] * g[s, cols]
    if transmitting is None:
        total = p @ g  # (n_ue,), BLAS: no [n_bs, n_ue] temporary
        own = signal
    else:
        m = _mask(transmitting, (n_bs,), (n_bs, n_ue), owner, "transmitting")
        if m.ndim == 1:
            total = (p * m) @ g
        else:
            total = np.einsum("b,bu,bu->u", p, g, m)
        own = signal * m[s] if m.ndim == 1 else signal * m[s, cols]
    interference = np.maximum(total - own, 0.0)
    return signal / (interference + noise_mw)


def downlink_sinr_db(gain_db, tx_power_dbm, serving, noise_dbm, transmitting=None) -> np.ndarray:
    """Downlink SINR in dB, (n_ue,): :func:`downlink_sinr_linear` with dB/dBm inputs.

    Args:
        gain_db: [n_bs, n_ue] dB.  tx_power_dbm: scalar or (n_bs,), dBm.
        serving: (n_ue,) int.  noise_dbm: scalar or (n_ue,), dBm.
        transmitting: None, (n_bs,) bool or [n_bs, n_ue] bool (see the linear version).
    """
    return linear_to_db(
        downlink_sinr_linear(
            db_to_linear(gain_db), db_to_linear(tx_power_dbm), serving, db_to_linear(noise_dbm), transmitting
        )
    )


def sinr_db(rx_power_dbm, serving, interferer_mask, noise_dbm) -> np.ndarray:
    """SINR in dB, (n_ue,), from received powers.

    Args:
        rx_power_dbm: [n_bs, n_ue], dBm — power each BS's transmission arrives with.
        serving: (n_ue,) int.
        interferer_mask: None (every other BS interferes), (n_bs,) bool (BSs that are
            transmitting) or [n_bs, n_ue] bool (per link).
        noise_dbm: scalar or (n_ue,), dBm.
    """
    return linear_to_db(
        downlink_sinr_linear(db_to_linear(rx_power_dbm), 1.0, serving, db_to_linear(noise_dbm), interferer_mask)
    )


def uplink_sinr_linear(
    gain_linear, tx_power_mw, serving, transmitting, noise_mw, interference_weight=None
) -> np.ndarray:
    """Uplink SINR at each client's serving BS, linear, (n_ue,) float64.

    SINR_u = P_u g[s_u, u] / (Σ_{v transmitting, s_v ≠ s_u} w_v P_v g[s_u, v] + N_u).

    Clients of the same cell are orthogonal (OFDMA); every transmitting client of another
    cell interferes, scaled by ``interference_weight`` w_v (default 1 — full-band
    transmitters; with equal-share FDMA among K_c clients of cell c, w_v = 1/K_c gives the
    average interference on a subband). The signal term is computed for every client,
    transmitting or not (the SINR it would get).

    Args:
        gain_linear: [n_bs, n_ue] float64, linear.
        tx_power_mw: scalar or (n_ue,), mW.
        serving: (n_ue,) int.
        transmitting: (n_ue,) bool.
        noise_mw: scalar or (n_ue,), mW (noise at the serving BS over the client's band).
        interference_weight: None or (n_ue,) float >= 0.
    """
    g = np.asarray(gain_linear, dtype=float)
    n_bs, n_ue = g.shape
    owner = "uplink_sinr_linear"
    s = _serving(serving, n_bs, n_ue, owner)
    tx = np.asarray(transmitting, dtype=bool)
    if tx.shape != (n_ue,):
        raise ValueError(
            f"The 'transmitting' parameter of {owner} must have shape ({n_ue},). Got shape {tx.shape} instead."
        )
    p = per_client(tx_power_mw, n_ue)
    cols = np.arange(n_ue)
    g_serv = g[s, cols]
    signal = p * g_serv
    w = p * tx
    if interference_weight is not None:
        w = w * check_nonnegative(np.broadcast_to(interference_weight, (n_ue,)), "interference_weight", owner)
    idx = np.flatnonzero(w > 0.0)
    interference = uplink_interference_mw(g[:, idx], w[idx], s[idx])[s]
    return signal / (interference + noise_mw)


def uplink_interference_mw(gain_linear, tx_power_mw, serving) -> np.ndarray:
    """Uplink co-channel interference at each BS, mW, (n_bs,) float64.

    I_b = Σ_{v: s_v ≠ b} P_v g[b, v] over the transmitting clients v given (clients of a
    cell are orthogonal, OFDMA, so a cell's own transmitters do not count at its BS). A
    client served by b then has SINR P_u g[b, u] / (I_b + N): this is the part of
    :func:`uplink_sinr_linear` that depends on the transmitters only, for callers that
    evaluate clients in batches against one set of transmitters.

    Args:
        gain_linear: [n_bs, n_tx] float64, linear gains of the transmitters.
        tx_power_mw: (n_tx,) mW (interference weights included).
        serving: (n_tx,) int, their serving BSs.
    """
    g = np.asarray(gain_linear, dtype=float)
    n_bs, n_tx = g.shape
    if n_tx == 0:
        return np.zeros(n_bs)
    w = np.asarray(tx_power_mw, dtype=float)
    s = np.asarray(serving, dtype=np.int64)
    total_at_bs = g @ w  # (n_bs,): power from all transmitters at each BS
    own_at_bs = np.bincount(s, weights=g[s, np.arange(n_tx)] * w, minlength=n_bs)
    return np.maximum(total_at_bs - own_at_bs, 0.0)


def uplink_sinr_db(gain_db, tx_power_dbm, serving, transmitting, noise_dbm, interference_weight=None) -> np.ndarray:
    """Uplink SINR in dB, (n_ue,): :func:`uplink_sinr_linear` with dB/dBm inputs.

    Args:
        gain_db: [n_bs, n_ue], dB.  tx_power_dbm: scalar or (n_ue,), dBm.
        serving: (n_ue,) int.  transmitting: (n_ue,) bool.  noise_dbm: scalar or (n_ue,), dBm.
    """
    return linear_to_db(
        uplink_sinr_linear(
            db_to_linear(gain_db),
            db_to_linear(tx_power_dbm),
            serving,
            transmitting,
            db_to_linear(noise_dbm),
            interference_weight,
        )
    )


# ----------------------------------------------------------------------------------------
# Association
# ----------------------------------------------------------------------------------------


class Association:
    """Serving-cell selection by strongest RSRP with hysteresis and time-to-trigger.

    A client hands over from its serving BS s to the best BS t when
    RSRP_t > RSRP_s + ``hysteresis_db`` (the A3 condition of TS 38.331 §5.5.4.4 with offset
    = hysteresis) has held for the same target at every update during at least
    ``time_to_trigger_s``. With TTT = 0 the handover happens at the first update that
    meets the condition. Inside the hysteresis band nothing changes (no ping-pong).

    Clients are independent: :meth:`update` with ``cols`` updates only those clients (a
    client first seen attaches to its strongest BS); the rule then counts that client's
    own updates.

    Args:
        hysteresis_db: >= 0, dB.
        time_to_trigger_s: >= 0, s.
        n_ue: number of clients; needed only for :meth:`update` with ``cols`` (otherwise
            the first call's RSRP gives it).
    """

    def __init__(self, hysteresis_db: float = 3.0, time_to_trigger_s: float = 0.0, n_ue: int | None = None) -> None:
        self.hysteresis_db = check_nonnegative(hysteresis_db, "hysteresis_db", "Association")
        self.time_to_trigger_s = check_nonnegative(time_to_trigger_s, "time_to_trigger_s", "Association")
        self.n_ue = None if n_ue is None else int(n_ue)
        self.reset()

    def reset(self) -> None:
        self._serving = None
        self._candidate = None
        self._since = None
        self._t = -np.inf

    @property
    def serving(self) -> np.ndarray | None:
        """(n_ue,) int64, current serving BS (a copy; −1 for clients not attached yet), or
        None before the first call."""
        return None if self._serving is None else self._serving.copy()

    def _allocate(self, n_ue: int) -> None:
        self._serving = np.full(n_ue, -1, dtype=np.int64)
        self._candidate = np.full(n_ue, -1, dtype=np.int64)
        self._since = np.zeros(n_ue)

    def initial(self, rsrp_dbm) -> np.ndarray:
        """Attach every client to its strongest BS (ties: lowest index). Returns (n_ue,) int64."""
        r = np.asarray(rsrp_dbm, dtype=float)
        if r.ndim != 2:
            raise ValueError(
                f"The 'rsrp_dbm' parameter of Association must have shape (n_bs, n_ue). Got shape {r.shape} instead."
            )
        self._allocate(r.shape[1])
        self._serving[:] = np.argmax(r, axis=0)
        return self._serving.copy()

    def update(self, t_s: float, rsrp_dbm, cols=None) -> tuple[np.ndarray, np.ndarray]:
        """Apply the handover rule at time ``t_s`` (non-decreasing across calls).

        Args:
            t_s: simulated time, s.
            rsrp_dbm: [n_bs, n_ue], dBm; with ``cols``, [n_bs, m] for those clients.
            cols: None (every client) or (m,) distinct client indices.

        Returns:
            (serving (n,) int64, handover (n,) bool — True where the serving BS changed),
            n = n_ue or m. The first call without :meth:`initial` attaches by :meth:`initial`
            (no handovers); with ``cols``, clients seen for the first time attach likewise.
        """
        r = np.asarray(rsrp_dbm, dtype=float)
        if cols is None and self._serving is None:
            self._t = float(t_s)
            s = self.initial(r)
            return s, np.zeros(s.shape, dtype=bool)
        if cols is not None and self._serving is None:
            if self.n_ue is None:
                raise ValueError(
                    "Association.update with 'cols' needs the number of clients: pass n_ue to "
                    "Association(...) or call initial() first."
                )
            self._allocate(self.n_ue)
        n_cols = self._serving.shape[0] if cols is None else len(cols)
        if r.ndim != 2 or r.shape[1] != n_cols:
            raise ValueError(
                f"The 'rsrp_dbm' parameter of Association.update must have {n_cols} "
                f"columns (clients). Got shape {r.shape} instead."
            )
        if t_s < self._t:
            raise ValueError(
                f"The 't_s' parameter of Association.update must not decrease. Got {t_s:g} after {self._t:g} instead."
            )
        self._t = float(t_s)
        ids = slice(None) if cols is None else np.asarray(cols, dtype=np.int64)
        serving, cand, since = self._serving[ids], self._candidate[ids], self._since[ids]
        idx = np.arange(n_cols)
        best = np.argmax(r, axis=0)
        new = serving < 0  # first seen: attach, no handover
        if np.count_nonzero(new):
            serving = np.where(new, best, serving)
        better = r[best, idx] > r[serving, idx] + self.hysteresis_db
        if not np.count_nonzero(better):  # the usual case: nobody is a candidate, nothing fires
            self._serving[ids] = serving
            self._candidate[ids] = -1
            return serving.copy(), better
        new_cand = better & (best != cand)
        since = np.where(new_cand, t_s, since)
        cand = np.where(better, best, -1)
        fire = better & (t_s - since >= self.time_to_trigger_s)
        serving = np.where(fire, best, serving)
        cand[fire] = -1
        self._serving[ids], self._candidate[ids], self._since[ids] = serving, cand, since
        return serving.copy(), fire

    def forget_candidates(self, cols, t_s: float) -> None:
        """What :meth:`update` (or :meth:`scan`) does for clients ``cols`` (attached) when
        no cell beats their serving cell by the hysteresis at ``t_s``: drop their handover
        candidates (a time-to-trigger restarts)."""
        self._candidate[np.asarray(cols, dtype=np.int64)] = -1
        self._t = max(self._t, float(t_s))

    def scan(self, t_s, rsrp_dbm, cols, start=None, commit: bool = True):
        """:meth:`update` at each of K times in one vectorised call (what K successive calls
        give, bit for bit in the serving cells).

        Args:
            t_s: (K,) ascending times, s (each client's updates must stay in time order:
                the caller's duty here, as clients may be at different times).
            rsrp_dbm: [K, n_bs, m] dBm of clients ``cols`` at those times.
            cols: (m,) distinct client indices (requires ``n_ue``).
            start: (m,) int, the first of the K updates that applies to each client
                (default 0): earlier ones are skipped for it.
            commit: False to leave the state as it was (a look-ahead).

        Returns:
            (serving [K, m] int64 after each update (before ``start``: the state before),
            handover [K, m] bool).
        """
        t = np.asarray(t_s, dtype=float)
        r = np.asarray(rsrp_dbm, dtype=float)
        cols = np.asarray(cols, dtype=np.int64)
        k_n, m = t.size, cols.size
        if self._serving is None:
            if self.n_ue is None:
                raise ValueError("Association.scan needs the number of clients: pass n_ue to Association(...).")
            self._allocate(self.n_ue)
        if r.shape[0] != k_n or r.ndim != 3 or r.shape[2] != m:
            raise ValueError(f"The 'rsrp_dbm' parameter of Association.scan must have shape ({k_n}, n_bs, {m}). "
                             f"Got shape {r.shape} instead.")
        s0 = np.zeros(m, dtype=np.int64) if start is None else np.asarray(start, dtype=np.int64).copy()
        serving = self._serving[cols].copy()
        cand = self._candidate[cols].copy()
        since = self._since[cols].copy()
        serv_out = np.empty((k_n, m), dtype=np.int64)
        fired = np.zeros((k_n, m), dtype=bool)
        best = np.argmax(r, axis=1)  # [K, m]
        v_best = np.take_along_axis(r, best[:, None, :], axis=1)[:, 0, :]
        kk = np.arange(k_n)[:, None]
        col = np.arange(m)
        new = (serving < 0) & (s0 < k_n)  # first seen: attach at the first update, no handover
        if new.any():
            i = np.flatnonzero(new)
            serving[i] = best[s0[i], i]
            cand[i] = -1
            s0[i] += 1
        todo = s0 < k_n
        serv_out[:] = serving
        while todo.any():
            v_serv = r[:, serving, col]  # [K, m] RSRP of the current serving cell
            better = (v_best > v_serv + self.hysteresis_db) & (kk >= s0)
            cnd = np.where(better, best, -1)
            prev = np.empty_like(cnd)
            prev[1:] = cnd[:-1]
            prev[0] = cand
            prev = np.where(kk == s0, cand, prev)  # each client's first update sees its state
            newstart = (cnd >= 0) & (cnd != prev)
            last = np.maximum.accumulate(np.where(newstart, kk, -1), axis=0)
            since_k = np.where(last >= 0, t[np.maximum(last, 0)], since)
            fire = (cnd >= 0) & (t[:, None] - since_k >= self.time_to_trigger_s) & todo
            any_fire = fire.any(axis=0)
            first = np.where(any_fire, np.argmax(fire, axis=0), k_n)
            # clients with no fire end with the last update's candidate
            quiet = todo & ~any_fire
            if quiet.any():
                q = np.flatnonzero(quiet)
                cand[q] = cnd[k_n - 1, q]
                since[q] = since_k[k_n - 1, q]
                todo[q] = False
            f = np.flatnonzero(any_fire & todo)
            if f.size:
                k_f = first[f]
                old = serving[f]
                serving[f] = best[k_f, f]
                fired[k_f, f] = True
                cand[f] = -1
                since[f] = since_k[k_f, f]
                for i, kf, o in zip(f.tolist(), k_f.tolist(), old.tolist()):
                    serv_out[kf:, i] = serving[i]
                s0[f] = k_f + 1
                todo[f] = s0[f] < k_n
        if commit and k_n:
            self._serving[cols], self._candidate[cols], self._since[cols] = serving, cand, since
            self._t = max(self._t, float(t[-1]))
        return serv_out, fired


# ----------------------------------------------------------------------------------------
# Rate mapping
# ----------------------------------------------------------------------------------------

#: TS 38.214 Table 5.2.2.1-2 (4-bit CQI Table 1, up to 64QAM) and Table 5.2.2.1-3
#: (CQI Table 2, up to 256QAM): rows CQI 0..15 of (modulation order Qm, code rate × 1024,
#: spectral efficiency in bit/s/Hz). CQI 0 is "out of range".
CQI_TABLES: dict[str, np.ndarray] = {
    "64qam": np.array(
        [
            [0, 0, 0.0],
            [2, 78, 0.1523],
            [2, 120, 0.2344],
            [2, 193, 0.3770],
            [2, 308, 0.6016],
            [2, 449, 0.8770],
            [2, 602, 1.1758],
            [4, 378, 1.4766],
            [4, 490, 1.9141],
            [4, 616, 2.4063],
            [6, 466, 2.7305],
            [6, 567, 3.3223],
            [6, 666, 3.9023],
            [6, 772, 4.5234],
            [6, 873, 5.1152],
            [6, 948, 5.5547],
        ]
    ),
    "256qam": np.array(
        [
            [0, 0, 0.0],
            [2, 78, 0.1523],
            [2, 193, 0.3770],
            [2, 449, 0.8770],
            [4, 378, 1.4766],
            [4, 490, 1.9141],
            [4, 616, 2.4063],
            [6, 466, 2.7305],
            [6, 567, 3.3223],
            [6, 666, 3.9023],
            [6, 772, 4.5234],
            [6, 873, 5.1152],
            [8, 711, 5.5547],
            [8, 797, 6.2266],
            [8, 885, 6.9141],
            [8, 948, 7.4063],
        ]
    ),
}
for _t in CQI_TABLES.values():
    _t.flags.writeable = False

#: Overhead fractions OH of the TS 38.306 §4.1.2 peak-rate formula (control, reference
#: signals): a ready-made value for the ``overhead`` parameters below.
OVERHEAD_TS38306 = {"fr1_dl": 0.14, "fr1_ul": 0.08, "fr2_dl": 0.18, "fr2_ul": 0.10}


def _table(table: str, owner: str) -> np.ndarray:
    check_choice(table, "table", owner, tuple(CQI_TABLES))
    return CQI_TABLES[table]


def cqi_thresholds_db(table: str = "64qam", gap_db: float = 0.0) -> np.ndarray:
    """SINR thresholds of CQI 1..15, dB, (15,) float64.

    Rule: CQI q is usable when a link with SNR gap Γ reaches its spectral efficiency η_q,
    i.e. log2(1 + SINR/Γ) >= η_q, so SINR_th(q) = Γ_dB + 10·log10(2^η_q − 1). With
    ``gap_db = 0`` the thresholds are the Shannon bound (the lowest SINR at which any code
    could carry η_q); an implementation gap of 1.5–3 dB reproduces typical 10 % BLER link
    curves of LDPC-coded NR. The rule keeps the CQI rate at or below the gap-Shannon rate
    at every SINR, a property the tests pin.
    """
    eff = _table(table, "cqi_thresholds_db")[1:, 2]
    return float(gap_db) + 10.0 * np.log10(np.exp2(eff) - 1.0)


def cqi_from_sinr_db(sinr_db, table: str = "64qam", gap_db: float = 0.0) -> np.ndarray:
    """Highest CQI whose threshold the SINR reaches; 0 (out of range) below CQI 1.

    Returns int64 array of the shape of ``sinr_db``.
    """
    th = cqi_thresholds_db(table, gap_db)
    return np.searchsorted(th, np.asarray(sinr_db, dtype=float), side="right").astype(np.int64)


def cqi_rate_bps(sinr_db, bandwidth_hz, table: str = "64qam", overhead: float = 0.0, gap_db: float = 0.0) -> np.ndarray:
    """Rate (1 − overhead)·B·η[CQI(SINR)], bit/s; 0 (outage) below CQI 1.

    Args:
        sinr_db: any shape, dB.  bandwidth_hz: broadcastable, Hz.
        table: ``"64qam"`` (Table 5.2.2.1-2) or ``"256qam"`` (Table 5.2.2.1-3).
        overhead: fraction in [0, 1) of resources not carrying data (see
            :data:`OVERHEAD_TS38306`).
        gap_db: SNR gap of the threshold rule (:func:`cqi_thresholds_db`).
    """
    owner = "cqi_rate_bps"
    check_range(overhead, "overhead", owner, 0.0, 1.0, hi_open=True)
    eff = _table(table, owner)[:, 2]
    q = cqi_from_sinr_db(sinr_db, table, gap_db)
    return (1.0 - overhead) * np.asarray(bandwidth_hz, dtype=float) * eff[q]


def shannon_rate_bps(sinr_db, bandwidth_hz, gap_db: float = 0.0, max_se_bps_hz: float | None = None) -> np.ndarray:
    """Rate B·min(log2(1 + SINR/Γ), η_max), bit/s.

    Args:
        sinr_db: any shape, dB.  bandwidth_hz: broadcastable, Hz.
        gap_db: SNR gap Γ, dB (0 = Shannon capacity).
        max_se_bps_hz: spectral-efficiency cap η_max, bit/s/Hz (None = no cap; 7.4063 is
            the top of the 256QAM CQI table).
    """
    se = np.log2(1.0 + db_to_linear(np.asarray(sinr_db, dtype=float) - gap_db))
    if max_se_bps_hz is not None:
        se = np.minimum(se, check_positive(max_se_bps_hz, "max_se_bps_hz", "shannon_rate_bps"))
    return np.asarray(bandwidth_hz, dtype=float) * se


def _exp_e1(x):
    """e^x·E1(x) for x > 0, overflow-free (asymptotic series beyond 700)."""
    x = np.asarray(x, dtype=float)
    small = np.minimum(x, 700.0)
    direct = np.exp(small) * exp1(small)
    xi = 1.0 / np.maximum(x, 1.0)
    asym = xi * (1.0 - xi + 2.0 * xi**2 - 6.0 * xi**3 + 24.0 * xi**4)
    return np.where(x > 700.0, asym, direct)


@dataclass(frozen=True)
class RateMapper:
    """SINR → rate, by ``kind``: ``"shannon"`` (gap and cap) or ``"cqi"`` (TS 38.214 table).

    Args:
        kind: ``"shannon"`` or ``"cqi"``.
        gap_db: SNR gap (Shannon formula, and CQI thresholds: :func:`cqi_thresholds_db`).
        max_se_bps_hz: Shannon cap, bit/s/Hz (ignored by ``"cqi"``, whose table caps it).
        table: ``"64qam"`` or ``"256qam"`` (``"cqi"`` only).
        overhead: fraction of resources not carrying data, applied to both kinds.
    """

    kind: str = "shannon"
    gap_db: float = 0.0
    max_se_bps_hz: float | None = None
    table: str = "256qam"
    overhead: float = 0.0

    def __post_init__(self):
        check_choice(self.kind, "kind", "RateMapper", tuple(RATE_MAPPERS))
        check_choice(self.table, "table", "RateMapper", tuple(CQI_TABLES))
        check_range(self.overhead, "overhead", "RateMapper", 0.0, 1.0, hi_open=True)
        check_range(self.gap_db, "gap_db", "RateMapper", -np.inf, np.inf, lo_open=True, hi_open=True)
        if self.max_se_bps_hz is not None:
            check_positive(self.max_se_bps_hz, "max_se_bps_hz", "RateMapper")

    def spectral_efficiency(self, sinr_db) -> np.ndarray:
        """bit/s/Hz after overhead, shape of ``sinr_db``."""
        if self.kind == "shannon":
            se = shannon_rate_bps(sinr_db, 1.0, self.gap_db, self.max_se_bps_hz)
        else:
            se = cqi_rate_bps(sinr_db, 1.0, self.table, 0.0, self.gap_db)
        return (1.0 - self.overhead) * se

    def rate_bps(self, sinr_db, bandwidth_hz) -> np.ndarray:
        """Rate, bit/s (shape of ``sinr_db`` broadcast with ``bandwidth_hz``)."""
        return np.asarray(bandwidth_hz, dtype=float) * self.spectral_efficiency(sinr_db)

    def rate_from_linear_bps(self, sinr_linear, bandwidth_hz) -> np.ndarray:
        """Rate from a linear SINR, bit/s (the Shannon fast path avoids the dB round trip)."""
        if self.kind == "shannon":
            se = np.log2(1.0 + np.asarray(sinr_linear, dtype=float) * 10.0 ** (-self.gap_db / 10.0))
            if self.max_se_bps_hz is not None:
                np.minimum(se, self.max_se_bps_hz, out=se)
            return np.asarray(bandwidth_hz, dtype=float) * (1.0 - self.overhead) * se
        return self.rate_bps(linear_to_db(sinr_linear), bandwidth_hz)

    @property
    def min_sinr_db(self) -> float:
        """Lowest SINR with a non-zero rate, dB (−inf for Shannon: no outage)."""
        if self.kind == "shannon":
            return -np.inf
        return float(cqi_thresholds_db(self.table, self.gap_db)[0])

    def mean_rate_rayleigh_bps(self, mean_sinr_db, bandwidth_hz) -> np.ndarray:
        """Expected rate when the SINR is mean_sinr·X with X ~ Exp(1) (Rayleigh fading), bit/s.

        Shannon with gap Γ and cap C (a = mean_sinr/Γ, x_c = (2^C − 1)/a):
        E = [e^{1/a} E1(1/a) − e^{−x_c} e^{1/a + x_c} E1(1/a + x_c)] / ln 2 (closed form;
        x_c = ∞ without a cap). CQI: Σ_q η_q (e^{−th_q/s} − e^{−th_{q+1}/s}).
        """
        s = db_to_linear(mean_sinr_db)
        if self.kind == "shannon":
            a = s * 10.0 ** (-self.gap_db / 10.0)
            inv = 1.0 / a
            se = _exp_e1(inv)
            if self.max_se_bps_hz is not None:
                xc = (2.0**self.max_se_bps_hz - 1.0) * inv
                se = se - np.exp(-xc) * _exp_e1(inv + xc)
            se = se / math.log(2.0)
        else:
            th = db_to_linear(cqi_thresholds_db(self.table, self.gap_db))  # (15,)
            eff = CQI_TABLES[self.table][1:, 2]
            p_ge = np.exp(-th / np.asarray(s, dtype=float)[..., None])  # P(CQI >= q)
            p_next = np.concatenate([p_ge[..., 1:], np.zeros(p_ge.shape[:-1] + (1,))], axis=-1)
            se = ((p_ge - p_next) * eff).sum(axis=-1)
        return np.asarray(bandwidth_hz, dtype=float) * (1.0 - self.overhead) * se


#: Rate mappings by the name scenario YAML uses (``kind`` of :class:`RateMapper`).
RATE_MAPPERS = {"shannon": shannon_rate_bps, "cqi": cqi_rate_bps}


def predict_capacity_bits(rate_bps, horizon_s, mean_rate_bps=None, correlation_time_s=None) -> np.ndarray:
    """Expected bits a link carries over ``horizon_s`` from now.

    Estimator: the rate relaxes from its current value r₀ to its mean r̄ with an exponential
    correlation of time constant τ (``correlation_time_s``, e.g. the coherence time
    :func:`channel.fading.coherence_time_s`):
    E[r(t)] = r̄ + (r₀ − r̄)·e^{−t/τ}, whose integral over [0, H] is

        bits = r̄·H + (r₀ − r̄)·τ·(1 − e^{−H/τ}).

    τ → ∞ (static channel) gives r₀·H; τ → 0 (fast fading) gives r̄·H. Without
    ``mean_rate_bps`` or ``correlation_time_s`` the estimate is r₀·H. The mean r̄ can come
    from :meth:`RateMapper.mean_rate_rayleigh_bps` at the large-scale SINR.

    All arguments broadcast (e.g. (n_ue,)); returns float64 bits.
    """
    r0 = np.asarray(rate_bps, dtype=float)
    H = check_nonnegative(horizon_s, "horizon_s", "predict_capacity_bits")
    if mean_rate_bps is None or correlation_time_s is None:
        return r0 * H
    rm = np.asarray(mean_rate_bps, dtype=float)
    tau = np.asarray(correlation_time_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        frac = np.where(
            np.isinf(tau),
            np.asarray(H, dtype=float),
            np.where(tau > 0, tau * -np.expm1(-np.asarray(H) / np.where(tau > 0, tau, 1.0)), 0.0),
        )
    return rm * H + (r0 - rm) * frac

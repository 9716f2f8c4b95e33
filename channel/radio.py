"""RadioChannel: the composite channel the simulator queries every fading block.

gain_db[b, u] = antenna gain of BS b towards client u
              − path loss of the (site of b, u) path for its LOS state
              − correlated shadowing of that path
              + 10·log10 |h[b, u]|² (block fading of the current block)

Gains are piecewise constant over fading blocks [n·block_s, (n+1)·block_s). The first call
for a block computes it from the positions and speeds passed in (pass the positions at the
block's start, :meth:`RadioChannel.block_start_s`, or use
:meth:`RadioChannel.gain_db_for_mobility`); further calls for the same block return the
same array. Blocks must be requested in non-decreasing order.

Client subsets: every output method takes ``ue_index`` (client indices) to compute and
return only those clients' columns. Each client keeps its own state (the block it is at,
its last position, LOS, shadowing, fading), and all random numbers are counter-based
(:mod:`channel._keyed`), so a client's channel evolves identically whether or not other
clients are computed: for the same calls of a client, a subset call returns exactly the
columns the full call returns. A client not requested in some blocks is advanced lazily
when next requested: the fading jumps with the exact multi-block correlation
J0(2π f_D Δt) (see :mod:`channel.fading`), and shadowing and LOS move by the straight-line
displacement since its last evaluation (both are Markov in the distance travelled, so this
is their exact law between the two evaluated positions). Hence a client's realisation
depends on the blocks at which *it* was evaluated, never on other clients.

Per-block work, vectorised over the requested links:

- clients whose position did not change → path loss, LOS and shadowing are reused;
- shadowing and fading draw random numbers only for clients that moved (ρ ≠ 1);
- the LOS state is refreshed per client after ``los_update_m`` of travel (see
  :class:`channel.pathloss.LosState`);
- the dB and linear outputs are produced lazily (one transcendental pass each, only for the
  form requested).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Mapping

import numpy as np

from ._checks import check_choice, check_nonnegative, check_positive, per_client
from .fading import BlockFading, coherence_time_s
from .geometry import Layout, sector_antenna_gain_db
from .link import downlink_sinr_linear, uplink_sinr_linear
from .pathloss import LosState, PathlossModel, make_pathloss
from .shadowing import CorrelatedShadowing

__all__ = ["RadioChannel", "DEFAULT_K_FACTOR_DB", "DEFAULT_BLOCK_S"]

_DB = 10.0 / math.log(10.0)
_INV_DB = 1.0 / _DB

#: Mean Rician K-factor (dB) of LOS links, TR 38.901 Table 7.5-6 (μ_K).
DEFAULT_K_FACTOR_DB = {"uma": 9.0, "umi": 9.0, "rma": 7.0, "inh_office": 7.0}
#: Fading block when none is given: one NR radio frame, 10 ms (TS 38.211 §4.3.1).
DEFAULT_BLOCK_S = 0.01

_FADING_KEYS = {"kind", "k_factor_db", "block_s", "iid", "los_phase", "min_speed_mps"}


class RadioChannel:
    """Composite radio channel for every BS–client link, one fading block at a time.

    Args:
        layout: the base stations (:class:`channel.geometry.Layout`).
        pathloss: a :class:`channel.pathloss.PathlossModel` or its registry name.
        carrier_hz: carrier frequency, Hz (validated against the model at construction).
        ue_height_m: client antenna height, m; scalar or (n_ue,).
        n_ue: number of clients.
        fading: None (no small-scale fading) or a dict with keys ``kind``
            (``"rayleigh"``, ``"rician"``: K on every link, ``"rician_los"``: K on LOS links
            and Rayleigh on NLOS ones), ``k_factor_db`` (default: the scenario's TR 38.901
            mean, :data:`DEFAULT_K_FACTOR_DB`, else 9 dB), ``block_s``, ``iid`` (bool),
            ``los_phase`` (``"random"``/``"zero"``), ``min_speed_mps``.
        shadowing: apply correlated log-normal shadowing with the model's σ_SF and
            correlation distances.
        antenna_max_gain_dbi: G_E,max of sector antennas (TR 38.901 Table 7.3-1); omni BSs
            have 0 dBi.
        rngs: generators by name: ``"los"``, ``"shadowing"``, ``"fading"`` (only those used
            by the configuration are required).
        block_s: fading block duration, s (alternative to ``fading["block_s"]``; default
            :data:`DEFAULT_BLOCK_S`).
        downtilt_deg: electrical downtilt for the vertical antenna pattern (None: horizontal
            pattern only).
        los_update_m: travel after which a client's LOS state is refreshed, m (None: a tenth
            of the model's LOS correlation distance, see :class:`channel.pathloss.LosState`).
        los_mode: ``"random"`` (TR 38.901 LOS probability, spatially consistent),
            ``"los"`` or ``"nlos"`` (force every link).
    """

    def __init__(
        self,
        layout: Layout,
        pathloss: PathlossModel | str,
        carrier_hz: float,
        ue_height_m,
        n_ue: int,
        *,
        fading: Mapping | None = None,
        shadowing: bool = True,
        antenna_max_gain_dbi: float = 8.0,
        rngs: Mapping[str, np.random.Generator],
        block_s: float | None = None,
        downtilt_deg: float | None = None,
        los_update_m: float | None = None,
        los_mode: str = "random",
    ) -> None:
        owner = "RadioChannel"
        if not isinstance(layout, Layout):
            raise TypeError(f"The 'layout' parameter of {owner} must be a Layout. Got {type(layout).__name__} instead.")
        self.layout = layout
        self.pathloss = make_pathloss(pathloss) if isinstance(pathloss, str) else pathloss
        if not isinstance(self.pathloss, PathlossModel):
            raise TypeError(
                f"The 'pathloss' parameter of {owner} must be a PathlossModel or a registry name. "
                f"Got {type(pathloss).__name__} instead."
            )
        self.carrier_hz = check_positive(carrier_hz, "carrier_hz", owner)
        if int(n_ue) != n_ue or n_ue < 1:
            raise ValueError(f"The 'n_ue' parameter of {owner} must be an integer >= 1. Got {n_ue!r} instead.")
        self.n_ue = n = int(n_ue)
        self.n_bs, self.n_site = layout.n_bs, layout.n_site
        h_ut = np.asarray(ue_height_m, dtype=float)
        if h_ut.ndim not in (0, 1) or (h_ut.ndim == 1 and h_ut.shape[0] != n):
            raise ValueError(
                f"The 'ue_height_m' parameter of {owner} must be a scalar or have shape ({n},). "
                f"Got shape {h_ut.shape} instead."
            )
        self.ue_height_m = h_ut
        self.antenna_max_gain_dbi = float(antenna_max_gain_dbi)
        self.downtilt_deg = downtilt_deg
        self.los_mode = check_choice(los_mode, "los_mode", owner, ("random", "los", "nlos"))
        self._sectorised = layout.is_sectorised
        self._site_of_bs = layout.site_of_bs
        # sector gains from the per-site offsets (no tilt, every BS sectorised)
        self._fast_sectors = (self._sectorised and downtilt_deg is None
                              and bool(np.isfinite(layout.bs_azimuth_deg).all()))
        self._az_col = np.asarray(layout.bs_azimuth_deg, dtype=float).reshape(-1, 1)
        site_h = layout.site_height_m
        # the plan validates carrier and heights now, not in simulated hour three
        self.plan = self.pathloss.plan(self.carrier_hz, site_h[:, None], h_ut if h_ut.ndim == 0 else h_ut[None, :])
        self._site_x = np.ascontiguousarray(layout.site_xy_m[:, 0:1])  # [n_site, 1]
        self._site_y = np.ascontiguousarray(layout.site_xy_m[:, 1:2])
        self._warn_range()

        fading = dict(fading) if fading is not None else None
        if fading is not None:
            unknown = set(fading) - _FADING_KEYS
            if unknown:
                raise ValueError(
                    f"The 'fading' parameter of {owner} has unknown keys {sorted(unknown)}. "
                    f"Allowed: {sorted(_FADING_KEYS)}."
                )
        fb = None if fading is None else fading.get("block_s")
        if fb is not None and block_s is not None and float(fb) != float(block_s):
            raise ValueError(
                f"The 'block_s' parameter of {owner} is given twice with different values "
                f"({block_s!r} and fading['block_s']={fb!r}). Give it once."
            )
        self.block_s = check_positive(
            block_s if block_s is not None else (fb if fb is not None else DEFAULT_BLOCK_S), "block_s", owner
        )
        self.los_update_m = None if los_update_m is None else check_nonnegative(los_update_m, "los_update_m", owner)

        has_nlos = self.plan.a3 is not None
        need = []
        if self.los_mode == "random" and has_nlos:
            need.append("los")
        sf_on = bool(shadowing) and max(self.plan.std_los_near_db, self.plan.std_los_far_db, self.plan.std_nlos_db) > 0
        if sf_on:
            need.append("shadowing")
        if fading is not None:
            need.append("fading")
        if not isinstance(rngs, Mapping):
            raise TypeError(
                f"The 'rngs' parameter of {owner} must be a mapping of named generators. Got "
                f"{type(rngs).__name__} instead. Pass e.g. {{'los': g1, 'shadowing': g2, 'fading': g3}}."
            )
        missing = [k for k in need if k not in rngs]
        if missing:
            raise ValueError(
                f"The 'rngs' parameter of {owner} must have keys {need} for this configuration. "
                f"Got keys {sorted(rngs)} instead (missing {missing})."
            )
        self._los_state = (
            LosState(self.pathloss, self.n_site, n, rngs["los"], update_m=self.los_update_m) if "los" in need else None
        )
        self._shadow = None
        if sf_on:
            self._shadow = CorrelatedShadowing(1.0, 1.0, self.n_site, n, rngs["shadowing"])
        self._fading = None
        self._rician_los = False
        if fading is not None:
            kind = check_choice(
                fading.get("kind", "rayleigh"), "fading['kind']", owner, ("rayleigh", "rician", "rician_los")
            )
            if kind == "rayleigh" and "k_factor_db" in fading:
                warnings.warn("RadioChannel: fading['k_factor_db'] is ignored for kind='rayleigh'.", stacklevel=2)
            k_db = fading.get("k_factor_db", DEFAULT_K_FACTOR_DB.get(self.pathloss.name, 9.0))
            self._rician_los = kind == "rician_los"
            self._k_db = float(k_db)
            self._fading = BlockFading(
                self.n_bs,
                n,
                "rayleigh" if kind == "rayleigh" else "rician",
                k_factor_db=k_db,
                block_s=self.block_s,
                carrier_hz=self.carrier_hz,
                rng=rngs["fading"],
                iid=bool(fading.get("iid", False)),
                los_phase=fading.get("los_phase", "random"),
                min_speed_mps=fading.get("min_speed_mps", 0.0),
            )
        self.fading_kind = None if fading is None else fading.get("kind", "rayleigh")

        # preallocated per-block buffers
        site_shape, bs_shape = (self.n_site, n), (self.n_bs, n)
        self._d2 = np.empty(site_shape)
        self._tmp = np.empty(site_shape)
        self._pl = np.empty(site_shape)  # path loss + shadowing, dB
        self._ls = np.empty(bs_shape) if self._sectorised else None  # large-scale gain per BS, dB
        self._p = np.empty(bs_shape)  # fading power
        self._ptmp = np.empty(bs_shape)
        self._work: dict = {}
        self._los = np.empty(site_shape, dtype=bool)
        self._nlos = np.empty(site_shape, dtype=bool)
        self.reset()

    # ------------------------------------------------------------------------------------
    def _warn_range(self) -> None:
        x0, x1, y0, y1 = self.layout.bounds_m
        corners = np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]])
        dmax = np.hypot(*(corners[None, :, :] - self.layout.site_xy_m[:, None, :]).transpose(2, 0, 1)).min(axis=0).max()
        if dmax > self.pathloss.max_d2d_m:
            warnings.warn(
                f"RadioChannel: clients in bounds_m can be {dmax:.0f} m from the nearest site, beyond the "
                f"{self.pathloss.max_d2d_m:g} m validity of {type(self.pathloss).__name__}; the formula is "
                "extrapolated there.",
                stacklevel=3,
            )

    def reset(self) -> None:
        """Back to the initial state: the same sequence of calls gives the same gains."""
        if self._los_state is not None:
            self._los_state.reset()
        if self._shadow is not None:
            self._shadow.reset()
        if self._fading is not None:
            self._fading.reset()
        self._los[...] = self.los_mode != "nlos"  # "random": overwritten by the first block
        np.logical_not(self._los, out=self._nlos)
        self._block = None
        self._at = np.full(self.n_ue, -1, dtype=np.int64)  # block of each client (−1: none)
        self._xy = np.zeros((self.n_ue, 2))  # position of each client at its last evaluation
        self._out_db = None  # full outputs, valid until a client advances
        self._out_lin = None

    # -- time ----------------------------------------------------------------------------
    def block_index(self, t_s: float) -> int:
        """Index n of the block [n·block_s, (n+1)·block_s) containing ``t_s`` (float products,
        so that ``block_index(block_start_s(n)) == n`` exactly)."""
        t = float(t_s)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"The 't_s' parameter of RadioChannel must be a finite time >= 0. Got {t_s!r} instead.")
        k = int(math.floor(t / self.block_s))
        if (k + 1) * self.block_s <= t:
            k += 1
        elif k * self.block_s > t:
            k -= 1
        return k

    def block_start_s(self, block_index: int) -> float:
        """Start time of a block, s."""
        return int(block_index) * self.block_s

    @property
    def block(self) -> int | None:
        """Index of the latest block computed (None before the first call)."""
        return self._block

    @property
    def client_block(self) -> np.ndarray:
        """(n_ue,) int64: the block each client's values belong to (−1: never computed)."""
        v = self._at.view()
        v.flags.writeable = False
        return v

    # -- the per-block update --------------------------------------------------------------
    def _index(self, ue_index) -> np.ndarray:
        idx = np.asarray(ue_index)
        if idx.ndim != 1 or not (idx.size == 0 or idx.dtype.kind in "iu"):  # integers
            raise ValueError(
                f"The 'ue_index' parameter of RadioChannel must be a 1-D array of client indices. "
                f"Got {idx.dtype} array of shape {idx.shape} instead."
            )
        idx = idx.astype(np.int64, copy=False)
        if idx.size > 1 and np.count_nonzero(idx[1:] > idx[:-1]) != idx.size - 1:  # not ascending
            if np.unique(idx).size != idx.size:
                raise ValueError("The 'ue_index' parameter of RadioChannel must not repeat a client. Got duplicates.")
            lo, hi = int(idx.min()), int(idx.max())
        else:
            lo, hi = (int(idx[0]), int(idx[-1])) if idx.size else (0, 0)
        if lo < 0 or hi >= self.n_ue:
            bad = idx[(idx < 0) | (idx >= self.n_ue)][0]
            raise ValueError(
                f"The 'ue_index' parameter of RadioChannel must hold indices in [0, {self.n_ue - 1}]. Got {bad} instead."
            )
        return idx

    def _advance(self, k: int, ue_xy_m, ue_speed_mps, idx):
        """Bring clients ``idx`` (None: all) to block ``k``; ``ue_xy_m``/``ue_speed_mps`` are theirs.

        Returns ``(large-scale dB, fading power or None)`` of the clients ``idx``, [n_bs, m]
        each, when this call computed all of them (the values in hand, the same as the
        stored ones), else None."""
        n = self.n_ue if idx is None else idx.size
        at = self._at if idx is None else self._at[idx]
        self._block = k if self._block is None else max(self._block, k)
        todo = at < k
        n_todo = np.count_nonzero(todo)  # (cheaper than any()/all() on a few clients)
        if n_todo == 0:
            return None
        xy = np.asarray(ue_xy_m, dtype=float)
        if xy.shape != (n, 2):
            raise ValueError(
                f"The 'ue_xy_m' parameter of RadioChannel must have shape ({n}, 2). Got shape {xy.shape} instead."
            )
        if not np.isfinite(xy).all():
            raise ValueError("The 'ue_xy_m' parameter of RadioChannel must be finite. Got NaN or inf instead.")
        speed = per_client(ue_speed_mps, n)
        if n_todo == n:
            ids = idx  # every client asked for moves on: no gathers (None: whole arrays)
        else:
            sel = todo.nonzero()[0]
            ids = sel if idx is None else idx[sel]
            xy, speed, at = xy[sel], speed[sel], at[sel]
        first = at < 0
        prev = self._xy if ids is None else self._xy[ids]
        disp = np.hypot(xy[:, 0] - prev[:, 0], xy[:, 1] - prev[:, 1])
        disp[first] = 0.0
        moved = first | (disp > 0.0)
        n_moved = np.count_nonzero(moved)
        ls = None
        if n_moved == moved.size:
            ls = self._large_scale(ids, xy, disp, first)
        elif n_moved:
            m = moved.nonzero()[0]
            self._large_scale(m if ids is None else ids[m], xy[m], disp[m], first[m])
        p = None
        if self._fading is not None:
            if ids is None:
                self._fading.advance_to(k, speed)
                self._fading.power_into(self._p, self._ptmp)
            else:
                p = np.empty((self.n_bs, ids.size))
                self._fading.advance_to(k, speed, cols=ids, power_out=p)
                self._p[:, ids] = p
        if ids is None:
            self._at[:] = k
            self._xy[...] = xy
        else:
            self._at[ids] = k
            self._xy[ids] = xy
        self._out_db = None
        self._out_lin = None
        if ls is None or ids.size != n:
            return None
        return ls, p

    def _plan_of(self, ids):
        """The path-loss plan restricted to clients ``ids`` (per-client heights)."""
        if ids is None or self.ue_height_m.ndim == 0 or self.n_ue == 1:
            return self.plan
        cols = {}
        for f in dataclasses.fields(self.plan):
            v = getattr(self.plan, f.name)
            if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[1] == self.n_ue:
                cols[f.name] = v[:, ids]
        return dataclasses.replace(self.plan, **cols)

    def _large_scale(self, ids, xy, disp, first) -> None:
        """Path loss, LOS, shadowing and antenna gains of clients ``ids`` (None: all) that
        moved (or are new) to ``xy``, ``disp`` metres from their last evaluation."""
        every = ids is None
        cols = slice(None) if every else ids
        c = self.n_ue if every else ids.size
        ux, uy = xy[:, 0], xy[:, 1]
        if self._fast_sectors:  # dx, dy per site are kept for the antenna gains
            dx = np.subtract(ux, self._site_x)  # [n_site, c]
            dy = np.subtract(uy, self._site_y)
            d2 = np.multiply(dx, dx)  # (the same products as np.square)
            tmp = np.multiply(dy, dy)
        else:
            d2 = self._d2 if every else np.empty((self.n_site, c))
            tmp = self._tmp if every else np.empty((self.n_site, c))
            np.subtract(ux, self._site_x, out=d2)  # [n_site, c]
            np.square(d2, out=d2)
            np.subtract(uy, self._site_y, out=tmp)
            np.square(tmp, out=tmp)
        d2 += tmp  # d2D², m²
        # clients whose LOS state was refreshed: their σ_SF, d_corr (and K) follow it
        if self._los_state is not None:
            self._los_state.update(d2, self.ue_height_m, disp, squared=True, cols=ids)
            upd = self._los_state.last_updated
            if upd.size == self.n_ue:
                np.copyto(self._los, self._los_state.los)
                np.logical_not(self._los, out=self._nlos)
            elif upd.size:
                los = self._los_state.los[:, upd]
                self._los[:, upd] = los
                self._nlos[:, upd] = ~los
        else:
            upd = (np.arange(self.n_ue) if every else ids)[first]
        upd_cols = None if upd.size == self.n_ue else upd
        plan = self._plan_of(ids)
        if every:
            los, nlos = self._los, self._nlos
        else:
            los = self._los[:, ids]
            nlos = ~los
        if self._shadow is not None:
            if plan.std_los_near_db != plan.std_los_far_db:
                # σ_SF moves with the breakpoint (RMa LOS): every client that moved, every time
                self._shadow.set_std_db(plan.shadow_std_db(d2, los), ids)
            elif upd.size:
                self._shadow.set_std_db(plan.shadow_std_db(None, self._los[:, upd]), upd_cols)
            if upd.size:
                self._shadow.set_decorrelation_m(self.pathloss.decorrelation_m(self._los[:, upd]), upd_cols)
        if upd.size and self._rician_los:
            k = np.where(self._los[:, upd], self._k_db, -np.inf)
            self._fading.set_k_factor_db(np.take(k, self._site_of_bs, axis=0) if self._sectorised else k, upd_cols)
        pl = plan.evaluate(d2, los, out=self._pl if every else None, nlos=nlos, work=self._work)
        if self._shadow is not None:
            if every:
                self._shadow.advance(disp)
                np.multiply(self._shadow.unit_state, self._shadow.std_db, out=tmp)
                pl += tmp  # path loss + shadowing, dB
            else:
                pl += self._shadow.value_db(disp, cols=ids)
        if not every:
            self._pl[:, ids] = pl
        if self._fast_sectors:
            g = self._sector_gain_db(dx, dy)
        elif self._sectorised:
            h = self.ue_height_m if self.ue_height_m.ndim == 0 else self.ue_height_m[cols]
            g = sector_antenna_gain_db(
                self.layout.bs_azimuth_deg,
                self.layout.bs_xy_m,
                xy,
                self.antenna_max_gain_dbi,
                downtilt_deg=self.downtilt_deg,
                bs_height_m=self.layout.bs_height_m,
                ue_height_m=h,
            )
        if self._sectorised:
            if every:
                np.subtract(g, np.take(pl, self._site_of_bs, axis=0), out=self._ls)
                return None
            ls = g - pl.take(self._site_of_bs, axis=0)
            self._ls[:, ids] = ls
            return ls  # [n_bs, c] large-scale gain, dB
        return None if every else np.negative(pl)

    def _sector_gain_db(self, dx, dy) -> np.ndarray:
        """:func:`channel.geometry.sector_antenna_gain_db` (horizontal pattern, no NaN
        azimuth) from the site-to-client offsets ``dx``, ``dy`` ([n_site, c], m): co-sited
        sectors share the offsets, so the angle is computed once per site; the arithmetic
        per link is the function's own, so the values are identical. Returns [n_bs, c] dBi."""
        ang = np.degrees(np.arctan2(dy, dx))  # [n_site, c]
        phi = ang.take(self._site_of_bs, axis=0) - self._az_col  # [n_bs, c]
        phi = (phi + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
        att = np.minimum(12.0 * (phi / 65.0) ** 2, 30.0)  # −A_H, dB
        return self.antenna_max_gain_dbi - att

    # -- outputs -------------------------------------------------------------------------
    def _check_block(self, t_s) -> int:
        k = self.block_index(t_s)
        if self._block is not None and k < self._block:
            raise ValueError(
                f"RadioChannel was asked for block {k} (t_s={t_s:g}) after block {self._block}: blocks must be "
                "requested in non-decreasing time order. Call reset() to start over."
            )
        return k

    def _large_scale_db(self, cols) -> np.ndarray:
        """[n_bs, m] large-scale gain (antenna − path loss − shadowing) of columns ``cols``, dB."""
        if self._sectorised:
            return self._ls[:, cols] if not isinstance(cols, slice) else self._ls.copy()
        return np.negative(self._pl[:, cols])

    def _db(self, cols, hand=None) -> np.ndarray:
        """dB gains of ``cols``; ``hand``: (large-scale dB, power) of them from _advance."""
        if hand is not None:
            ls, p = hand
            if p is None:
                return ls
            out = np.log(p)
            out *= _DB
            out += ls  # (−pl for omni sites: x + (−y) is x − y exactly)
            return out
        if self._fading is None:
            return self._large_scale_db(cols)
        p = self._p if isinstance(cols, slice) else self._p[:, cols]
        out = np.log(p)
        out *= _DB
        if self._sectorised:
            out += self._ls if isinstance(cols, slice) else self._ls[:, cols]
        else:
            out -= self._pl if isinstance(cols, slice) else self._pl[:, cols]
        return out

    def _linear(self, cols, hand=None) -> np.ndarray:
        """Linear gains of ``cols``; ``hand`` as in :meth:`_db`."""
        if hand is not None:
            ls, p = hand
            out = np.multiply(ls, _INV_DB)  # (−pl)·c equals pl·(−c) exactly
        elif self._sectorised:
            out = np.multiply(self._ls if isinstance(cols, slice) else self._ls[:, cols], _INV_DB)
        else:
            out = np.multiply(self._pl if isinstance(cols, slice) else self._pl[:, cols], -_INV_DB)
        np.exp(out, out=out)
        if self._fading is not None:
            if hand is None:
                p = self._p if isinstance(cols, slice) else self._p[:, cols]
            out *= p
        return out

    def gain_db(self, t_s: float, ue_xy_m, ue_speed_mps, ue_index=None) -> np.ndarray:
        """Channel gain of every link (or of clients ``ue_index``) for the block containing ``t_s``, dB.

        Args:
            t_s: simulated time, s (not before the latest block computed).
            ue_xy_m: (n_ue, 2), m — client positions (used for clients not yet at this
                block); with ``ue_index``, (m, 2) positions of those clients.
            ue_speed_mps: scalar, (n_ue,) or (m,), m/s — client speeds (drive the fading).
            ue_index: None (every client) or (m,) distinct client indices.

        Returns:
            [n_bs, n_ue] float64, dB, read-only; a new array per block, the same array for
            repeated calls within a block. With ``ue_index``: a new [n_bs, m] array, equal
            to those columns of the full output for the same history of these clients.
        """
        k = self._check_block(t_s)
        if ue_index is not None:
            idx = self._index(ue_index)
            return self._db(idx, self._advance(k, ue_xy_m, ue_speed_mps, idx))
        self._advance(k, ue_xy_m, ue_speed_mps, None)
        if self._out_db is None:
            out = self._db(slice(None))
            out.flags.writeable = False
            self._out_db = out
        return self._out_db

    def gain_linear(self, t_s: float, ue_xy_m, ue_speed_mps, ue_index=None) -> np.ndarray:
        """Channel gain of every link (or of clients ``ue_index``), linear (see :meth:`gain_db`)."""
        k = self._check_block(t_s)
        if ue_index is not None:
            idx = self._index(ue_index)
            return self._linear(idx, self._advance(k, ue_xy_m, ue_speed_mps, idx))
        self._advance(k, ue_xy_m, ue_speed_mps, None)
        if self._out_lin is None:
            out = self._linear(slice(None))
            out.flags.writeable = False
            self._out_lin = out
        return self._out_lin

    def gains(self, t_s: float, ue_xy_m, ue_speed_mps, ue_index) -> tuple[np.ndarray, np.ndarray]:
        """Both forms a link layer needs, in one call: (:meth:`gain_linear`, and the
        large-scale gain in dB without fading, :meth:`large_scale_gain_db_of`) of clients
        ``ue_index`` for the block containing ``t_s`` — two new [n_bs, m] float64 arrays."""
        k = self._check_block(t_s)
        idx = self._index(ue_index)
        hand = self._advance(k, ue_xy_m, ue_speed_mps, idx)
        return self._linear(idx, hand), (self._large_scale_db(idx) if hand is None else hand[0])

    def gain_db_for_mobility(self, t_s: float, mobility, ue_index=None) -> np.ndarray:
        """:meth:`gain_db` with positions and speeds taken from ``mobility`` at the block start."""
        k = self._check_block(t_s)
        if ue_index is None:
            if k == self._block and bool((self._at == k).all()):
                return self.gain_db(t_s, None, None)
            pos, vel = mobility.state(self.block_start_s(k))
        else:
            pos, vel = mobility.state_of(self.block_start_s(k), ue_index)
        return self.gain_db(t_s, pos, np.hypot(vel[:, 0], vel[:, 1]), ue_index)

    # -- state of the last block -----------------------------------------------------------
    def _require_block(self) -> None:
        if self._block is None:
            raise ValueError("RadioChannel has no block yet: call gain_db() or gain_linear() first.")

    @property
    def large_scale_gain_db(self) -> np.ndarray:
        """[n_bs, n_ue] dB of each client's last block without fading (antenna − path loss − shadowing)."""
        self._require_block()
        return self._large_scale_db(slice(None))

    def large_scale_gain_db_of(self, ue_index) -> np.ndarray:
        """[n_bs, m] dB of clients ``ue_index`` at their last block, without fading."""
        self._require_block()
        return self._large_scale_db(self._index(ue_index))

    @property
    def fading_power(self) -> np.ndarray:
        """[n_bs, n_ue] linear |h|² of each client's last block (ones without fading)."""
        self._require_block()
        return self._p.copy() if self._fading is not None else np.ones((self.n_bs, self.n_ue))

    @property
    def los(self) -> np.ndarray:
        """[n_bs, n_ue] bool LOS state of each client's last block."""
        self._require_block()
        return np.take(self._los, self._site_of_bs, axis=0) if self._sectorised else self._los.copy()

    def coherence_time_s(self, ue_speed_mps) -> np.ndarray:
        """Coherence time 0.423/f_D per client at this carrier, s (inf when static)."""
        return coherence_time_s(ue_speed_mps, self.carrier_hz)

    # -- conveniences ----------------------------------------------------------------------
    def downlink_sinr_linear(self, t_s, ue_xy_m, ue_speed_mps, tx_power_mw, serving, noise_mw, transmitting=None):
        """Downlink SINR (linear, (n_ue,)) for the block containing ``t_s``
        (:func:`channel.link.downlink_sinr_linear` on :meth:`gain_linear`)."""
        g = self.gain_linear(t_s, ue_xy_m, ue_speed_mps)
        return downlink_sinr_linear(g, tx_power_mw, serving, noise_mw, transmitting)

    def uplink_sinr_linear(
        self, t_s, ue_xy_m, ue_speed_mps, tx_power_mw, serving, transmitting, noise_mw, interference_weight=None
    ):
        """Uplink SINR (linear, (n_ue,)) for the block containing ``t_s``
        (:func:`channel.link.uplink_sinr_linear` on :meth:`gain_linear`)."""
        g = self.gain_linear(t_s, ue_xy_m, ue_speed_mps)
        return uplink_sinr_linear(g, tx_power_mw, serving, transmitting, noise_mw, interference_weight)

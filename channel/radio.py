"""RadioChannel: the composite channel, a function of (seed, client, link, position, time).

gain_db[b, u] = antenna gain of BS b towards client u
              − path loss of the (site of b, u) path for its LOS state
              − shadowing of that path
              + 10·log10 |h[b, u]|² (block fading)

Every random part is a field of the client's position — the LOS state and the shadowing
(spatially correlated, :mod:`channel.pathloss`, :mod:`channel.shadowing`) and the fading
(a sum of sinusoids, :mod:`channel.fading`, plus its block's start time for the
environment Doppler) — whose parameters are counter-based draws keyed by (seed, client,
link) (:mod:`channel._keyed`). Hence:

- :meth:`RadioChannel.sample` evaluates any blocks at any positions for any clients in one
  vectorised call, and its value for a (client, block, position) is the same bit for bit
  whatever was asked before and whatever else is in the batch (common random numbers: two
  scenarios that differ in bandwidth, algorithm or selection see the same channel for the
  same client at the same time and place);
- the simulator evaluates a transfer's many future blocks at once (the matrix products run
  per chunk of :data:`channel._sos.CHUNK_BLOCKS` blocks, so a block asked for alone or in
  its chunk gives the same bits).

Gains are piecewise constant over fading blocks [n·block_s, (n+1)·block_s): the value of a
block is the fields at the client's position at the block's start.

The per-block convenience API (:meth:`RadioChannel.gain_db`, :meth:`RadioChannel.gains`,
...) keeps, per client, the block it was last evaluated at and its values there: the first
call for a block computes it from the positions passed in, further calls for the same
block return the same values, and blocks must be requested in non-decreasing order. It
takes ``ue_index`` (client indices) to compute only those clients' columns — equal to the
columns of the full call.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Mapping

import numpy as np
from scipy.special import ndtr

from ._checks import check_choice, check_positive
from ._sos import N_FIELD_TERMS, ParamCache, chunk_product, field_basis, field_coefficients, field_wavevectors
from .fading import DEFAULT_N_SINUSOIDS, BlockFading, coherence_time_s, rician_amplitudes
from .geometry import Layout, sector_antenna_gain_db
from .link import downlink_sinr_linear, uplink_sinr_linear
from .pathloss import PathlossModel, make_pathloss

__all__ = ["RadioChannel", "ChannelSample", "DEFAULT_K_FACTOR_DB", "DEFAULT_BLOCK_S"]

_DB = 10.0 / math.log(10.0)
_INV_DB = 1.0 / _DB

#: Mean Rician K-factor (dB) of LOS links, TR 38.901 Table 7.5-6 (μ_K).
DEFAULT_K_FACTOR_DB = {"uma": 9.0, "umi": 9.0, "rma": 7.0, "inh_office": 7.0}
#: Fading block when none is given: one NR radio frame, 10 ms (TS 38.211 §4.3.1).
DEFAULT_BLOCK_S = 0.01

_FADING_KEYS = {"kind", "k_factor_db", "block_s", "iid", "los_phase", "min_speed_mps", "n_sinusoids"}


@dataclasses.dataclass(frozen=True)
class ChannelSample:
    """What :meth:`RadioChannel.sample` returns for W blocks and m clients.

    Attributes:
        gain_linear: [W, n_bs, m] float64, linear channel gain (antenna − path loss −
            shadowing, times the fading power).
        large_scale_db: [W, n_bs, m] float64, dB, the gain without fading (what RSRP-based
            association uses).
        fading_power: [W, n_bs, m] float64, |h|² (ones without fading).
        los: [W, n_bs, m] bool, LOS state of each link.
    """

    gain_linear: np.ndarray
    large_scale_db: np.ndarray
    fading_power: np.ndarray
    los: np.ndarray


class RadioChannel:
    """Composite radio channel for every BS–client link (see the module docstring).

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
            ``los_phase`` (``"random"``/``"zero"``), ``min_speed_mps`` (environment
            Doppler, see :class:`channel.fading.BlockFading`), ``n_sinusoids``.
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
        los_mode: ``"random"`` (TR 38.901 LOS probability, a spatially consistent field),
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
        from ._checks import child_rng

        # one seed per random field; each draw is keyed by (seed, client, link)
        self._los_seed = child_rng(rngs["los"], "LosState") if "los" in need else None
        self._sf_seed = child_rng(rngs["shadowing"], "CorrelatedShadowing") if sf_on else None
        # correlation distances: shadowing (LOS, NLOS) and the LOS latent; one basis per
        # distinct distance, the fields that share a distance share its basis
        self._sf_dc = (tuple(float(d) for d in self.pathloss.decorrelation_m(np.array([True, False])))
                       if sf_on else ())
        self._los_dc = float(self.pathloss.los_decorrelation_m) if self._los_seed is not None else None
        self._freq_seed = self._sf_seed if self._sf_seed is not None else self._los_seed
        self._field_params = ParamCache()
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
            self._k_amp = rician_amplitudes(self._k_db)  # (LOS, diffuse) amplitudes of K
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
                n_sinusoids=fading.get("n_sinusoids", DEFAULT_N_SINUSOIDS),
            )
        self.fading_kind = None if fading is None else fading.get("kind", "rayleigh")
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
        """Forget the per-block state (the values are functions of the seed: the same
        calls give the same gains)."""
        n = self.n_ue
        self._block = None
        self._at = np.full(n, -1, dtype=np.int64)  # block of each client (−1: none)
        self._ls = np.zeros((self.n_bs, n))  # large-scale gain of each client's block, dB
        self._p = np.ones((self.n_bs, n))  # fading power of each client's block
        self._los = np.zeros((self.n_bs, n), dtype=bool)
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
        """Index of the latest block computed by the per-block API (None before the first call)."""
        return self._block

    @property
    def client_block(self) -> np.ndarray:
        """(n_ue,) int64: the block each client's values belong to (−1: never computed)."""
        v = self._at.view()
        v.flags.writeable = False
        return v

    # -- the stateless evaluation -------------------------------------------------------------
    def sample(self, blocks, ue_xy_m, ue_index=None) -> ChannelSample:
        """The channel of clients ``ue_index`` at ``blocks``, at the positions given.

        Args:
            blocks: (W,) distinct int block indices >= 0, any order (the environment Doppler
                of the fading uses their start times).
            ue_xy_m: [W, m, 2] float64, m: each client's position at each block's start.
            ue_index: (m,) distinct client indices (default: every client).

        Returns:
            :class:`ChannelSample` of [W, n_bs, m] arrays. Stateless: any moment may be
            asked, in any order, and a (client, block, position) gives the same bits
            whatever was asked before and whatever else is in the batch.
        """
        blocks = np.atleast_1d(np.asarray(blocks, dtype=np.int64))
        ids = np.arange(self.n_ue) if ue_index is None else self._index(ue_index)
        xy = np.asarray(ue_xy_m, dtype=float)
        if xy.shape != (blocks.size, ids.size, 2):
            raise ValueError(
                f"The 'ue_xy_m' parameter of RadioChannel.sample must have shape ({blocks.size}, {ids.size}, 2). "
                f"Got shape {xy.shape} instead."
            )
        if blocks.size and int(blocks.min()) < 0:
            raise ValueError(f"The 'blocks' parameter of RadioChannel.sample must be >= 0. Got {int(blocks.min())} instead.")
        if not np.isfinite(xy).all():
            raise ValueError("The 'ue_xy_m' parameter of RadioChannel must be finite. Got NaN or inf instead.")
        ls, p, los = self._compute(ids, blocks, xy)  # [n_bs, W, m] each
        lin = np.multiply(ls, _INV_DB)
        np.exp(lin, out=lin)
        if p is not None:
            lin *= p
        else:
            p = np.ones(ls.shape)
        return ChannelSample(*(np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (lin, ls, p, los)))

    def gains_over(self, blocks, ue_xy_m, ue_index) -> tuple[np.ndarray, np.ndarray]:
        """(linear gain, large-scale gain in dB), each [m, n_bs, W] (client-major, what a
        per-client cache stores), of clients ``ue_index`` at ``blocks`` and positions
        ``ue_xy_m`` [W, m, 2] — the values of :meth:`sample`, without its checks."""
        blocks = np.atleast_1d(np.asarray(blocks, dtype=np.int64))
        ids = np.asarray(ue_index, dtype=np.int64)
        ls, p, _ = self._compute(ids, blocks, np.asarray(ue_xy_m, dtype=float))  # [n_bs, W, m]
        ls = np.ascontiguousarray(ls.transpose(2, 0, 1))
        lin = np.multiply(ls, _INV_DB)
        np.exp(lin, out=lin)
        if p is not None:
            lin *= p.transpose(2, 0, 1)
        return lin, ls

    def _plan_of(self, ids, reps: int = 1):
        """The path-loss plan for clients ``ids`` (per-client heights), its client columns
        repeated ``reps`` times (the [n_site, W·m] layout of :meth:`_compute`)."""
        if self.ue_height_m.ndim == 0 or self.n_ue == 1:
            return self.plan
        cols = {}
        for f in dataclasses.fields(self.plan):
            v = getattr(self.plan, f.name)
            if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[1] == self.n_ue:
                cols[f.name] = np.tile(v[:, ids], (1, reps))
        return dataclasses.replace(self.plan, **cols)

    def _field_values(self, ids, blocks, xy):
        """The unit fields at these points: {"los": g, "sf": (u at the LOS distance, u at
        the NLOS distance)}, each [n_site, W, m] (absent when off)."""
        out = {}
        if self._freq_seed is None:
            return out
        kx, ky, q_los, q_sf = self._field_params.get(ids, self._draw_field_parameters)
        bases = {}

        def basis(d):
            if d not in bases:
                bases[d] = field_basis(kx, ky, xy, d)  # [m, 2N, W]
            return bases[d]

        if self._los_seed is not None:
            out["los"] = chunk_product(q_los, basis(self._los_dc), blocks).transpose(1, 2, 0)
        if self._sf_seed is not None:
            out["sf"] = tuple(chunk_product(q_sf, basis(d), blocks).transpose(1, 2, 0) for d in self._sf_dc)
        return out

    def _draw_field_parameters(self, ids):
        """(κx, κy [m, N], LOS-latent and shadowing coefficients [m, n_site, 2N]; an empty
        [m, 0, 0] array for a field that is off)."""
        kx, ky = field_wavevectors(self._freq_seed, ids, purpose=30)
        none = np.empty((ids.size, 0, 0))
        q_los = (none if self._los_seed is None
                 else field_coefficients(self._los_seed, ids, self.n_site, N_FIELD_TERMS, purpose=31))
        q_sf = (none if self._sf_seed is None
                else field_coefficients(self._sf_seed, ids, self.n_site, N_FIELD_TERMS, purpose=32))
        return kx, ky, q_los, q_sf

    def _compute(self, ids: np.ndarray, blocks: np.ndarray, xy: np.ndarray):
        """(large-scale gain dB, fading power or None, LOS), each [n_bs, W, m], of clients
        ``ids`` at ``blocks`` and positions ``xy`` [W, m, 2]."""
        w, m = blocks.size, ids.size
        shape = (self.n_site, w, m)
        ux, uy = xy[:, :, 0][None], xy[:, :, 1][None]  # [1, W, m]
        dx = np.subtract(ux, self._site_x[:, :, None])  # [n_site, W, m]
        dy = np.subtract(uy, self._site_y[:, :, None])
        d2 = np.multiply(dx, dx)
        d2 += np.multiply(dy, dy)  # d2D², m²
        fields = self._field_values(ids, blocks, xy)
        if "los" in fields:
            h = self.ue_height_m if self.ue_height_m.ndim == 0 else self.ue_height_m[ids][None, None, :]
            los = ndtr(fields["los"]) < self.pathloss.los_probability(np.sqrt(d2), h)
        else:
            los = np.full(shape, self.los_mode != "nlos")
        d2f, losf = d2.reshape(self.n_site, w * m), los.reshape(self.n_site, w * m)
        plan = self._plan_of(ids, w)
        pl = plan.evaluate(d2f, losf).reshape(shape)  # path loss, dB
        if "sf" in fields:
            u_los, u_nlos = fields["sf"]
            u = np.where(los, u_los, u_nlos)
            std = plan.shadow_std_db(d2f if plan.std_los_near_db != plan.std_los_far_db else None, losf)
            u *= std.reshape(shape)
            pl += u  # path loss + shadowing, dB
        if self._fast_sectors:
            ls = self._sector_gain_db(dx.reshape(self.n_site, w * m), dy.reshape(self.n_site, w * m))
            ls = ls.reshape(self.n_bs, w, m)
            ls -= pl.take(self._site_of_bs, axis=0)
        elif self._sectorised:
            ls = np.empty((self.n_bs, w, m))
            h = self.ue_height_m if self.ue_height_m.ndim == 0 else self.ue_height_m[ids]
            for j in range(w):
                ls[:, j] = sector_antenna_gain_db(
                    self.layout.bs_azimuth_deg, self.layout.bs_xy_m, xy[j], self.antenna_max_gain_dbi,
                    downtilt_deg=self.downtilt_deg, bs_height_m=self.layout.bs_height_m, ue_height_m=h)
            ls -= pl.take(self._site_of_bs, axis=0)
        else:
            ls = np.negative(pl)
        los_bs = los.take(self._site_of_bs, axis=0) if self._sectorised else los
        if self._fading is None:
            return ls, None, los_bs
        re, im = self._fading.scattered_at(blocks, xy, ids)  # [m, n_bs, W]
        re, im = re.transpose(1, 2, 0), im.transpose(1, 2, 0)  # [n_bs, W, m]
        if self._fading.kind == "rayleigh":
            p = np.multiply(re, re)
            p += np.multiply(im, im)
            return ls, p, los_bs
        a, b = self._k_amp
        if self._rician_los:  # K on LOS links, Rayleigh on NLOS ones
            a = np.where(los_bs, a, 0.0)
            b = np.where(los_bs, b, 1.0)
        cos, sin = self._fading.los_phase_of(ids)  # [n_bs, m]
        x = np.multiply(re, b)
        x += a * cos[:, None, :]
        y = np.multiply(im, b)
        y += a * sin[:, None, :]
        x *= x
        y *= y
        x += y
        return ls, x, los_bs

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

    # -- the per-block API ---------------------------------------------------------------
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

    def _advance(self, k: int, ue_xy_m, idx):
        """Bring clients ``idx`` (None: all) to block ``k``; ``ue_xy_m`` are their positions."""
        n = self.n_ue if idx is None else idx.size
        at = self._at if idx is None else self._at[idx]
        self._block = k if self._block is None else max(self._block, k)
        todo = at < k
        if not todo.any():
            return
        xy = np.asarray(ue_xy_m, dtype=float)
        if xy.shape != (n, 2):
            raise ValueError(
                f"The 'ue_xy_m' parameter of RadioChannel must have shape ({n}, 2). Got shape {xy.shape} instead."
            )
        if not np.isfinite(xy).all():
            raise ValueError("The 'ue_xy_m' parameter of RadioChannel must be finite. Got NaN or inf instead.")
        ids = (np.arange(self.n_ue) if idx is None else idx)[todo]
        ls, p, los = self._compute(ids, np.array([k]), xy[todo][None])
        self._ls[:, ids] = ls[:, 0]
        if p is not None:
            self._p[:, ids] = p[:, 0]
        self._los[:, ids] = los[:, 0]
        self._at[ids] = k
        self._out_db = None
        self._out_lin = None

    def _check_block(self, t_s) -> int:
        k = self.block_index(t_s)
        if self._block is not None and k < self._block:
            raise ValueError(
                f"RadioChannel was asked for block {k} (t_s={t_s:g}) after block {self._block}: blocks must be "
                "requested in non-decreasing time order (the per-block API; sample() takes any block). "
                "Call reset() to start over."
            )
        return k

    def _db(self, cols) -> np.ndarray:
        out = np.log(self._p[:, cols])
        out *= _DB
        out += self._ls[:, cols]
        return out

    def _linear(self, cols) -> np.ndarray:
        out = np.multiply(self._ls[:, cols], _INV_DB)
        np.exp(out, out=out)
        out *= self._p[:, cols]
        return out

    def gain_db(self, t_s: float, ue_xy_m, ue_speed_mps=None, ue_index=None) -> np.ndarray:
        """Channel gain of every link (or of clients ``ue_index``) for the block containing ``t_s``, dB.

        Args:
            t_s: simulated time, s (not before the latest block computed).
            ue_xy_m: (n_ue, 2), m — client positions at the block's start (used for
                clients not yet at this block); with ``ue_index``, (m, 2) positions of those
                clients.
            ue_speed_mps: unused (the fading follows the positions); kept for callers
                that pass it.
            ue_index: None (every client) or (m,) distinct client indices.

        Returns:
            [n_bs, n_ue] float64, dB, read-only; a new array per block, the same array for
            repeated calls within a block. With ``ue_index``: a new [n_bs, m] array, equal
            to those columns of the full output.
        """
        k = self._check_block(t_s)
        if ue_index is not None:
            idx = self._index(ue_index)
            self._advance(k, ue_xy_m, idx)
            return self._db(idx)
        self._advance(k, ue_xy_m, None)
        if self._out_db is None:
            out = self._db(slice(None))
            out.flags.writeable = False
            self._out_db = out
        return self._out_db

    def gain_linear(self, t_s: float, ue_xy_m, ue_speed_mps=None, ue_index=None) -> np.ndarray:
        """Channel gain of every link (or of clients ``ue_index``), linear (see :meth:`gain_db`)."""
        k = self._check_block(t_s)
        if ue_index is not None:
            idx = self._index(ue_index)
            self._advance(k, ue_xy_m, idx)
            return self._linear(idx)
        self._advance(k, ue_xy_m, None)
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
        self._advance(k, ue_xy_m, idx)
        return self._linear(idx), self._ls[:, idx]

    def gain_db_for_mobility(self, t_s: float, mobility, ue_index=None) -> np.ndarray:
        """:meth:`gain_db` with positions taken from ``mobility`` at the block start."""
        k = self._check_block(t_s)
        if ue_index is None:
            if k == self._block and bool((self._at == k).all()):
                return self.gain_db(t_s, None)
            pos, _ = mobility.state(self.block_start_s(k))
        else:
            pos, _ = mobility.state_of(self.block_start_s(k), ue_index)
        return self.gain_db(t_s, pos, None, ue_index)

    # -- state of the last block -----------------------------------------------------------
    def _require_block(self) -> None:
        if self._block is None:
            raise ValueError("RadioChannel has no block yet: call gain_db() or gain_linear() first.")

    @property
    def large_scale_gain_db(self) -> np.ndarray:
        """[n_bs, n_ue] dB of each client's last block without fading (antenna − path loss − shadowing)."""
        self._require_block()
        return self._ls.copy()

    def large_scale_gain_db_of(self, ue_index) -> np.ndarray:
        """[n_bs, m] dB of clients ``ue_index`` at their last block, without fading."""
        self._require_block()
        return self._ls[:, self._index(ue_index)]

    @property
    def fading_power(self) -> np.ndarray:
        """[n_bs, n_ue] linear |h|² of each client's last block (ones without fading)."""
        self._require_block()
        return self._p.copy()

    @property
    def los(self) -> np.ndarray:
        """[n_bs, n_ue] bool LOS state of each client's last block."""
        self._require_block()
        return self._los.copy()

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

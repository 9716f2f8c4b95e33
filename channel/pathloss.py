"""Path loss, LOS probability and LOS state: 3GPP TR 38.901 §7.4 plus two textbook models.

Models (registry :data:`PATHLOSS_MODELS`, by the name scenario YAML uses):

==============  ====================  =================================================
name            class                 source
==============  ====================  =================================================
``free_space``  :class:`FreeSpace`    Friis, 20·log10(4π d f / c)
``log_distance``:class:`LogDistance`  PL0 + 10 n log10(d / d0)
``uma``         :class:`UMa`          TR 38.901 Table 7.4.1-1, Urban Macro
``umi``         :class:`UMiStreetCanyon` TR 38.901 Table 7.4.1-1, UMi – Street Canyon
``rma``         :class:`RMa`          TR 38.901 Table 7.4.1-1, Rural Macro
``inh_office``  :class:`InHOffice`    TR 38.901 Table 7.4.1-1, Indoor Hotspot – Office
==============  ====================  =================================================

Every model answers, for arrays broadcast over ``[..., n_bs, n_ue]``:

- ``pathloss_db(d2d_m, d3d_m, carrier_hz, h_bs_m, h_ut_m, los)`` — dB, positive;
- ``los_probability(d2d_m, h_ut_m)`` — TR 38.901 Table 7.4.2-1;
- ``shadow_std_db(los, ...)`` — σ_SF of Table 7.4.1-1;
- ``decorrelation_m(los)`` — shadow-fading correlation distance, Table 7.5-6 Part-1;
- ``los_decorrelation_m`` — LOS-state correlation distance, Table 7.6.3.1-2;
- ``validate(carrier_hz, h_bs_m, h_ut_m)`` — the table's applicability ranges (raises).

Decisions (documented, tested):

- Carrier frequency ``fc`` in the 38.901 formulas is in GHz; ``carrier_hz`` is in Hz. The
  breakpoint distance uses c = 3.0·10⁸ m/s exactly as Note 1 of Table 7.4.1-1 states.
- Distances below the table's minimum are clipped, not rejected (mobile clients do walk
  under a mast): UMa/UMi/RMa clip d2D at 10 m (the table's "10 m ≤ d2D"), InH clips d3D
  at 1 m, free space and log-distance clip d3D at ``min_distance_m``. The 3-D distance is
  recomputed from the clipped 2-D one so the two stay consistent.
- Distances beyond the table's maximum (5 km UMa/UMi/RMa-NLOS, 10 km RMa-LOS, 150 m InH)
  are extrapolated with the same formula (``RadioChannel`` warns when a layout reaches them).
- UMa's effective environment height h_E is 1 m (the table draws h_E > 1 m with
  probability 1 − 1/(1 + C(d2D, hUT)), which is 0 for hUT ≤ 13 m; we take the 1 m branch
  always, as most system simulators do for ground-level users).
- NLOS links use PL = max(PL_LOS, PL'_NLOS) (Table 7.4.1-1); the "optional" NLOS
  formulas are not provided.
- InH-Office has no breakpoint in Table 7.4.1-1; its LOS probability is the mixed-office
  one by default (``variant="open"`` selects open office).
- RMa's σ_SF for LOS is 4 dB before the breakpoint and 6 dB after it.
- The formulas were fitted for hBS = 25 m (UMa), 10 m (UMi), 3 m (InH); other BS heights
  are accepted (they enter the breakpoint and PL2 terms) but are extrapolations.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
from scipy.special import ndtr

from ._checks import check_positive, check_range, check_choice, child_rng, per_client

__all__ = [
    "C_3GPP_MPS",
    "SPEED_OF_LIGHT_MPS",
    "PathlossModel",
    "PathlossPlan",
    "FreeSpace",
    "LogDistance",
    "UMa",
    "UMiStreetCanyon",
    "RMa",
    "InHOffice",
    "PATHLOSS_MODELS",
    "make_pathloss",
    "fspl_db",
    "draw_los",
    "LosState",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0
#: c as written in TR 38.901 Table 7.4.1-1 Note 1 (breakpoint distance).
C_3GPP_MPS = 3.0e8
_LN10 = math.log(10.0)
_HALF_LOG10 = 1.0 / (2.0 * _LN10)  # log10(d) = _HALF_LOG10 * ln(d²)


def fspl_db(distance_m, carrier_hz) -> np.ndarray:
    """Free-space path loss 20·log10(4π d f / c), dB (c = 299 792 458 m/s)."""
    d = np.asarray(distance_m, dtype=float)
    return 20.0 * np.log10(4.0 * np.pi * d * float(carrier_hz) / SPEED_OF_LIGHT_MPS)


@dataclass(frozen=True, eq=False)
class PathlossPlan:
    """A model's coefficients for one carrier and fixed heights: path loss from distances.

    Every model of this module is piecewise of the form

        PL_LOS  = a1 + b1·log10(d3D) + c1·d3D      for d2D <= d_BP
                = a2 + b2·log10(d3D)               for d2D >  d_BP
        PL'_NLOS = a3 + b3·log10(d3D)
        PL = PL_LOS (LOS)  or  max(PL_LOS, PL'_NLOS) (NLOS)

    with coefficients that depend on carrier and heights only. Building them once (tables
    built once, never per call) lets the per-block hot path work on squared distances with
    one logarithm per link. ``k = b / (2 ln 10)`` multiplies ln(d3D²).

    Coefficient arrays broadcast against ``[n_bs, n_ue]`` (typically ``[n_bs, 1]`` for BS
    terms and ``[1, n_ue]`` or ``[n_bs, n_ue]`` for terms with UE heights).
    """

    a1: np.ndarray
    k1: np.ndarray
    c1: np.ndarray | None
    d_bp_sq: np.ndarray | None  # squared 2-D breakpoint distance, m²; None = no breakpoint
    a2: np.ndarray | None
    k2: np.ndarray | None
    a3: np.ndarray | None  # None = no NLOS distinction
    k3: np.ndarray | None
    min_d2d_sq: float
    min_d3d_sq: float
    dh_sq: np.ndarray  # (h_bs − h_ut)², m²
    std_los_near_db: float
    std_los_far_db: float
    std_nlos_db: float

    def evaluate(self, d2d_sq, los, out=None, *, nlos=None, work=None) -> np.ndarray:
        """Path loss in dB from squared 2-D distances (heights come from the plan).

        Args:
            d2d_sq: [n_bs, n_ue] float64, m². Squared horizontal distances.
            los: [n_bs, n_ue] bool (or broadcastable), True for LOS links.
            out: optional float64 output buffer of the link shape.
            nlos: optional precomputed ``~los`` (saves one pass).
            work: optional dict of scratch buffers ``{"f0", "f1": float64, "b0": bool}``.

        Returns:
            [n_bs, n_ue] float64, dB.
        """
        d2d_sq = np.asarray(d2d_sq, dtype=float)
        key = (d2d_sq.shape, np.shape(los))
        if work is not None and work.get("key") == key:
            w = work  # buffers already fit (the per-block hot path)
        else:
            w = _work(work, self.link_shape(d2d_sq, los))
            w["key"] = key
        d3_sq = w["f0"]
        np.maximum(d2d_sq, self.min_d2d_sq, out=d3_sq)
        d3_sq += self.dh_sq
        if self.min_d3d_sq > 0.0:
            np.maximum(d3_sq, self.min_d3d_sq, out=d3_sq)
        return self._from_sq(d2d_sq, d3_sq, los, out, nlos, w)

    def link_shape(self, *arrays) -> tuple[int, ...]:
        """Broadcast shape of the given arrays and of this plan's coefficient arrays."""
        return np.broadcast_shapes(*(np.shape(a) for a in arrays), self._coef_shape)

    @cached_property
    def _coef_shape(self) -> tuple[int, ...]:
        """Broadcast shape of the coefficient arrays (fixed: computed once, not per block)."""
        coefs = (self.a1, self.k1, self.c1, self.d_bp_sq, self.a2, self.k2, self.a3, self.k3, self.dh_sq)
        return np.broadcast_shapes(*(np.shape(c) for c in coefs if c is not None))

    def _from_sq(self, d2d_sq, d3_sq, los, out, nlos, w) -> np.ndarray:
        # d3_sq holds the (clipped) squared 3-D distance; it is consumed (overwritten).
        if out is None:
            out = np.empty(d3_sq.shape)
        x = d3_sq
        if self.c1 is not None:
            lin = np.sqrt(d3_sq)  # RMa only: PL1 has a term linear in d3D
        np.log(d3_sq, out=x)  # x = ln(d3D²)
        np.multiply(x, self.k1, out=out)
        out += self.a1
        if self.c1 is not None:
            lin *= self.c1
            out += lin
        tmp = w["f1"]
        if self.d_bp_sq is not None:
            far = np.greater(d2d_sq, self.d_bp_sq, out=w["b0"])
            np.multiply(x, self.k2, out=tmp)
            tmp += self.a2
            np.copyto(out, tmp, where=far)
        if self.a3 is not None:
            np.multiply(x, self.k3, out=tmp)
            tmp += self.a3
            np.maximum(tmp, out, out=tmp)
            if nlos is None:
                nlos = np.logical_not(los)
            np.copyto(out, tmp, where=nlos)
        return out

    def shadow_std_db(self, d2d_sq, los) -> np.ndarray:
        """σ_SF per link, dB ([n_bs, n_ue] float64)."""
        if self.std_los_near_db == self.std_los_far_db or self.d_bp_sq is None:
            los_std = self.std_los_near_db  # d2d_sq is not needed (may be None)
        else:
            los_std = np.where(np.asarray(d2d_sq) > self.d_bp_sq, self.std_los_far_db, self.std_los_near_db)
        return np.where(los, los_std, self.std_nlos_db).astype(float)


def _work(work, shape):
    if work is None:
        work = {}
    for key, dt in (("f0", float), ("f1", float), ("b0", bool)):
        buf = work.get(key)
        if buf is None or buf.shape != shape:
            work[key] = np.empty(shape, dtype=dt)
    return work


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


class PathlossModel(ABC):
    """The path-loss contract (see the module docstring). Implementations are frozen."""

    name: ClassVar[str]
    #: distances below these are clipped (m)
    min_d2d_m: ClassVar[float] = 0.0
    min_d3d_m: ClassVar[float] = 0.0
    #: validity limit of the formula (m, 2-D); beyond it the formula is extrapolated
    max_d2d_m: ClassVar[float] = math.inf
    #: LOS-state correlation distance, m (TR 38.901 Table 7.6.3.1-2)
    los_decorrelation_m: float = 50.0

    @abstractmethod
    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        """Raise ValueError when carrier or heights are outside the model's validity."""

    @abstractmethod
    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        """Coefficients for this carrier and these heights (validated)."""

    @abstractmethod
    def los_probability(self, d2d_m, h_ut_m=1.5) -> np.ndarray:
        """LOS probability per link, TR 38.901 Table 7.4.2-1 (float64 in [0, 1])."""

    @abstractmethod
    def decorrelation_m(self, los) -> np.ndarray:
        """Shadow-fading correlation distance per link, m (TR 38.901 Table 7.5-6 Part-1)."""

    def pathloss_db(self, d2d_m, d3d_m, carrier_hz, h_bs_m, h_ut_m, los=True) -> np.ndarray:
        """Path loss, dB.

        Args:
            d2d_m, d3d_m: horizontal and 3-D distances, m, broadcastable to the link shape
                (typically [n_bs, n_ue]).
            carrier_hz: carrier frequency, Hz (scalar).
            h_bs_m: BS antenna height, m (scalar or [n_bs, 1]).
            h_ut_m: UT antenna height, m (scalar or [n_ue]).
            los: bool, True for LOS links (broadcastable).

        Returns:
            float64 array of the broadcast link shape, dB. Distances under the minimum are
            clipped (see the module docstring).
        """
        p = self.plan(carrier_hz, h_bs_m, h_ut_m)
        d2 = _arr(d2d_m)
        d2d_sq = d2 * d2
        d3 = _arr(d3d_m)
        d3_sq = d3 * d3 + np.maximum(p.min_d2d_sq - d2d_sq, 0.0)
        if p.min_d3d_sq > 0.0:
            d3_sq = np.maximum(d3_sq, p.min_d3d_sq)
        los = np.asarray(los, dtype=bool)
        shape = p.link_shape(d2d_sq, d3_sq, los)
        d3_sq = np.array(np.broadcast_to(d3_sq, shape))  # a private, writable copy
        return p._from_sq(d2d_sq, d3_sq, los, None, None, _work(None, shape))

    def shadow_std_db(self, los, d2d_m=None, carrier_hz=None, h_bs_m=None, h_ut_m=None) -> np.ndarray:
        """σ_SF per link, dB (TR 38.901 Table 7.4.1-1). Distances/carrier/heights are only
        needed where σ_SF depends on them (RMa LOS)."""
        return np.where(np.asarray(los, dtype=bool), self._std_los, self._std_nlos).astype(float)

    _std_los: ClassVar[float] = 0.0
    _std_nlos: ClassVar[float] = 0.0

    def _check_carrier(self, carrier_hz, lo=0.5e9, hi=100e9, lo_text="0.5e9", hi_text="100e9"):
        check_range(carrier_hz, "carrier_hz", type(self).__name__, lo, hi, lo_text=lo_text, hi_text=hi_text)


def _dbp_prime_sq(carrier_hz, h_bs, h_ut, h_e):
    """(d'_BP)² with d'_BP = 4 h'_BS h'_UT f_c / c, TR 38.901 Table 7.4.1-1 Note 1."""
    d = 4.0 * (h_bs - h_e) * (h_ut - h_e) * carrier_hz / C_3GPP_MPS
    return d, d * d


def _std_plan(los, nlos, far=None):
    return {"std_los_near_db": los, "std_los_far_db": los if far is None else far, "std_nlos_db": nlos}


@dataclass(frozen=True)
class UMa(PathlossModel):
    """Urban Macro, TR 38.901 Table 7.4.1-1 (σ_SF 4 dB LOS, 6 dB NLOS).

    LOS:  PL1 = 28.0 + 22 log10(d3D) + 20 log10(fc)                 10 m <= d2D <= d'BP
          PL2 = 28.0 + 40 log10(d3D) + 20 log10(fc) − 9 log10(d'BP² + (hBS − hUT)²)
    NLOS: PL'  = 13.54 + 39.08 log10(d3D) + 20 log10(fc) − 0.6 (hUT − 1.5);  max(PL_LOS, PL')
    Validity: fc 0.5–100 GHz, 1.5 m <= hUT <= 22.5 m, hBS = 25 m (nominal), d2D <= 5 km.
    """

    h_e_m: float = 1.0
    los_decorrelation_m: float = 50.0

    name: ClassVar[str] = "uma"
    min_d2d_m: ClassVar[float] = 10.0
    max_d2d_m: ClassVar[float] = 5000.0
    _std_los: ClassVar[float] = 4.0
    _std_nlos: ClassVar[float] = 6.0

    def __post_init__(self):
        check_range(self.h_e_m, "h_e_m", "UMa", 0.0, 1.5, lo_open=True, hi_open=True)
        check_positive(self.los_decorrelation_m, "los_decorrelation_m", "UMa")

    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        self._check_carrier(carrier_hz)
        check_range(h_ut_m, "h_ut_m", "UMa", 1.5, 22.5)
        check_range(
            h_bs_m,
            "h_bs_m",
            "UMa",
            self.h_e_m,
            np.inf,
            lo_open=True,
            hi_open=True,
            lo_text="h_e_m",
            fix="TR 38.901 uses hBS = 25 m for UMa.",
        )

    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        self.validate(carrier_hz, h_bs_m, h_ut_m)
        fc = carrier_hz / 1e9
        h_bs, h_ut = _arr(h_bs_m), _arr(h_ut_m)
        dbp, dbp_sq = _dbp_prime_sq(carrier_hz, h_bs, h_ut, self.h_e_m)
        dh_sq = (h_bs - h_ut) ** 2
        lf = 20.0 * math.log10(fc)
        return PathlossPlan(
            a1=_arr(28.0 + lf),
            k1=_arr(22.0 * _HALF_LOG10),
            c1=None,
            d_bp_sq=dbp_sq,
            a2=28.0 + lf - 9.0 * np.log10(dbp_sq + dh_sq),
            k2=_arr(40.0 * _HALF_LOG10),
            a3=13.54 + lf - 0.6 * (h_ut - 1.5),
            k3=_arr(39.08 * _HALF_LOG10),
            min_d2d_sq=self.min_d2d_m**2,
            min_d3d_sq=0.0,
            dh_sq=dh_sq,
            **_std_plan(4.0, 6.0),
        )

    def los_probability(self, d2d_m, h_ut_m=1.5) -> np.ndarray:
        """Table 7.4.2-1, UMa: 1 for d2D <= 18 m, else
        [18/d + exp(−d/63)(1 − 18/d)]·[1 + C'(hUT)·(5/4)(d/100)³·exp(−d/150)],
        C'(hUT) = 0 for hUT <= 13 m, ((hUT − 13)/10)^1.5 for 13 m < hUT <= 23 m."""
        d = np.maximum(_arr(d2d_m), 1e-9)
        h = _arr(h_ut_m)
        c = np.where(h <= 13.0, 0.0, np.abs((h - 13.0) / 10.0) ** 1.5)
        p = (18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)) * (1.0 + c * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0))
        return np.clip(np.where(d <= 18.0, 1.0, p), 0.0, 1.0)

    def decorrelation_m(self, los) -> np.ndarray:
        return np.where(np.asarray(los, dtype=bool), 37.0, 50.0).astype(float)


@dataclass(frozen=True)
class UMiStreetCanyon(PathlossModel):
    """UMi – Street Canyon, TR 38.901 Table 7.4.1-1 (σ_SF 4 dB LOS, 7.82 dB NLOS).

    LOS:  PL1 = 32.4 + 21 log10(d3D) + 20 log10(fc)                 10 m <= d2D <= d'BP
          PL2 = 32.4 + 40 log10(d3D) + 20 log10(fc) − 9.5 log10(d'BP² + (hBS − hUT)²)
    NLOS: PL'  = 22.4 + 35.3 log10(d3D) + 21.3 log10(fc) − 0.3 (hUT − 1.5); max(PL_LOS, PL')
    h_E = 1 m. Validity: fc 0.5–100 GHz, 1.5 m <= hUT <= 22.5 m, hBS = 10 m (nominal).
    """

    los_decorrelation_m: float = 50.0

    name: ClassVar[str] = "umi"
    min_d2d_m: ClassVar[float] = 10.0
    max_d2d_m: ClassVar[float] = 5000.0
    _std_los: ClassVar[float] = 4.0
    _std_nlos: ClassVar[float] = 7.82

    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        self._check_carrier(carrier_hz)
        check_range(h_ut_m, "h_ut_m", "UMiStreetCanyon", 1.5, 22.5)
        check_range(
            h_bs_m,
            "h_bs_m",
            "UMiStreetCanyon",
            1.0,
            np.inf,
            lo_open=True,
            hi_open=True,
            fix="TR 38.901 uses hBS = 10 m for UMi.",
        )

    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        self.validate(carrier_hz, h_bs_m, h_ut_m)
        fc = carrier_hz / 1e9
        h_bs, h_ut = _arr(h_bs_m), _arr(h_ut_m)
        _, dbp_sq = _dbp_prime_sq(carrier_hz, h_bs, h_ut, 1.0)
        dh_sq = (h_bs - h_ut) ** 2
        lf = 20.0 * math.log10(fc)
        return PathlossPlan(
            a1=_arr(32.4 + lf),
            k1=_arr(21.0 * _HALF_LOG10),
            c1=None,
            d_bp_sq=dbp_sq,
            a2=32.4 + lf - 9.5 * np.log10(dbp_sq + dh_sq),
            k2=_arr(40.0 * _HALF_LOG10),
            a3=22.4 + 21.3 * math.log10(fc) - 0.3 * (h_ut - 1.5),
            k3=_arr(35.3 * _HALF_LOG10),
            min_d2d_sq=self.min_d2d_m**2,
            min_d3d_sq=0.0,
            dh_sq=dh_sq,
            **_std_plan(4.0, 7.82),
        )

    def los_probability(self, d2d_m, h_ut_m=1.5) -> np.ndarray:
        """Table 7.4.2-1, UMi – Street canyon: 1 for d2D <= 18 m, else
        18/d + exp(−d/36)(1 − 18/d)."""
        d = np.maximum(_arr(d2d_m), 1e-9)
        p = 18.0 / d + np.exp(-d / 36.0) * (1.0 - 18.0 / d)
        p = np.where(d <= 18.0, 1.0, p)
        return np.clip(np.broadcast_to(p, np.broadcast_shapes(p.shape, np.shape(h_ut_m))), 0.0, 1.0)

    def decorrelation_m(self, los) -> np.ndarray:
        return np.where(np.asarray(los, dtype=bool), 10.0, 13.0).astype(float)


@dataclass(frozen=True)
class RMa(PathlossModel):
    """Rural Macro, TR 38.901 Table 7.4.1-1 (σ_SF LOS 4 dB before d_BP, 6 dB after; NLOS 8 dB).

    LOS:  PL1 = 20 log10(40π d3D fc / 3) + min(0.03 h^1.72, 10) log10(d3D)
                − min(0.044 h^1.72, 14.77) + 0.002 log10(h) d3D          10 m <= d2D <= d_BP
          PL2 = PL1(d_BP) + 40 log10(d3D / d_BP)                          d_BP < d2D <= 10 km
    NLOS: PL' = 161.04 − 7.1 log10(W) + 7.5 log10(h) − (24.37 − 3.7 (h/hBS)²) log10(hBS)
                + (43.42 − 3.1 log10(hBS)) (log10(d3D) − 3) + 20 log10(fc)
                − (3.2 (log10(11.75 hUT))² − 4.97);  max(PL_LOS, PL')     10 m <= d2D <= 5 km
    d_BP = 2π hBS hUT fc / c (Note 5, actual heights). Validity: fc 0.5–30 GHz,
    10 m <= hBS <= 150 m, 1 m <= hUT <= 10 m, 5 m <= h, W <= 50 m (defaults h = 5 m, W = 20 m).
    """

    building_height_m: float = 5.0
    street_width_m: float = 20.0
    los_decorrelation_m: float = 60.0

    name: ClassVar[str] = "rma"
    min_d2d_m: ClassVar[float] = 10.0
    max_d2d_m: ClassVar[float] = 10000.0
    _std_los: ClassVar[float] = 4.0
    _std_nlos: ClassVar[float] = 8.0

    def __post_init__(self):
        check_range(self.building_height_m, "building_height_m", "RMa", 5.0, 50.0)
        check_range(self.street_width_m, "street_width_m", "RMa", 5.0, 50.0)

    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        self._check_carrier(carrier_hz, 0.5e9, 30e9, "0.5e9", "30e9")
        check_range(h_bs_m, "h_bs_m", "RMa", 10.0, 150.0)
        check_range(h_ut_m, "h_ut_m", "RMa", 1.0, 10.0)

    def _pl1(self, fc_ghz, d3d):
        h = self.building_height_m
        return (
            20.0 * np.log10(40.0 * np.pi * d3d * fc_ghz / 3.0)
            + min(0.03 * h**1.72, 10.0) * np.log10(d3d)
            - min(0.044 * h**1.72, 14.77)
            + 0.002 * math.log10(h) * d3d
        )

    def _dbp(self, carrier_hz, h_bs, h_ut):
        return 2.0 * np.pi * h_bs * h_ut * carrier_hz / C_3GPP_MPS

    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        self.validate(carrier_hz, h_bs_m, h_ut_m)
        fc = carrier_hz / 1e9
        h, W = self.building_height_m, self.street_width_m
        h_bs, h_ut = _arr(h_bs_m), _arr(h_ut_m)
        dbp = self._dbp(carrier_hz, h_bs, h_ut)
        dh_sq = (h_bs - h_ut) ** 2
        b1 = 20.0 + min(0.03 * h**1.72, 10.0)
        a1 = 20.0 * math.log10(40.0 * math.pi * fc / 3.0) - min(0.044 * h**1.72, 14.77)
        b3 = 43.42 - 3.1 * np.log10(h_bs)
        a3 = (
            161.04
            - 7.1 * math.log10(W)
            + 7.5 * math.log10(h)
            - (24.37 - 3.7 * (h / h_bs) ** 2) * np.log10(h_bs)
            - 3.0 * b3
            + 20.0 * math.log10(fc)
            - (3.2 * np.log10(11.75 * h_ut) ** 2 - 4.97)
        )
        return PathlossPlan(
            a1=_arr(a1),
            k1=_arr(b1 * _HALF_LOG10),
            c1=_arr(0.002 * math.log10(h)),
            d_bp_sq=dbp * dbp,
            a2=self._pl1(fc, dbp) - 40.0 * np.log10(dbp),
            k2=_arr(40.0 * _HALF_LOG10),
            a3=a3,
            k3=b3 * _HALF_LOG10,
            min_d2d_sq=self.min_d2d_m**2,
            min_d3d_sq=0.0,
            dh_sq=dh_sq,
            **_std_plan(4.0, 8.0, 6.0),
        )

    def los_probability(self, d2d_m, h_ut_m=1.5) -> np.ndarray:
        """Table 7.4.2-1, RMa: 1 for d2D <= 10 m, else exp(−(d2D − 10)/1000)."""
        d = _arr(d2d_m)
        p = np.where(d <= 10.0, 1.0, np.exp(-(d - 10.0) / 1000.0))
        return np.broadcast_to(p, np.broadcast_shapes(p.shape, np.shape(h_ut_m))).astype(float)

    def shadow_std_db(self, los, d2d_m=None, carrier_hz=None, h_bs_m=None, h_ut_m=None) -> np.ndarray:
        if d2d_m is None or carrier_hz is None or h_bs_m is None or h_ut_m is None:
            raise ValueError(
                "The 'd2d_m' parameter of RMa.shadow_std_db must be given (with carrier_hz, h_bs_m, "
                "h_ut_m): the LOS σ_SF is 4 dB before the breakpoint and 6 dB after it. Got None instead."
            )
        dbp = self._dbp(carrier_hz, _arr(h_bs_m), _arr(h_ut_m))
        los_std = np.where(_arr(d2d_m) > dbp, 6.0, 4.0)
        return np.where(np.asarray(los, dtype=bool), los_std, 8.0).astype(float)

    def decorrelation_m(self, los) -> np.ndarray:
        return np.where(np.asarray(los, dtype=bool), 37.0, 120.0).astype(float)


@dataclass(frozen=True)
class InHOffice(PathlossModel):
    """Indoor Hotspot – Office, TR 38.901 Table 7.4.1-1 (σ_SF 3 dB LOS, 8.03 dB NLOS).

    LOS:  PL = 32.4 + 17.3 log10(d3D) + 20 log10(fc)                  1 m <= d3D <= 150 m
    NLOS: PL' = 38.3 log10(d3D) + 17.30 + 24.9 log10(fc);  max(PL_LOS, PL')
    No breakpoint. LOS probability: mixed office (default) or open office, Table 7.4.2-1.
    """

    variant: str = "mixed"
    los_decorrelation_m: float = 10.0

    name: ClassVar[str] = "inh_office"
    min_d3d_m: ClassVar[float] = 1.0
    max_d2d_m: ClassVar[float] = 150.0
    _std_los: ClassVar[float] = 3.0
    _std_nlos: ClassVar[float] = 8.03

    def __post_init__(self):
        check_choice(self.variant, "variant", "InHOffice", ("mixed", "open"))

    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        self._check_carrier(carrier_hz)
        check_positive(h_bs_m, "h_bs_m", "InHOffice")
        check_positive(h_ut_m, "h_ut_m", "InHOffice")

    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        self.validate(carrier_hz, h_bs_m, h_ut_m)
        fc = carrier_hz / 1e9
        dh_sq = (_arr(h_bs_m) - _arr(h_ut_m)) ** 2
        return PathlossPlan(
            a1=_arr(32.4 + 20.0 * math.log10(fc)),
            k1=_arr(17.3 * _HALF_LOG10),
            c1=None,
            d_bp_sq=None,
            a2=None,
            k2=None,
            a3=_arr(17.30 + 24.9 * math.log10(fc)),
            k3=_arr(38.3 * _HALF_LOG10),
            min_d2d_sq=0.0,
            min_d3d_sq=self.min_d3d_m**2,
            dh_sq=dh_sq,
            **_std_plan(3.0, 8.03),
        )

    def los_probability(self, d2d_m, h_ut_m=1.0) -> np.ndarray:
        """Table 7.4.2-1. Mixed office: 1 (d <= 1.2 m), exp(−(d − 1.2)/4.7) (1.2 < d < 6.5 m),
        0.32·exp(−(d − 6.5)/32.6) (d >= 6.5 m). Open office: 1 (d <= 5 m),
        exp(−(d − 5)/70.8) (5 < d <= 49 m), 0.54·exp(−(d − 49)/211.7) (d > 49 m)."""
        d = _arr(d2d_m)
        if self.variant == "mixed":
            p = np.where(d <= 1.2, 1.0, np.where(d < 6.5, np.exp(-(d - 1.2) / 4.7), 0.32 * np.exp(-(d - 6.5) / 32.6)))
        else:
            p = np.where(
                d <= 5.0, 1.0, np.where(d <= 49.0, np.exp(-(d - 5.0) / 70.8), 0.54 * np.exp(-(d - 49.0) / 211.7))
            )
        return np.broadcast_to(p, np.broadcast_shapes(p.shape, np.shape(h_ut_m))).astype(float)

    def decorrelation_m(self, los) -> np.ndarray:
        return np.where(np.asarray(los, dtype=bool), 10.0, 6.0).astype(float)


@dataclass(frozen=True)
class FreeSpace(PathlossModel):
    """Free-space (Friis) path loss 20·log10(4π d3D f / c); every link is LOS.

    ``sigma_sf_db`` (default 0: no shadowing) and ``sf_decorrelation_m`` set the
    log-normal shadowing a scenario wants on top. d3D is clipped at ``min_distance_m``.
    """

    sigma_sf_db: float = 0.0
    sf_decorrelation_m: float = 50.0
    min_distance_m: float = 1.0
    los_decorrelation_m: float = 50.0

    name: ClassVar[str] = "free_space"

    def __post_init__(self):
        owner = type(self).__name__
        check_range(self.sigma_sf_db, "sigma_sf_db", owner, 0.0, np.inf, hi_open=True)
        check_positive(self.sf_decorrelation_m, "sf_decorrelation_m", owner)
        check_positive(self.min_distance_m, "min_distance_m", owner)

    def validate(self, carrier_hz, h_bs_m, h_ut_m) -> None:
        owner = type(self).__name__
        check_positive(carrier_hz, "carrier_hz", owner)
        check_range(h_bs_m, "h_bs_m", owner, 0.0, np.inf, hi_open=True)
        check_range(h_ut_m, "h_ut_m", owner, 0.0, np.inf, hi_open=True)

    def _a1_b1(self, carrier_hz) -> tuple[float, float]:
        return 20.0 * math.log10(4.0 * math.pi * carrier_hz / SPEED_OF_LIGHT_MPS), 20.0

    def plan(self, carrier_hz, h_bs_m, h_ut_m) -> PathlossPlan:
        self.validate(carrier_hz, h_bs_m, h_ut_m)
        a1, b1 = self._a1_b1(float(carrier_hz))
        s = self.sigma_sf_db
        return PathlossPlan(
            a1=_arr(a1),
            k1=_arr(b1 * _HALF_LOG10),
            c1=None,
            d_bp_sq=None,
            a2=None,
            k2=None,
            a3=None,
            k3=None,
            min_d2d_sq=0.0,
            min_d3d_sq=self.min_distance_m**2,
            dh_sq=(_arr(h_bs_m) - _arr(h_ut_m)) ** 2,
            **_std_plan(s, s),
        )

    def los_probability(self, d2d_m, h_ut_m=1.5) -> np.ndarray:
        return np.ones(np.broadcast_shapes(np.shape(d2d_m), np.shape(h_ut_m)))

    def shadow_std_db(self, los, d2d_m=None, carrier_hz=None, h_bs_m=None, h_ut_m=None) -> np.ndarray:
        return np.full(np.shape(los), float(self.sigma_sf_db))

    def decorrelation_m(self, los) -> np.ndarray:
        return np.full(np.shape(los), float(self.sf_decorrelation_m))


@dataclass(frozen=True)
class LogDistance(FreeSpace):
    """Log-distance path loss PL0 + 10·n·log10(d3D / d0); every link is LOS.

    Args:
        exponent: path-loss exponent n (2 free space, 2.7–3.5 urban, 3–5 shadowed urban).
        ref_distance_m: d0, m.
        ref_loss_db: PL0 at d0, dB; None = free-space loss at d0 and the carrier.
    """

    exponent: float = 3.0
    ref_distance_m: float = 1.0
    ref_loss_db: float | None = None

    name: ClassVar[str] = "log_distance"

    def __post_init__(self):
        super().__post_init__()
        check_range(self.exponent, "exponent", "LogDistance", 1.0, 10.0)
        check_positive(self.ref_distance_m, "ref_distance_m", "LogDistance")

    def _a1_b1(self, carrier_hz) -> tuple[float, float]:
        pl0 = float(fspl_db(self.ref_distance_m, carrier_hz)) if self.ref_loss_db is None else float(self.ref_loss_db)
        b = 10.0 * self.exponent
        return pl0 - b * math.log10(self.ref_distance_m), b


#: Path-loss models by the name scenario YAML uses.
PATHLOSS_MODELS: dict[str, type[PathlossModel]] = {
    "free_space": FreeSpace,
    "log_distance": LogDistance,
    "uma": UMa,
    "umi": UMiStreetCanyon,
    "rma": RMa,
    "inh_office": InHOffice,
}


def make_pathloss(kind: str, **params) -> PathlossModel:
    """Build a registered path-loss model from its YAML name and parameters."""
    if kind not in PATHLOSS_MODELS:
        raise ValueError(
            f"The 'kind' parameter of make_pathloss must be one of {', '.join(map(repr, PATHLOSS_MODELS))}. "
            f"Got {kind!r} instead."
        )
    return PATHLOSS_MODELS[kind](**params)


# ----------------------------------------------------------------------------------------
# LOS state
# ----------------------------------------------------------------------------------------


def draw_los(rng: np.random.Generator, p_los) -> np.ndarray:
    """Independent LOS draws: True with probability ``p_los`` (any shape, bool)."""
    p = np.asarray(p_los, dtype=float)
    return rng.random(p.shape) < p


class LosState:
    """Per-link LOS/NLOS state, spatially consistent: a field of position (TR 38.901
    §7.6.3.3 style).

    Each link carries a latent standard-normal field g(p) of the client's position with
    the exponential (Gudmundson) correlation exp(−|Δp| / d_LOS), d_LOS =
    ``model.los_decorrelation_m`` (Table 7.6.3.1-2), a sum of sinusoids keyed by (seed,
    client, link) (:mod:`channel._sos`). The link is LOS where Φ(g(p)) < P_LOS(d2D) — a
    correlated uniform compared with the Table 7.4.2-1 probability, so each link is LOS
    with exactly P_LOS, a client that moves a short distance keeps its state (a switch
    needs a real change of P_LOS or of order d_LOS of travel), and the state at a position
    does not depend on which positions were evaluated before.

    :meth:`los_at` evaluates the state at positions. The stateful API (:meth:`update`)
    keeps a coordinate per client along a straight path moved by the displacements given,
    and evaluates the field at that coordinate rounded down to a multiple of ``update_m``
    (default d_LOS/10: 5 m UMa/UMi, 6 m RMa, 1 m InH, where the latent still correlates at
    e^{−0.1} = 0.90): the state is held for at most ``update_m`` of travel and refreshed
    each time the client's coordinate crosses a multiple of it.

    Args:
        model: the path-loss model (gives P_LOS and d_LOS).
        n_bs, n_ue: link array shape (use n_site: LOS is per site–UE path).
        rng: generator; the state owns a child of it, and ``reset()`` replays.
        decorrelation_m: override d_LOS, m.
        update_m: refresh step of the stateful API, m (>= 0); None = d_LOS/10.
    """

    def __init__(
        self,
        model: PathlossModel,
        n_bs: int,
        n_ue: int,
        rng: np.random.Generator,
        *,
        decorrelation_m: float | None = None,
        update_m: float | None = None,
    ) -> None:
        self.model = model
        self.n_bs, self.n_ue = int(n_bs), int(n_ue)
        self.decorrelation_m = check_positive(
            model.los_decorrelation_m if decorrelation_m is None else decorrelation_m, "decorrelation_m", "LosState"
        )
        self.update_m = check_range(
            self.decorrelation_m / 10.0 if update_m is None else update_m,
            "update_m",
            "LosState",
            0.0,
            np.inf,
            hi_open=True,
        )
        self._seed = child_rng(rng, "LosState")
        self.reset()

    def latent_at(self, xy_m, cols=None) -> np.ndarray:
        """The latent g of clients ``cols`` (default all) at positions ``xy_m`` ((m, 2), m):
        [n_bs, m] float64, N(0, 1) at every point."""
        from ._sos import field_basis, field_coefficients, field_wavevectors

        ids = np.arange(self.n_ue) if cols is None else np.asarray(cols, dtype=np.int64)
        xy = np.asarray(xy_m, dtype=float).reshape(ids.size, 2)
        if ids.size == 0:
            return np.empty((self.n_bs, 0))
        kx, ky = field_wavevectors(self._seed, ids, purpose=20)
        q = field_coefficients(self._seed, ids, self.n_bs, purpose=21)
        return np.matmul(q, field_basis(kx, ky, xy[None], self.decorrelation_m))[:, :, 0].T

    def los_at(self, d2d_m, h_ut_m, xy_m, cols=None) -> np.ndarray:
        """LOS state [n_bs, m] (bool) of clients ``cols`` at positions ``xy_m`` ((m, 2), m)
        with horizontal distances ``d2d_m`` ([n_bs, m], m) and heights ``h_ut_m`` (scalar
        or (m,), m)."""
        h = np.asarray(h_ut_m, dtype=float)
        p = self.model.los_probability(np.asarray(d2d_m, dtype=float), h if h.ndim == 0 else h[None, :])
        return ndtr(self.latent_at(xy_m, cols)) < p

    def reset(self) -> None:
        """Forget the state; the next :meth:`update` evaluates it afresh (same values)."""
        self._path_m = np.zeros(self.n_ue)  # coordinate along each client's path
        self._held_m = np.full(self.n_ue, -1.0)  # coordinate of the held state (−1: none)
        self._los = np.zeros((self.n_bs, self.n_ue), dtype=bool)
        self._los_view = self._los.view()
        self._los_view.flags.writeable = False
        self.last_updated = np.arange(0)

    @property
    def los(self) -> np.ndarray:
        """[n_bs, n_ue] bool, read-only view of the current state."""
        return self._los_view

    def update(self, d2d_m, h_ut_m, displacement_m, *, squared: bool = False, cols=None) -> np.ndarray:
        """Advance by each client's displacement and return the LOS state.

        Args:
            d2d_m: [n_bs, n_ue] float64, m. Current horizontal distances (squared, m², when
                ``squared=True``: only the refreshed columns are then square-rooted); with
                ``cols``, [n_bs, m] for those clients.
            h_ut_m: scalar or (n_ue,), m (all clients, also with ``cols``).
            displacement_m: scalar, (n_ue,), or (m,) with ``cols``. Travel since the
                client's previous update.
            cols: None (every client) or (m,) distinct client indices: only those move.

        Returns:
            [n_bs, n_ue] bool (read-only view). ``self.last_updated`` holds the indices of
            the clients whose state was refreshed (ascending when ``cols`` is): those seen
            for the first time and those whose coordinate crossed a multiple of
            ``update_m``.
        """
        every = cols is None
        ids = np.arange(self.n_ue) if every else np.asarray(cols, dtype=np.int64)
        self._path_m[ids] += per_client(displacement_m, ids.size)
        s = self._path_m[ids]
        if self.update_m > 0.0:
            s = np.floor(s / self.update_m) * self.update_m
        due = s != self._held_m[ids]
        sel = due.nonzero()[0]
        self.last_updated = ids[sel]
        if sel.size == 0:
            return self._los_view
        idx = self.last_updated
        self._held_m[idx] = s[sel]
        h = np.asarray(h_ut_m, dtype=float)
        h_cols = h if h.ndim == 0 else per_client(h, self.n_ue)[idx]
        d_cols = np.asarray(d2d_m, dtype=float)
        if sel.size != ids.size:
            d_cols = d_cols[:, sel]
        if squared:
            d_cols = np.sqrt(d_cols)
        xy = np.zeros((idx.size, 2))
        xy[:, 0] = s[sel]
        self._los[:, idx] = self.los_at(d_cols, h_cols, xy, idx)
        return self._los_view

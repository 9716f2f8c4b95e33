"""Units: the one place for dB, dBm, mW and W conversions.

Arrays in, float64 arrays out (:func:`db_to_linear` … :func:`watt_to_dbm`, any shape; the
exp/log forms, fastest on big arrays). :func:`from_db` and :func:`to_db` are the pow/log10
forms (scalars or arrays: they agree with the exp/log forms to an ulp, and the simulator's
kernel keeps them so that its outputs stay bit-identical to earlier releases); :func:`db`
and :func:`dbm_to_w` are plain-float twins for per-event code, where a numpy call costs more
than the arithmetic. Conventions across fedwave: powers in dBm
(``*_dbm``), mW (``*_mw``) or W (``*_w``), gains and SINR in dB (``*_db``) or linear
(``*_linear``), 0 linear ↔ −inf dB.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["db_to_linear", "linear_to_db", "dbm_to_mw", "mw_to_dbm", "dbm_to_watt", "watt_to_dbm",
           "from_db", "to_db", "db", "dbm_to_w"]

_DB = 10.0 / math.log(10.0)  # 10·log10(x) = _DB·ln(x)


def db_to_linear(x_db) -> np.ndarray:
    """10^(x/10) (float64, same shape)."""
    return np.exp(np.asarray(x_db, dtype=float) / _DB)


def linear_to_db(x) -> np.ndarray:
    """10·log10(x) (float64, same shape; −inf for 0)."""
    with np.errstate(divide="ignore"):
        return _DB * np.log(np.asarray(x, dtype=float))


def dbm_to_mw(p_dbm) -> np.ndarray:
    """dBm → mW."""
    return db_to_linear(p_dbm)


def mw_to_dbm(p_mw) -> np.ndarray:
    """mW → dBm."""
    return linear_to_db(p_mw)


def dbm_to_watt(p_dbm) -> np.ndarray:
    """dBm → W."""
    return db_to_linear(p_dbm) * 1e-3


def watt_to_dbm(p_w) -> np.ndarray:
    """W → dBm."""
    return linear_to_db(np.asarray(p_w, dtype=float) * 1e3)


def from_db(x_db):
    """10^(x/10) as ``10.0 ** (x / 10.0)`` (a float for a float, an array for an array)."""
    return 10.0 ** (x_db / 10.0)


def to_db(x):
    """10·log10(x) as ``10.0 * np.log10(x)`` (numpy; −inf for 0, with numpy's warning)."""
    return 10.0 * np.log10(x)


def db(x: float) -> float:
    """10·log10(x) of a plain float (−inf for x ≤ 0)."""
    return 10.0 * math.log10(x) if x > 0.0 else -math.inf


def dbm_to_w(p_dbm: float) -> float:
    """dBm → W of a plain float."""
    return 10.0 ** ((p_dbm - 30.0) / 10.0)

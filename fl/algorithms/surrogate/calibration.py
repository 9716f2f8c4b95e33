"""The surrogate's learning curve fitted to real runs, and the file that carries it (torch-free).

The surrogate learner (:mod:`fl.algorithms.surrogate.algorithm`) models accuracy and loss as functions of the
information delivered so far,

    acc(n)  = a_max − (a_max − a0) · exp(−n / n_half),
    loss(n) = loss_min + (loss0 − loss_min) · exp(−n / n_half),

where n counts *delivered samples*: the sample counts of the clients whose updates were
aggregated, summed over rounds (the surrogate also discounts stale updates and scales
adaptive uploads by k / k_max; a synchronous real run has neither).

:func:`fit_learning_curve` fits (a0, a_max, n_half) to measured points by weighted least
squares (``scipy.optimize.curve_fit``; each point weighted by its 95 % Wilson interval,
sigma = half-width / 1.96, as an absolute standard error), then (loss0, loss_min) with
n_half fixed (bounded linear least squares, unweighted). Standard errors come from the
covariance of the fit; when the scatter about the curve exceeds what the intervals allow
(χ²/dof > 1) they are scaled up by sqrt(χ²/dof) — the points then disagree with the curve
more than test-prompt noise explains, and the file says so.

A calibration file (:func:`calibration_text`, read back by :func:`read_calibration`) is
YAML, read with :func:`fl.core.yamlio.safe_load` (no code runs)::

    format: fedwave-surrogate-calibration
    version: 1
    parameters: {a0: 0.19, a_max: 0.62, n_half: 1830.0, loss0: 3.1, loss_min: 0.55}
    stderr: {a0: 0.03, a_max: 0.05, n_half: 410.0, loss0: 0.2, loss_min: 0.1}
    fit: {...}      # method, points, chi2, dof, the scale applied to the errors
    runs: [...]     # the run directories it was fitted to

A surrogate scenario uses it with ``fl.options.calibration: path/to/file.yaml``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fl.core.yamlio import YamlError, safe_load

__all__ = ["FORMAT", "VERSION", "CURVE_KEYS", "LOSS_KEYS", "CalibrationError", "Calibration",
           "CurveFit", "accuracy_curve", "loss_curve", "fit_learning_curve", "read_calibration",
           "calibration_text"]

FORMAT = "fedwave-surrogate-calibration"
VERSION = 1
CURVE_KEYS = ("a0", "a_max", "n_half")  # the accuracy curve (always fitted)
LOSS_KEYS = ("loss0", "loss_min")  # the loss curve (fitted when the runs report a loss)
_Z95 = 1.959963984540054


class CalibrationError(ValueError):
    """A calibration file, or a fit, that cannot be used; the message names the file (or
    the data) and the key, and the fix."""


def accuracy_curve(n, a0: float, a_max: float, n_half: float) -> np.ndarray:
    """acc(n) = a_max − (a_max − a0)·exp(−n / n_half); n: delivered samples (float array)."""
    return a_max - (a_max - a0) * np.exp(-np.asarray(n, dtype=np.float64) / n_half)


def loss_curve(n, loss0: float, loss_min: float, n_half: float) -> np.ndarray:
    """loss(n) = loss_min + (loss0 − loss_min)·exp(−n / n_half)."""
    return loss_min + (loss0 - loss_min) * np.exp(-np.asarray(n, dtype=np.float64) / n_half)


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve.

    parameters: a0, a_max (accuracy, [0, 1]), n_half (delivered samples), and loss0,
        loss_min when a loss was fitted.
    stderr: one standard error per parameter (scaled, see ``scale``); inf when the data do
        not determine it (e.g. n_half of a flat curve).
    cov: (3, 3) covariance of (a0, a_max, n_half), scaled like ``stderr``.
    n_points: accuracy points fitted; chi2, dof: the weighted residual sum and its degrees
        of freedom; scale: the factor applied to the errors (sqrt(chi2 / dof) when above 1,
        else 1). n_loss_points: loss points fitted (0: no loss fit).
    """

    parameters: dict[str, float]
    stderr: dict[str, float]
    cov: np.ndarray
    n_points: int
    chi2: float
    dof: int
    scale: float
    n_loss_points: int = 0

    def accuracy(self, n) -> np.ndarray:
        p = self.parameters
        return accuracy_curve(n, p["a0"], p["a_max"], p["n_half"])


def _vector(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise CalibrationError(f"fit_learning_curve: '{name}' must be a 1-d array. Got shape "
                               f"{arr.shape} instead.")
    if n is not None and arr.size != n:
        raise CalibrationError(f"fit_learning_curve: '{name}' has {arr.size} entries, 'n' has {n}. "
                               "Fix: one entry per point.")
    return arr


def fit_learning_curve(n, accuracy, sigma, loss=None) -> CurveFit:
    """Fit the surrogate's curve to measured points.

    n: (P,) delivered samples at each evaluation (>= 0; the untrained model at 0).
    accuracy: (P,) accuracies in [0, 1]. sigma: (P,) their standard errors (> 0), e.g. the
        Wilson interval's half-width / 1.96.
    loss: (P,) losses or None; NaN entries are left out of the loss fit.

    Raises :class:`CalibrationError` with fewer than 4 points, a falling curve (the fitted
    a_max below a0: the surrogate models a rising one), a flat one (a_max − a0 not above
    1.96 standard errors: n_half is then not determined) or bad inputs.
    """
    from scipy.optimize import curve_fit, lsq_linear

    x = _vector("n", n)
    y = _vector("accuracy", accuracy, x.size)
    s = _vector("sigma", sigma, x.size)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(s)
    x, y, s = x[ok], y[ok], s[ok]
    if x.size < 4:
        raise CalibrationError(f"fit_learning_curve: {x.size} accuracy points; the curve has 3 "
                               "parameters and needs at least 4. Fix: calibrate on runs with more "
                               "evaluations (fl.options.eval_every: 1), or on more runs.")
    if (x < 0).any() or (y < 0).any() or (y > 1).any() or (s <= 0).any():
        raise CalibrationError("fit_learning_curve: n must be >= 0, accuracy in [0, 1] and sigma "
                               f"> 0. Got n min {x.min()}, accuracy in [{y.min()}, {y.max()}], sigma "
                               f"min {s.min()} instead.")
    if np.ptp(x) <= 0:
        raise CalibrationError("fit_learning_curve: every point has the same n; the curve's "
                               "shape cannot be fitted. Fix: runs with several evaluations.")
    first = y[x == x.min()].mean()
    n_half0 = float(np.median(x[x > 0])) if (x > 0).any() else float(x.max())
    p0 = [float(np.clip(first, 0, 1)), float(np.clip(max(y.max(), first), 0, 1)), max(n_half0, 1e-9)]
    lo = [0.0, 0.0, 1e-9 * max(float(x.max()), 1.0)]
    hi = [1.0, 1.0, np.inf]
    popt, pcov = curve_fit(accuracy_curve, x, y, p0=p0, sigma=s, absolute_sigma=True,
                           bounds=(lo, hi), method="trf", max_nfev=20_000)
    a0, a_max, n_half = (float(v) for v in popt)
    if a_max < a0 - 1e-9:
        raise CalibrationError(
            f"fit_learning_curve: the accuracy falls with delivered samples (fitted a_max "
            f"{a_max:.3f} < a0 {a0:.3f}); the surrogate models a rising curve. Fix: calibrate on "
            "runs whose learner learns (final accuracy above the untrained model's).")
    resid = (y - accuracy_curve(x, a0, a_max, n_half)) / s
    chi2 = float(resid @ resid)
    dof = int(x.size - 3)
    scale = math.sqrt(chi2 / dof) if dof > 0 and chi2 > dof else 1.0
    cov = np.asarray(pcov, dtype=np.float64) * scale ** 2
    diag = np.diag(cov)
    err = [math.sqrt(v) if np.isfinite(v) and v >= 0 else math.inf for v in diag]
    params = {"a0": a0, "a_max": a_max, "n_half": n_half}
    stderr = dict(zip(CURVE_KEYS, err))
    gain = a_max - a0
    var_gain = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    se_gain = math.sqrt(var_gain) if np.isfinite(var_gain) and var_gain > 0 else math.inf
    if gain < 1e-6 or not gain > _Z95 * se_gain:
        # a flat curve: n_half (how fast it rises) is not determined by the points
        raise CalibrationError(
            f"fit_learning_curve: the accuracy does not rise significantly with delivered samples "
            f"(a_max − a0 = {gain:.3f} ± {se_gain:.3f}, one standard error), so n_half is not "
            "determined. Fix: calibrate on runs whose learner learns (final accuracy above the "
            "untrained model's), or on longer runs.")

    n_loss = 0
    if loss is not None:
        lv = _vector("loss", loss, ok.size)[ok]
        good = np.isfinite(lv)
        n_loss = int(good.sum())
        if n_loss >= 3:
            e = np.exp(-x[good] / n_half)
            # loss = loss0·e + loss_min·(1 − e): linear in (loss0, loss_min), both >= 0
            A = np.column_stack([e, 1.0 - e])
            sol = lsq_linear(A, lv[good], bounds=(0.0, np.inf))
            l0, lmin = (float(v) for v in sol.x)
            rss = float(np.sum((A @ sol.x - lv[good]) ** 2))
            try:
                lcov = rss / (n_loss - 2) * np.linalg.inv(A.T @ A)
                lerr = [math.sqrt(v) if v >= 0 else math.inf for v in np.diag(lcov)]
            except np.linalg.LinAlgError:
                lerr = [math.inf, math.inf]
            params.update(loss0=l0, loss_min=lmin)
            stderr.update(loss0=lerr[0], loss_min=lerr[1])
        else:
            n_loss = 0
    return CurveFit(params, stderr, cov, int(x.size), chi2, dof, scale, n_loss)


# ----------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class Calibration:
    """A calibration file as read: ``parameters`` (a0, a_max, n_half, and loss0, loss_min
    when fitted), the file's ``path`` and ``sha256``, and the ``runs`` it was fitted to."""

    path: str
    sha256: str
    parameters: dict[str, float]
    runs: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line for a run's summary: the file, its hash, what it fixes."""
        p = self.parameters
        runs = f", fitted to {len(self.runs)} run(s)" if self.runs else ""
        return (f"{self.path} (sha256 {self.sha256[:12]}{runs}): a0 {p['a0']:.4g}, a_max "
                f"{p['a_max']:.4g}, n_half {p['n_half']:.4g}")


_RANGES = {
    "a0": (0.0, 1.0, "a number in [0, 1]"),
    "a_max": (0.0, 1.0, "a number in [0, 1]"),
    "n_half": (0.0, math.inf, "a number > 0 (delivered samples)"),
    "loss0": (0.0, math.inf, "a number >= 0"),
    "loss_min": (0.0, math.inf, "a number >= 0"),
}


def _number(path: str, key: str, value: Any) -> float:
    lo, hi, what = _RANGES[key]
    bad = (isinstance(value, bool) or not isinstance(value, (int, float))
           or not math.isfinite(value) or value < lo or value > hi or (key == "n_half" and value <= 0))
    if bad:
        raise CalibrationError(f"{path}: key parameters.{key} must be {what}; got {value!r}. Fix: "
                               "correct it, or write the file again with fedwave calibrate.")
    return float(value)


def read_calibration(path: str | Path) -> Calibration:
    """Read and check a calibration file (relative paths: from the working directory).

    Raises :class:`CalibrationError` naming the file and the key: a missing or unreadable
    file, invalid YAML, another ``format``/``version``, a missing or out-of-range parameter,
    an unknown parameter, a_max below a0.
    """
    p = Path(path).expanduser()
    where = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(f"{where}: no such calibration file (looked for {p.absolute()}). "
                               "Fix: give the file fedwave calibrate wrote (--out); relative "
                               "paths start at the working directory.") from None
    except OSError as exc:
        raise CalibrationError(f"{where}: cannot read the calibration file ({type(exc).__name__}: "
                               f"{exc}). Fix: check the path and permissions.") from None
    try:
        doc = safe_load(raw.decode("utf-8"), where)
    except UnicodeDecodeError:
        raise CalibrationError(f"{where}: not a text (UTF-8) file. Fix: give the YAML file "
                               "fedwave calibrate wrote.") from None
    except YamlError as exc:
        raise CalibrationError(str(exc)) from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"{where}: a calibration file is a YAML mapping; got "
                               f"{type(doc).__name__}. Fix: give the file fedwave calibrate wrote.")
    if doc.get("format") != FORMAT:
        raise CalibrationError(f"{where}: key format must be {FORMAT!r}; got {doc.get('format')!r}. "
                               "Fix: give a file written by fedwave calibrate.")
    if doc.get("version") != VERSION:
        raise CalibrationError(f"{where}: key version must be {VERSION}; got {doc.get('version')!r}. "
                               "Fix: write the file again with this fedwave's calibrate.")
    params = doc.get("parameters")
    if not isinstance(params, dict):
        raise CalibrationError(f"{where}: key parameters must be a mapping of the curve's "
                               f"parameters; got {params!r}. Fix: write the file again with "
                               "fedwave calibrate.")
    unknown = sorted(str(k) for k in params if k not in _RANGES)
    if unknown:
        raise CalibrationError(f"{where}: key parameters.{unknown[0]} is not a parameter of the "
                               f"surrogate's curve. Fix: use only {', '.join(_RANGES)}.")
    out: dict[str, float] = {}
    for key in CURVE_KEYS:
        if key not in params:
            raise CalibrationError(f"{where}: key parameters.{key} is missing. Fix: write the file "
                                   "again with fedwave calibrate.")
        out[key] = _number(where, key, params[key])
    if any(k in params for k in LOSS_KEYS):
        for key in LOSS_KEYS:
            if key not in params:
                raise CalibrationError(f"{where}: key parameters.{key} is missing (the loss curve "
                                       f"needs both {' and '.join(LOSS_KEYS)}). Fix: give both, "
                                       "or neither.")
            out[key] = _number(where, key, params[key])
    if out["a_max"] < out["a0"]:
        raise CalibrationError(f"{where}: key parameters.a_max must be >= parameters.a0 "
                               f"({out['a0']}); got {out['a_max']}. Fix: correct the file, or write "
                               "it again with fedwave calibrate.")
    runs = doc.get("runs") or []
    names = tuple(str(r.get("run_dir")) if isinstance(r, dict) else str(r) for r in runs) \
        if isinstance(runs, list) else ()
    return Calibration(where, hashlib.sha256(raw).hexdigest(), out, names)


def _yaml_number(v: float) -> Any:
    return None if not math.isfinite(v) else float(v)


def calibration_text(fit: CurveFit, runs: Sequence[Mapping[str, Any]],
                     note: str | None = None) -> str:
    """The calibration file for ``fit`` (YAML with a header comment); ``runs``: one mapping
    per run fitted (run_dir, scenario, algorithm, seed, points, ...)."""
    import yaml

    doc = {
        "format": FORMAT,
        "version": VERSION,
        "curve": "acc(n) = a_max - (a_max - a0) * exp(-n / n_half); "
                 "loss(n) = loss_min + (loss0 - loss_min) * exp(-n / n_half)",
        "axis": "n: delivered samples (the sample counts of the clients whose updates were "
                "aggregated, summed over rounds: rounds.csv samples_delivered)",
        "parameters": {k: float(v) for k, v in fit.parameters.items()},
        "stderr": {k: _yaml_number(v) for k, v in fit.stderr.items()},
        "fit": {
            "method": "weighted least squares (scipy.optimize.curve_fit), sigma = 95 % Wilson "
                      "half-width / 1.96; loss: bounded linear least squares with n_half fixed",
            "n_points": fit.n_points,
            "n_loss_points": fit.n_loss_points,
            "chi2": _yaml_number(fit.chi2),
            "dof": fit.dof,
            "errors_scaled_by": float(fit.scale),
        },
        "runs": [dict(r) for r in runs],
    }
    head = ("# fedwave calibrate: the surrogate's learning curve fitted to real runs.\n"
            "# Use it in a surrogate scenario: fl.options.calibration: <this file>\n")
    if note:
        head += "".join(f"# {line}\n" for line in note.splitlines())
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)

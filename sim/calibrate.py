"""``fedwave calibrate``: fit the surrogate's learning curve to real runs.

Each run directory gives its points: the untrained model (``summary.json`` ``initial``) at
n = 0, then every evaluated round of ``rounds.csv`` at n = the delivered samples so far
(cumulative ``samples_delivered``: the sample counts of the clients whose updates were
aggregated), with the accuracy's 95 % Wilson interval (``accuracy_lo``/``accuracy_hi``,
or from ``n_eval``) and the loss. :func:`fl.algorithms.surrogate.calibration.fit_learning_curve` fits the
surrogate's curve to the points of all runs together; :func:`calibrate` writes the
calibration file (:func:`fl.algorithms.surrogate.calibration.calibration_text`) and, optionally, a figure of the
fit against the real points (``--plot``).

A run is refused, naming it and the fix, when it has not finished, ran the surrogate (its
accuracy is itself a curve), or lacks the columns (runs written before fedwave recorded
``samples_delivered``). Runs of the async driver are accepted with a warning: their n
counts stale updates in full, where the surrogate discounts them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["RunPoints", "run_points", "calibrate", "plot_fit"]


@dataclass(frozen=True)
class RunPoints:
    """One run's points: n (delivered samples), accuracy and its Wilson interval, loss;
    arrays of shape (P,), float64, the untrained model first. ``meta``: what the
    calibration file records of the run."""

    run_dir: str
    n: np.ndarray
    accuracy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    loss: np.ndarray
    meta: dict

    @property
    def sigma(self) -> np.ndarray:
        """Standard error of each accuracy: the Wilson interval's half-width / 1.96."""
        from fl.core.metrics import Z95

        return (self.hi - self.lo) / (2 * Z95)


class CalibrateError(ValueError):
    """A run directory (or output) ``fedwave calibrate`` cannot use; names it and the fix."""


def _interval(acc: float, lo, hi, n_eval, where: str) -> tuple[float, float]:
    from fl.core.metrics import wilson_interval

    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi)
    if n_eval is not None and np.isfinite(n_eval) and n_eval >= 1:
        return wilson_interval(round(acc * n_eval), int(n_eval))
    raise CalibrateError(f"{where}: an accuracy without its interval (no accuracy_lo/accuracy_hi "
                         "and no n_eval); the fit weights each point by it. Fix: rerun the "
                         "scenario with this fedwave version.")


def run_points(run_dir: str | Path) -> RunPoints:
    """The points of a finished real run (see the module docstring); :class:`CalibrateError`
    naming the run and the fix otherwise."""
    from sim.outputs import OutputError, read_rounds, read_summary, run_status

    run_dir = Path(run_dir)
    try:
        summary = read_summary(run_dir)
        status, why = run_status(run_dir, summary)
        if status != "ok":
            raise CalibrateError(why or f"{run_dir}: the run has status {status!r}. Fix: give a "
                                 "finished run.")
        rounds = read_rounds(run_dir)
    except OutputError as exc:
        raise CalibrateError(str(exc)) from None
    if summary.get("learner") == "surrogate":
        raise CalibrateError(f"{run_dir}: a surrogate run; its accuracy is the modelled curve "
                             "itself. Fix: give runs of a real learner (fedavg_lora, kd_topk, "
                             "split_lora, fedsoda).")
    if "samples_delivered" not in rounds.columns:
        raise CalibrateError(f"{run_dir}/rounds.csv: no samples_delivered column (a run from "
                             "before fedwave recorded it); the surrogate's n is delivered "
                             "samples. Fix: rerun the scenario with this fedwave version.")
    if summary.get("driver") == "async":
        warnings.warn(f"{run_dir}: an async run; n counts its stale updates in full, where the "
                      "surrogate discounts them by (1 + staleness)^-staleness_exponent.",
                      stacklevel=2)
    missing = rounds.loc[rounds["samples_delivered"].isna(), "round"].tolist()
    if missing:
        raise CalibrateError(f"{run_dir}/rounds.csv: samples_delivered is empty for round(s) "
                             f"{missing[:5]} (a run resumed from the checkpoint of a fedwave that "
                             "did not record it). Fix: rerun the scenario with this fedwave version.")
    n_cum = rounds["samples_delivered"].cumsum().to_numpy(np.float64)
    pts: list[tuple[float, float, float, float, float]] = []
    ini = summary.get("initial") or {}
    if ini.get("accuracy") is not None:
        lo, hi = _interval(ini["accuracy"], ini.get("accuracy_lo"), ini.get("accuracy_hi"),
                           ini.get("n_eval"), f"{run_dir}/summary.json initial")
        loss = ini.get("loss")
        pts.append((0.0, float(ini["accuracy"]), lo, hi, math.nan if loss is None else float(loss)))
    col = rounds.columns
    for i, row in enumerate(rounds.itertuples(index=False)):
        r = row._asdict()
        acc = r.get("accuracy")
        if acc is None or not np.isfinite(acc):
            continue
        lo, hi = _interval(acc, r.get("accuracy_lo") if "accuracy_lo" in col else None,
                           r.get("accuracy_hi") if "accuracy_hi" in col else None,
                           r.get("n_eval") if "n_eval" in col else None,
                           f"{run_dir}/rounds.csv round {r['round']}")
        loss = r.get("loss")
        pts.append((float(n_cum[i]), float(acc), lo, hi,
                    float(loss) if loss is not None and np.isfinite(loss) else math.nan))
    if not pts:
        raise CalibrateError(f"{run_dir}: no evaluated round. Fix: give runs that evaluated "
                             "their model.")
    arr = np.array(pts, dtype=np.float64)  # (P, 5)
    delivered = rounds["samples_delivered"]
    updates = rounds.loc[delivered > 0, "n_completed"].sum()
    meta = {"run_dir": str(run_dir), "scenario": summary.get("scenario"),
            "algorithm": summary.get("algorithm"), "seed": summary.get("seed"),
            "n_points": int(len(arr)), "samples_delivered": float(n_cum[-1]) if len(n_cum) else 0.0,
            "samples_per_update": float(delivered.sum() / updates) if updates else None}
    return RunPoints(str(run_dir), arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], meta)


def calibrate(run_dirs: Sequence[str | Path], out: str | Path, plot: str | Path | None = None,
              overwrite: bool = False):
    """Fit the surrogate's curve to ``run_dirs`` and write the calibration file ``out`` (and
    the figure ``plot``). Returns (the :class:`fl.algorithms.surrogate.calibration.CurveFit`, the runs' points).

    Raises :class:`CalibrateError` for an unusable run, an existing ``out`` (unless
    ``overwrite``), and :class:`fl.algorithms.surrogate.calibration.CalibrationError` for a fit that fails.
    """
    from fl.algorithms.surrogate.calibration import calibration_text, fit_learning_curve
    from sim.outputs import atomic_write_text

    if not run_dirs:
        raise CalibrateError("fedwave calibrate: no run directory given. Fix: name one or more "
                             "finished runs of a real learner.")
    out = Path(out)
    if out.exists() and not overwrite:
        raise CalibrateError(f"{out}: exists. Fix: pass --overwrite to replace it, or another --out.")
    runs = [run_points(d) for d in run_dirs]
    algs = sorted({str(r.meta["algorithm"]) for r in runs})
    scns = sorted({str(r.meta["scenario"]) for r in runs})
    fit = fit_learning_curve(np.concatenate([r.n for r in runs]),
                             np.concatenate([r.accuracy for r in runs]),
                             np.concatenate([r.sigma for r in runs]),
                             np.concatenate([r.loss for r in runs]))
    note = None
    if len(algs) > 1 or len(scns) > 1:
        note = (f"Fitted to runs of {len(algs)} algorithm(s) ({', '.join(algs)}) and {len(scns)} "
                f"scenario(s) ({', '.join(scns)}): one curve for all of them.")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, calibration_text(fit, [r.meta for r in runs], note))
    if plot is not None:
        plot_fit(runs, fit, plot)
    return fit, runs


def plot_fit(runs: Sequence[RunPoints], fit, path: str | Path) -> Path:
    """Accuracy (with its Wilson interval) and loss against delivered samples, one colour per
    run, with the fitted curves; the accuracy curve's 95 % band from the fit's covariance
    (2,000 parameter draws)."""
    import matplotlib

    if "inline" not in matplotlib.get_backend():  # a notebook keeps its inline figures
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fl.algorithms.surrogate.calibration import accuracy_curve, loss_curve

    p = fit.parameters
    x_max = max(float(r.n.max()) for r in runs) * 1.05 or 1.0
    x = np.linspace(0.0, x_max, 200)
    has_loss = "loss0" in p
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(12 if has_loss else 6.5, 4.4),
                             squeeze=False)
    ax = axes[0, 0]
    cmap = plt.get_cmap("tab10")
    for i, r in enumerate(runs):
        label = f"{r.meta['algorithm']} seed {r.meta['seed']} ({Path(r.run_dir).name})"
        ax.errorbar(r.n, r.accuracy, yerr=[r.accuracy - r.lo, r.hi - r.accuracy], fmt="o", ms=4,
                    capsize=2, color=cmap(i % 10), label=label, alpha=0.85)
    cov = fit.cov
    if np.all(np.isfinite(cov)):
        rng = np.random.default_rng(0)
        draws = rng.multivariate_normal([p["a0"], p["a_max"], p["n_half"]], cov, size=2000,
                                        check_valid="ignore")
        draws = draws[draws[:, 2] > 0]
        if len(draws):
            curves = accuracy_curve(x[None, :], draws[:, :1], draws[:, 1:2], draws[:, 2:3])
            lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
            ax.fill_between(x, lo, hi, color="k", alpha=0.12, label="fit, 95 % band")
    se = fit.stderr
    ax.plot(x, accuracy_curve(x, p["a0"], p["a_max"], p["n_half"]), "k-", lw=2,
            label=(f"fit: a0 {p['a0']:.3f}±{se['a0']:.3f}, a_max {p['a_max']:.3f}±{se['a_max']:.3f},"
                   f"\n     n_half {p['n_half']:.4g}±{se['n_half']:.2g}"))
    ax.set(xlabel="delivered samples n", ylabel="accuracy (95 % Wilson interval)",
           title=f"accuracy: {fit.n_points} points, χ²/dof = {fit.chi2:.1f}/{fit.dof}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_loss:
        ax2 = axes[0, 1]
        for i, r in enumerate(runs):
            ax2.plot(r.n, r.loss, "o", ms=4, color=cmap(i % 10))
        ax2.plot(x, loss_curve(x, p["loss0"], p["loss_min"], p["n_half"]), "k-", lw=2,
                 label=f"fit: loss0 {p['loss0']:.3g}, loss_min {p['loss_min']:.3g} (n_half shared)")
        ax2.set(xlabel="delivered samples n", ylabel="test loss", title="loss")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.suptitle("the surrogate's learning curve fitted to real runs (fedwave calibrate)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

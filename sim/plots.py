"""Plots of a run, made from the files in its directory (so ``fedwave plot RUN_DIR`` can
redraw them): ``snr_rate.png`` (per-client SINR and rate over time), ``cell_map.png``
(sites and client trajectories), ``rounds.png`` (bits and duration per round),
``accuracy.png`` (accuracy vs simulated time, with its 95 % Wilson band). Titles say
SURROGATE when the learner was (its accuracy is modelled: no band, no untrained-model line).

A comparison or sweep directory gets ``latency_accuracy.png`` and ``pareto.png``
(:func:`plot_collection`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["plot_run", "save_trajectories", "run_curve", "mean_curve", "plot_latency_accuracy",
           "pareto_front", "plot_pareto", "plot_collection"]


def save_trajectories(run_dir: Path, traj: dict) -> None:
    """Store sampled client positions and the sites as ``trajectories.npz``."""
    import io

    from sim.outputs import atomic_write_bytes

    if not traj:
        return
    lay = traj["layout"]
    buf = io.BytesIO()
    np.savez(buf, t_s=traj["t_s"], clients=traj["clients"], xy_m=traj["xy_m"],
             bs_xy_m=np.asarray(lay.bs_xy_m), bounds_m=np.asarray(lay.bounds_m, dtype=float))
    atomic_write_bytes(Path(run_dir) / "trajectories.npz", buf.getvalue())


def plot_run(run_dir: Path, result=None) -> list[str]:
    """Draw every plot of ``run_dir`` into ``run_dir/plots``; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from sim.outputs import atomic_write_bytes

    run_dir = Path(run_dir)
    if result is not None and result.trajectories:
        save_trajectories(run_dir, result.trajectories)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    events = pd.read_parquet(run_dir / "events.parquet")
    learner = "real"
    summ = run_dir / "summary.json"
    initial: dict = {}
    if result is not None:
        learner = result.summary.get("learner", "real")
        name = result.summary.get("scenario", run_dir.name)
        initial = result.summary.get("initial") or {}
    elif summ.exists():
        s = json.loads(summ.read_text())
        learner = s.get("learner", "real")
        name = s.get("scenario", run_dir.name)
        initial = s.get("initial") or {}
    else:
        name = run_dir.name
    tag = " — SURROGATE learner" if learner == "surrogate" else ""
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    files: list[str] = []

    def save(fig, fname):
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        atomic_write_bytes(out_dir / fname, buf.getvalue())
        files.append(f"plots/{fname}")

    # 1. per-client SINR and rate over time (transfer starts and ends)
    tr = events[events["event"].isin(["send_start", "send_end", "send_failed"])]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for cid in sorted(tr["client"].dropna().unique())[:10]:
        d = tr[tr["client"] == cid]
        a1.plot(d["t_s"], d["snr_db"], ".-", lw=0.8, ms=3, label=f"client {int(cid)}")
        a2.plot(d["t_s"], d["rate_bps"] / 1e6, ".", ms=3)
    a1.set_ylabel("SINR (dB)")
    a2.set_ylabel("rate (Mbit/s)")
    a2.set_xlabel("simulated time (s)")
    a1.set_title(f"{name}: per-client SINR and rate (first 10 clients){tag}")
    if len(tr):
        a1.legend(fontsize=6, ncol=2)
    save(fig, "snr_rate.png")

    # 2. cell map with trajectories
    npz = run_dir / "trajectories.npz"
    fig, ax = plt.subplots(figsize=(6, 6))
    if npz.exists():
        z = np.load(npz)
        xy = z["xy_m"]  # (n_t, m, 2)
        for j in range(xy.shape[1]):
            ax.plot(xy[:, j, 0], xy[:, j, 1], lw=0.8)
            ax.plot(xy[-1, j, 0], xy[-1, j, 1], "k.", ms=3)
        bs = z["bs_xy_m"]
        ax.plot(bs[:, 0], bs[:, 1], "r^", ms=8, label="base stations")
        x0, x1, y0, y1 = z["bounds_m"]
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no trajectories (link model without geometry)", ha="center",
                transform=ax.transAxes)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{name}: sites and client trajectories{tag}", fontsize=9)
    save(fig, "cell_map.png")

    # 3. bits and time per round
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    r = rounds["round"]
    a1.bar(r, rounds["bits_up"] / 1e6, label="uplink")
    a1.bar(r, rounds["bits_down"] / 1e6, bottom=rounds["bits_up"] / 1e6, label="downlink")
    a1.set_ylabel("Mbit over the air")
    a1.legend(fontsize=7)
    a2.bar(r, rounds["t_end_s"] - rounds["t_start_s"])
    a2.set_ylabel("round duration (s)")
    a2.set_xlabel("round")
    a1.set_title(f"{name}: bits and time per round{tag}")
    save(fig, "rounds.png")

    # 4. accuracy (and loss, when there is one) vs simulated time, from the untrained model on;
    # a real learner's accuracy carries its 95 % Wilson band, the surrogate's is modelled
    ev = rounds.dropna(subset=["accuracy"])
    has_loss = "loss" in ev and ev["loss"].notna().any()
    surrogate = learner == "surrogate"
    fig, axes = plt.subplots(2 if has_loss else 1, 1, figsize=(7, 6 if has_loss else 4),
                             sharex=True, squeeze=False)
    for ax, col, label in zip(axes[:, 0], ("accuracy", "loss"),
                              ("accuracy", "loss (answer tokens)")):
        t, y = list(ev["t_end_s"]), list(ev[col])
        if initial.get(col) is not None:  # the untrained model at t = 0
            t, y = [0.0] + t, [initial[col]] + y
            if not surrogate:  # a modelled curve has no untrained model to compare with
                ax.axhline(initial[col], color="grey", ls=":", lw=1, label="untrained model")
        line, = ax.plot(t, y, "o-", label=col if col == "loss" else "accuracy")
        if col == "accuracy" and not surrogate:
            band = _band(ev, initial)
            if band is not None:
                ax.fill_between(band[0], band[1], band[2], color=line.get_color(), alpha=0.2,
                                lw=0, label="95 % Wilson interval")
        if ax.get_legend_handles_labels()[0] and not surrogate:
            ax.legend(fontsize=7, loc="best")
        ax.set_ylabel(label + (" (modelled: surrogate)" if surrogate else ""))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("simulated time (s)")
    axes[0, 0].set_title(f"{name}: accuracy{' and loss' if has_loss else ''} vs simulated time{tag}")
    save(fig, "accuracy.png")
    return files


def _band(ev, initial: dict):
    """(t, lo, hi) of the accuracy interval of a run's evaluations (the untrained model at
    t = 0 first when it has one), or None when the run has no intervals."""
    if "accuracy_lo" not in ev or "accuracy_hi" not in ev or ev["accuracy_lo"].isna().all():
        return None
    t, lo, hi = list(ev["t_end_s"]), list(ev["accuracy_lo"]), list(ev["accuracy_hi"])
    if initial.get("accuracy_lo") is not None and initial.get("accuracy_hi") is not None:
        t, lo, hi = [0.0] + t, [initial["accuracy_lo"]] + lo, [initial["accuracy_hi"]] + hi
    return np.asarray(t, float), np.asarray(lo, float), np.asarray(hi, float)


# ----------------------------------------------------------------------------- many runs
def run_curve(run_dir: Path) -> dict:
    """A run's accuracy against simulated time: ``t``, ``accuracy``, ``lo``, ``hi`` (arrays;
    lo/hi NaN where there is no interval), the untrained model at t = 0 first when it was
    evaluated; ``surrogate`` (bool)."""
    import pandas as pd

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = pd.read_csv(run_dir / "rounds.csv").dropna(subset=["accuracy"])
    ini = summary.get("initial") or {}
    t, acc = list(ev["t_end_s"]), list(ev["accuracy"])
    nan = [float("nan")] * len(ev)
    lo = list(ev["accuracy_lo"]) if "accuracy_lo" in ev else nan
    hi = list(ev["accuracy_hi"]) if "accuracy_hi" in ev else nan
    if ini.get("accuracy") is not None:
        t, acc = [0.0] + t, [ini["accuracy"]] + acc
        lo = [ini.get("accuracy_lo") if ini.get("accuracy_lo") is not None else float("nan")] + lo
        hi = [ini.get("accuracy_hi") if ini.get("accuracy_hi") is not None else float("nan")] + hi
    return {"t": np.asarray(t, float), "accuracy": np.asarray(acc, float),
            "lo": np.asarray(lo, float), "hi": np.asarray(hi, float),
            "surrogate": summary.get("learner") == "surrogate"}


def mean_curve(curves: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(t, mean accuracy) of several runs' step curves (each run's accuracy holds from one
    evaluation to the next) on the union of their evaluation times, up to the earliest last
    evaluation (where every run still has a value)."""
    start = max(c["t"][0] for c in curves)
    stop = min(c["t"][-1] for c in curves)
    t = np.unique(np.concatenate([c["t"] for c in curves]))
    t = t[(t >= start) & (t <= stop)]
    vals = [c["accuracy"][np.searchsorted(c["t"], t, side="right") - 1] for c in curves]  # (k, T)
    return t, np.mean(vals, axis=0)


def plot_latency_accuracy(path: Path, groups: list[tuple[str, list[Path]]], title: str) -> None:
    """``path``: accuracy against simulated time, one colour per group (an algorithm, a grid
    point). A group of one run: its curve with its 95 % Wilson band; of several (seeds): one
    faint curve and band per run and the mean over runs in bold (:func:`mean_curve`). The
    surrogate's curves are modelled: no band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    all_surrogate, any_band = True, False
    for k, (label, run_dirs) in enumerate(groups):
        color = f"C{k % 10}"
        curves = [run_curve(d) for d in run_dirs]
        surrogate = any(c["surrogate"] for c in curves)
        all_surrogate &= surrogate
        tag = " (modelled)" if surrogate else ""
        single = len(curves) == 1
        for c in curves:
            ax.step(c["t"], c["accuracy"], where="post", color=color, lw=1.6 if single else 0.8,
                    alpha=1.0 if single else 0.4, marker="o", ms=3 if single else 2,
                    label=f"{label}{tag}" if single else None)
            if not surrogate and np.isfinite(c["lo"]).any():
                any_band = True
                ax.fill_between(c["t"], c["lo"], c["hi"], step="post", color=color,
                                alpha=0.2 if single else 0.07, lw=0)
        if not single:
            t, m = mean_curve(curves)
            ax.step(t, m, where="post", color=color, lw=2.2,
                    label=f"{label}{tag}: mean of {len(curves)} seeds")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("accuracy" + (" (modelled: surrogate)" if all_surrogate else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    notes = (["bands: 95 % Wilson interval of each run"] if any_band else []) + (
        ["faint: one seed, bold: the mean of the seeds"] if any(len(d) > 1 for _, d in groups) else [])
    fig.text(0.01, 0.01, "; ".join(notes), fontsize=7, color="grey")
    _save_png(fig, path)


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower or equal cost and higher or equal
    accuracy, one of them strictly), by increasing cost."""
    order = np.lexsort((-accuracy, cost))  # by cost, the most accurate first among equals
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.asarray(front, dtype=np.int64)


def plot_pareto(path: Path, points: list[dict], title: str) -> None:
    """``path``: final accuracy against simulated time (left) and against total bits, uplink
    + downlink (right); one point per run (``label``, ``accuracy``, ``lo``, ``hi``,
    ``time_s``, ``bits``; 95 % Wilson error bars where there is an interval), one colour per
    label, and the Pareto front (accuracy up, cost down) as a dashed staircase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(p["label"] for p in points))
    acc = np.array([p["accuracy"] for p in points], float)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, xlabel in ((axes[0], "time_s", "simulated time (s)"),
                            (axes[1], "bits", "bits over the air (up + down)")):
        x = np.array([p[key] for p in points], float)
        for k, lab in enumerate(labels):
            sel = [i for i, p in enumerate(points) if p["label"] == lab]
            lo = np.array([points[i]["lo"] for i in sel], float)
            hi = np.array([points[i]["hi"] for i in sel], float)
            yerr = None
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                yerr = np.vstack([acc[sel] - lo, hi - acc[sel]])
            ax.errorbar(x[sel], acc[sel], yerr=yerr, fmt="o", color=f"C{k % 10}", ms=5,
                        capsize=3, label=lab)
        if len(points):
            front = pareto_front(x, acc)
            ax.step(x[front], acc[front], where="post", color="k", ls="--", lw=1,
                    label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final accuracy")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    from sim.outputs import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_collection(out_dir: Path) -> list[str]:
    """The figures of a comparison or sweep directory (``compare.csv`` or ``sweep.csv``):
    ``latency_accuracy.png`` (accuracy with its interval against simulated time, per
    algorithm or grid point) and ``pareto.png`` (final accuracy against simulated time and
    bits, with the Pareto front). Failed variants are left out. Returns the file names."""
    import pandas as pd

    out_dir = Path(out_dir)
    if (out_dir / "compare.csv").is_file():
        df = pd.read_csv(out_dir / "compare.csv", keep_default_na=False, na_values=[""])
        keys = ["algorithm"]
        what = "compare"
    elif (out_dir / "sweep.csv").is_file():
        df = pd.read_csv(out_dir / "sweep.csv", keep_default_na=False, na_values=[""])
        keys = list(df.columns[:list(df.columns).index("seed")])  # the grid keys
        what = "sweep"
    else:
        raise FileNotFoundError(f"{out_dir}: neither compare.csv nor sweep.csv here.")
    ok = df[df["status"] == "ok"]
    if ok.empty:
        raise ValueError(f"{out_dir}: no variant finished (status ok), nothing to draw.")

    def label(row) -> str:
        if not keys:
            return "base"
        return ",".join(f"{k.split('.')[-1]}={row[k]}" if what == "sweep" else str(row[k])
                        for k in keys)

    groups: dict[str, list[Path]] = {}
    points = []
    for _, row in ok.iterrows():
        lab = label(row)
        groups.setdefault(lab, []).append(out_dir / row["run_dir"])
        points.append({"label": lab, "accuracy": row["final_accuracy"],
                       "lo": row.get("final_accuracy_lo", float("nan")),
                       "hi": row.get("final_accuracy_hi", float("nan")),
                       "time_s": row["simulated_time_s"], "bits": row["bits_up"] + row["bits_down"]})
    surrogate = set(ok["learner"]) == {"surrogate"}
    name = out_dir.name + (" — SURROGATE learner (accuracy modelled)" if surrogate else "")
    plot_latency_accuracy(out_dir / "latency_accuracy.png", list(groups.items()),
                          f"{name}: accuracy vs simulated time")
    plot_pareto(out_dir / "pareto.png", points, f"{name}: final accuracy vs cost")
    return ["latency_accuracy.png", "pareto.png"]

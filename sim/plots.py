"""Plots of a run, made from the files in its directory (so ``fedwave plot RUN_DIR`` can
redraw them): ``snr_rate.png`` (per-client SINR and rate over time), ``cell_map.png``
(sites and client trajectories), ``rounds.png`` (bits and duration per round),
``accuracy.png`` (accuracy vs simulated time). Titles say SURROGATE when the learner was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["plot_run", "save_trajectories"]


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

    # 4. accuracy (and loss, when there is one) vs simulated time, from the untrained model on
    ev = rounds.dropna(subset=["accuracy"])
    has_loss = "loss" in ev and ev["loss"].notna().any()
    fig, axes = plt.subplots(2 if has_loss else 1, 1, figsize=(7, 6 if has_loss else 4),
                             sharex=True, squeeze=False)
    for ax, col, label in zip(axes[:, 0], ("accuracy", "loss"),
                              ("accuracy", "loss (answer tokens)")):
        t, y = list(ev["t_end_s"]), list(ev[col])
        if initial.get(col) is not None:  # the untrained model at t = 0
            t, y = [0.0] + t, [initial[col]] + y
            ax.axhline(initial[col], color="grey", ls=":", lw=1, label="untrained model")
            ax.legend(fontsize=7, loc="best")
        ax.plot(t, y, "o-")
        ax.set_ylabel(label + (" (surrogate curve)" if tag else ""))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("simulated time (s)")
    axes[0, 0].set_title(f"{name}: accuracy{' and loss' if has_loss else ''} vs simulated time{tag}")
    save(fig, "accuracy.png")
    return files

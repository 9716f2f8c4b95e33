"""Plots of a run, made from the files in its directory (so ``fedwave plot RUN_DIR`` can
redraw them), for a reader who was not there when it ran:

- ``snr_rate``: the SINR and rate of every transfer, uplink and downlink in separate
  columns, one colour per client (all clients, or an evenly spaced sample the title
  states), a marker per sample (start, end, failure); a line joins the samples of one
  transfer only, never two transfers across the gap between them.
- ``cell_map``: the cells (hexagons of the layout, or nearest-site regions clipped to the
  area), sector edges where sites have sectors, the sites, roads of vehicle groups, and the
  client trajectories — one colour and marker per client group, with a legend.
- ``rounds``: clients selected, completed and failed per round; the round's duration with
  the deadline drawn; bits over the air.
- ``accuracy``: accuracy (and loss) against simulated time. A real learner's curve starts
  at the untrained model (t = 0, a dotted line) and carries its 95 % Wilson band; the
  SURROGATE's is modelled: no band, no untrained model (it has none), and the title says so.

Files are ``plots/<name>.png`` (``outputs.plot_dpi``, 150 by default) and/or
``plots/<name>.svg`` as ``outputs.plot_format`` (png, svg, both) of the run's scenario says.
:func:`run_figures` returns the same figures unsaved (the HTML report embeds them).

A comparison or sweep directory gets ``latency_accuracy.png`` and ``pareto.png``
(:func:`plot_collection`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sim.outputs import OutputError, atomic_write_bytes, read_rounds, read_summary, save_trajectories

__all__ = ["plot_run", "run_figures", "figure_bytes", "save_trajectories", "run_curve",
           "mean_curve", "plot_latency_accuracy", "pareto_front", "plot_pareto",
           "plot_collection", "collection_figures", "plot_event_timeline", "transfer_segments",
           "client_sample", "cell_polygons", "PLOT_FORMATS", "MAX_CLIENTS_SHOWN"]

#: ``outputs.plot_format`` -> file formats written.
PLOT_FORMATS = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg")}
#: Clients drawn in ``snr_rate`` (an evenly spaced sample beyond it).
MAX_CLIENTS_SHOWN = 10
_DPI = 150
_MARKERS = ("o", "s", "D", "v", "P", "*", "X", "^", "<", ">")


def _mpl():
    """pyplot with the Agg backend (no display needed)."""
    import matplotlib

    if "inline" not in matplotlib.get_backend():  # a notebook keeps its inline figures
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "fedwave"  # the same SVG bytes for the same figure
    return plt


def figure_bytes(fig, fmt: str = "png", dpi: int = _DPI, close: bool = True) -> bytes:
    """The figure as ``fmt`` (png or svg) bytes, without a date or software stamp (the same
    figure gives the same bytes); closes it unless ``close`` is false."""
    import io

    plt = _mpl()
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    if close:
        plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- one run
def _resolved(run_dir: Path) -> dict:
    """``scenario.resolved.yaml`` of a run as a mapping ({} when the run has none)."""

    path = run_dir / "scenario.resolved.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OutputError(f"{path}: cannot be read ({type(exc).__name__}); the file is truncated "
                          "or damaged. Fix: run the scenario again with --overwrite.") from None
    return data if isinstance(data, dict) else {}


def _context(run_dir: Path, result=None) -> dict:
    """What the plots need besides rounds.csv and events.parquet: name, learner, the
    untrained model's metrics, the client count, driver and deadline, the group kinds."""

    if result is not None:
        summary = dict(result.summary)
    elif (run_dir / "summary.json").exists():
        summary = read_summary(run_dir)
    else:
        summary = {}
    scn = _resolved(run_dir)
    fl = scn.get("fl") or {}
    groups = {g.get("name"): (g.get("mobility") or {}).get("kind")
              for g in (scn.get("clients") or {}).get("groups") or [] if isinstance(g, dict)}
    return {"name": summary.get("scenario", run_dir.name),
            "learner": summary.get("learner", "real"),
            "initial": summary.get("initial") or {},
            "n_clients": summary.get("n_clients"),
            "driver": summary.get("driver") or fl.get("driver"),
            "deadline_s": fl.get("deadline_s"),
            "group_mobility": groups,
            "outputs": scn.get("outputs") or {}}


def plot_run(run_dir: Path, result=None, plot_format: str | None = None,
             dpi: int | None = None) -> list[str]:
    """Draw every plot of ``run_dir`` into ``run_dir/plots``; return the file names
    (``plots/<name>.<ext>``). ``plot_format`` (png, svg, both) and ``dpi`` default to the
    run's ``outputs`` section (png at 150 dpi)."""

    run_dir = Path(run_dir)
    if result is not None and result.trajectories:
        save_trajectories(run_dir, result.trajectories)
    ctx = _context(run_dir, result)
    fmt = plot_format or ctx["outputs"].get("plot_format") or "png"
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"The 'plot_format' parameter of plot_run must be one of "
                         f"{', '.join(PLOT_FORMATS)}. Got {fmt!r} instead.")
    dpi = int(dpi or ctx["outputs"].get("plot_dpi") or _DPI)
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    files: list[str] = []
    for stem, fig in run_figures(run_dir, result, ctx):
        exts = PLOT_FORMATS[fmt]
        for i, ext in enumerate(exts):
            data = figure_bytes(fig, ext, dpi, close=i == len(exts) - 1)
            atomic_write_bytes(out_dir / f"{stem}.{ext}", data)
            files.append(f"plots/{stem}.{ext}")
    return files


def run_figures(run_dir: Path, result=None, ctx: dict | None = None) -> list[tuple[str, object]]:
    """``(name, matplotlib Figure)`` of every plot of ``run_dir``, unsaved (close them, or
    pass them to :func:`figure_bytes`)."""

    run_dir = Path(run_dir)
    ctx = ctx or _context(run_dir, result)
    rounds = read_rounds(run_dir)
    events = _read_events(run_dir)
    return [("snr_rate", _fig_snr_rate(events, ctx)),
            ("cell_map", _fig_cell_map(run_dir, ctx)),
            ("rounds", _fig_rounds(rounds, ctx)),
            ("accuracy", _fig_accuracy(rounds, ctx))]


def _read_events(run_dir: Path):
    import pandas as pd


    path = run_dir / "events.parquet"
    if not path.is_file():
        raise OutputError(f"{run_dir}: no events.parquet here (the run has not finished). Fix: "
                          "resume or rerun it.")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is "
                          "truncated or damaged. Fix: run the scenario again with --overwrite.") from None


def _tag(ctx: dict) -> str:
    return "\nSURROGATE learner: accuracy and loss are modelled, not measured" \
        if ctx["learner"] == "surrogate" else ""


# -- snr_rate
def client_sample(clients, n_max: int = MAX_CLIENTS_SHOWN) -> np.ndarray:
    """The clients to draw: all of ``clients`` (sorted, unique) when there are at most
    ``n_max``, else ``n_max`` of them evenly spaced over the sorted ids (the first and the
    last included)."""
    ids = np.unique(np.asarray(clients, dtype=np.int64))
    if ids.size <= n_max:
        return ids
    return ids[np.unique(np.round(np.linspace(0, ids.size - 1, n_max)).astype(np.int64))]


def transfer_segments(d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t_s, snr_db, rate_bps)`` of one client's transfers in one direction (rows of
    events.parquet with event send_start/send_end/send_failed, in time order), with a NaN
    row between two transfers, so a line drawn through them joins the samples of one
    transfer and never bridges the gap to the next (transfer k starts at the k-th
    send_start)."""
    ev = d["event"].to_numpy()
    tid = np.cumsum(ev == "send_start")  # (n,) transfer of each row
    t, snr, rate = (d[c].to_numpy(dtype=float) for c in ("t_s", "snr_db", "rate_bps"))
    cut = np.flatnonzero(np.diff(tid) != 0) + 1  # rows that start a new transfer
    ins = lambda a: np.insert(a, cut, np.nan)  # noqa: E731
    return ins(t), ins(snr), ins(rate)


_SEND_MARK = {"send_start": ("o", "transfer start (rate: at start)"),
              "send_end": ("s", "transfer end (rate: mean over the transfer)"),
              "send_failed": ("X", "transfer failed")}


def _fig_snr_rate(events, ctx: dict):
    plt = _mpl()
    from matplotlib.lines import Line2D

    tr = events[events["event"].isin(list(_SEND_MARK)) & events["client"].notna()]
    present = np.unique(tr["client"].to_numpy(dtype=np.int64))
    shown = client_sample(present)
    n_all = ctx.get("n_clients") or len(present)
    if len(present) == 0:
        what = "no transfers"
    elif len(shown) < len(present):
        what = f"showing {len(shown)} of {n_all} clients (evenly spaced ids)"
    elif len(present) < n_all:
        what = f"all {len(present)} clients that sent or received (of {n_all})"
    else:
        what = f"all {n_all} clients"
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True, sharey="row",
                             layout="constrained", squeeze=False)
    handles = []
    for col, (direction, label) in enumerate((("up", "uplink (client → BS)"),
                                             ("down", "downlink (BS → client)"))):
        a_snr, a_rate = axes[0, col], axes[1, col]
        a_snr.set_title(label, fontsize=10)
        sub = tr[tr["direction"] == direction]
        if sub.empty:
            a_snr.text(0.5, 0.5, f"no {label.split()[0]} transfers", ha="center",
                       transform=a_snr.transAxes, color="grey")
        for k, cid in enumerate(shown):
            d = sub[sub["client"] == cid].sort_values("t_s", kind="stable")
            color = f"C{k % 10}"
            if col == 0:
                handles.append(Line2D([], [], color=color, marker="o", ms=4, lw=1,
                                      label=f"client {int(cid)}"))
            if d.empty:
                continue
            t, snr, rate = transfer_segments(d)
            a_snr.plot(t, snr, "-", color=color, lw=0.8, alpha=0.7)
            a_rate.plot(t, rate / 1e6, "-", color=color, lw=0.8, alpha=0.7)
            for ev, (marker, _) in _SEND_MARK.items():
                e = d[d["event"] == ev]
                if e.empty:
                    continue
                kw = dict(ls="none", marker=marker, ms=4 if ev != "send_failed" else 7,
                          color=color, mec="k" if ev == "send_failed" else color, mew=0.6)
                a_snr.plot(e["t_s"], e["snr_db"], **kw)
                a_rate.plot(e["t_s"], e["rate_bps"] / 1e6, **kw)
        a_snr.grid(alpha=0.3)
        a_rate.grid(alpha=0.3)
        a_rate.set_xlabel("simulated time (s)")
    axes[0, 0].set_ylabel("SINR (dB)")
    axes[1, 0].set_ylabel("rate (Mbit/s)")
    kinds = [Line2D([], [], ls="none", marker=m, color="grey", mec="k" if ev == "send_failed" else "grey",
                    label=lab) for ev, (m, lab) in _SEND_MARK.items()]
    kinds.append(Line2D([], [], color="grey", lw=0.8, label="joins the samples of one transfer"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=7, title="client",
                   title_fontsize=8)
    fig.legend(handles=kinds, loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle(f"{ctx['name']}: SINR and rate of each transfer, {what}{_tag(ctx)}", fontsize=10)
    return fig


# -- cell_map
def _clip(poly: np.ndarray, normal: np.ndarray, c: float) -> np.ndarray:
    """The part of convex polygon ``poly`` (k, 2) where ``normal · p <= c``
    (Sutherland–Hodgman against one half-plane)."""
    eps = 1e-9 * (abs(c) + float(np.abs(normal).sum()) + 1.0)  # on the line counts as inside
    out: list[np.ndarray] = []
    k = len(poly)
    for i in range(k):
        p, q = poly[i], poly[(i + 1) % k]
        fp, fq = normal @ p - c, normal @ q - c
        if fp <= eps:
            out.append(p)
        if (fp < -eps and fq > eps) or (fq < -eps and fp > eps):
            out.append(p + (q - p) * (fp / (fp - fq)))
    keep = [v for j, v in enumerate(out)  # a vertex met twice (a corner on the line) once
            if not np.allclose(v, out[j - 1], rtol=0.0, atol=1e-6) or len(out) == 1]
    return np.asarray(keep, dtype=float).reshape(-1, 2)


def cell_polygons(site_xy_m, bounds_m, cell_radius_m: float = math.nan) -> list[np.ndarray]:
    """One polygon (k, 2) per site, m: the points of the area ``bounds_m`` (xmin, xmax,
    ymin, ymax) nearer to that site than to any other (its Voronoi region), cut to the
    site's hexagon of circumradius ``cell_radius_m`` (vertices at 0° + 60°·k, as
    :mod:`channel.geometry` lays cells out) when that is finite."""
    sites = np.asarray(site_xy_m, dtype=float).reshape(-1, 2)
    x0, x1, y0, y1 = (float(v) for v in bounds_m)
    rect = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    ang = np.radians(30.0 + 60.0 * np.arange(6))
    hex_normals = np.stack([np.cos(ang), np.sin(ang)], axis=1)  # (6, 2), the edges' normals
    out = []
    for i, p in enumerate(sites):
        poly = rect
        for j, q in enumerate(sites):
            if j != i and len(poly):
                poly = _clip(poly, q - p, (q @ q - p @ p) / 2.0)
        if math.isfinite(cell_radius_m):
            for n in hex_normals:
                if len(poly):
                    poly = _clip(poly, n, n @ p + cell_radius_m * math.sqrt(3.0) / 2.0)
        out.append(poly)
    return out


def _ray_length(origin: np.ndarray, angle_deg: float, poly: np.ndarray) -> float:
    """Distance from ``origin`` (inside convex ``poly``) to its boundary along ``angle_deg``."""
    d = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
    best = math.inf
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        m = np.column_stack([d, a - b])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        t, s = np.linalg.solve(m, a - origin)
        if t > 1e-9 and -1e-9 <= s <= 1 + 1e-9:
            best = min(best, t)
    return best if math.isfinite(best) else 0.0


def _fig_cell_map(run_dir: Path, ctx: dict):
    plt = _mpl()
    from matplotlib.lines import Line2D

    npz = run_dir / "trajectories.npz"
    if not npz.exists():
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        ax.text(0.5, 0.5, "no trajectories (link model without geometry)", ha="center",
                transform=ax.transAxes)
        ax.set_title(f"{ctx['name']}: cell map", fontsize=10)
        return fig
    z = np.load(npz, allow_pickle=False)
    x0, x1, y0, y1 = z["bounds_m"]
    ratio = (y1 - y0) / max(x1 - x0, 1e-9)
    to_scale = 0.25 <= ratio <= 4.0  # else a long street would be a sliver: stretch it, say so
    fig, ax = plt.subplots(figsize=(10.5, min(max(6.0 * ratio, 3.5), 7.5) + 1.2),
                           layout="constrained")
    handles = []
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls=":", lw=1, ec="grey"))
    handles.append(Line2D([], [], ls=":", color="grey", label="area clients move in"))
    sites = z["site_xy_m"] if "site_xy_m" in z else np.unique(z["bs_xy_m"], axis=0)
    radius = float(z["cell_radius_m"]) if "cell_radius_m" in z else math.nan
    polys = cell_polygons(sites, z["bounds_m"], radius)
    for poly in polys:
        if len(poly):
            ax.add_patch(plt.Polygon(poly, closed=True, fill=False, lw=1.2, ec="0.25"))
    if len(sites) == 1 and math.isfinite(radius):
        cell = f"cell (hexagon, circumradius {radius:g} m)"
    else:
        cell = "cell boundary (hexagon)" if math.isfinite(radius) else "cell boundary (nearest site)"
    handles.append(Line2D([], [], color="0.25", lw=1.2, label=cell))
    az = z["bs_azimuth_deg"] if "bs_azimuth_deg" in z else np.full(len(z["bs_xy_m"]), np.nan)
    sob = z["site_of_bs"] if "site_of_bs" in z else np.arange(len(z["bs_xy_m"]))
    n_sec = np.bincount(sob, minlength=len(sites))
    if np.isfinite(az).any():
        for s, p in enumerate(sites):
            mine = az[(sob == s) & np.isfinite(az)]
            if mine.size < 2:
                continue
            half = 180.0 / mine.size  # sectors split the circle evenly around their boresights
            for b in mine:
                e = (b + half) % 360.0
                length = _ray_length(p, e, polys[s]) if len(polys[s]) else 0.0
                ax.plot([p[0], p[0] + length * math.cos(math.radians(e))],
                        [p[1], p[1] + length * math.sin(math.radians(e))], "--", color="0.4", lw=0.9)
        handles.append(Line2D([], [], ls="--", color="0.4", lw=0.9,
                              label=f"sector edge ({int(n_sec.max())} sectors per site)"))
    if "road_xy_m" in z and len(z["road_xy_m"]):
        for (a, b), g in zip(z["road_xy_m"], z["road_groups"]):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="0.6", lw=7, alpha=0.35,
                    solid_capstyle="butt", zorder=1)
        names = ", ".join(dict.fromkeys(str(g) for g in z["road_groups"]))
        handles.append(Line2D([], [], color="0.6", lw=7, alpha=0.35, label=f"road ({names})"))
    ax.plot(sites[:, 0], sites[:, 1], "k^", ms=10, zorder=5)
    handles.append(Line2D([], [], ls="none", marker="^", color="k", ms=8,
                          label=f"base station site{'s' if len(sites) > 1 else ''}"))
    if len(sites) > 1:
        for s, p in enumerate(sites):
            ax.annotate(str(s), p, xytext=(5, 5), textcoords="offset points", fontsize=7)
    xy = z["xy_m"]  # (T, m, 2)
    groups = z["groups"] if "groups" in z else np.array(["clients"] * xy.shape[1])
    n_all = int(z["n_clients"]) if "n_clients" in z else xy.shape[1]
    names = list(dict.fromkeys(str(g) for g in groups))
    for k, g in enumerate(names):
        color, marker = f"C{k % 10}", _MARKERS[k % len(_MARKERS)]
        cols = np.flatnonzero(groups == g)
        for j in cols:
            ax.plot(xy[:, j, 0], xy[:, j, 1], "-", color=color, lw=0.8, alpha=0.6, zorder=3)
            ax.plot(xy[0, j, 0], xy[0, j, 1], marker, mfc="none", mec=color, ms=5, zorder=4)
            ax.plot(xy[-1, j, 0], xy[-1, j, 1], marker, color=color, ms=5, zorder=4)
        kind = ctx["group_mobility"].get(g)
        handles.append(Line2D([], [], color=color, marker=marker, ms=5, lw=0.8,
                              label=f"{g}{f' ({kind})' if kind else ''}: {len(cols)} shown"))
    handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="k", ms=5,
                          label="start (hollow) → end (filled)"))
    mx, my = 0.03 * (x1 - x0), 0.03 * (y1 - y0)
    ax.set_xlim(x0 - mx, x1 + mx)
    ax.set_ylim(y0 - my, y1 + my)
    if to_scale:
        ax.set_aspect("equal")
    ax.set_xlabel("x (m)" + ("" if to_scale else "  (axes not to scale: y stretched)"))
    ax.set_ylabel("y (m)")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    shown = "all" if xy.shape[1] >= n_all else f"{xy.shape[1]} of"
    ax.set_title(f"{ctx['name']}: cells, sites and client trajectories\n"
                 f"showing {shown} {n_all} clients over the whole run", fontsize=10)
    return fig


# -- rounds
def _fig_rounds(rounds, ctx: dict):
    plt = _mpl()

    fig, (a0, a1, a2) = plt.subplots(3, 1, figsize=(10, 8), sharex=True, layout="constrained")
    r = rounds["round"].to_numpy()
    w = 0.28
    a0.bar(r - w, rounds["n_selected"], w, color="0.7", label="selected")
    a0.bar(r, rounds["n_completed"], w, color="C2", label="completed (update delivered)")
    a0.bar(r + w, rounds["n_failed"], w, color="C3", label="failed (deadline, outage, drop-out)")
    a0.set_ylabel("clients")
    a0.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    a0.grid(alpha=0.3, axis="y")
    dur = rounds["t_end_s"] - rounds["t_start_s"]
    a1.bar(r, dur, color="C0", label="round duration")
    deadline, sync = ctx.get("deadline_s"), ctx.get("driver") != "async"
    if deadline is not None and sync:
        a1.axhline(deadline, color="C3", ls="--", lw=1.2, label=f"deadline ({deadline:g} s)")
    a1.set_ylabel("duration (s)")
    a1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    a1.grid(alpha=0.3, axis="y")
    if not sync:
        a1.set_title("async driver: a 'round' is an aggregation; the deadline"
                     + (f" ({deadline:g} s)" if deadline is not None else "")
                     + " applies to each client task", fontsize=8)
    a2.bar(r, rounds["bits_up"] / 1e6, label="uplink")
    a2.bar(r, rounds["bits_down"] / 1e6, bottom=rounds["bits_up"] / 1e6, label="downlink")
    a2.set_ylabel("Mbit over the air")
    a2.set_xlabel("round")
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    a2.grid(alpha=0.3, axis="y")
    from matplotlib.ticker import MaxNLocator

    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{ctx['name']}: clients, time and bits per round{_tag(ctx)}", fontsize=10)
    return fig


# -- accuracy
def _fig_accuracy(rounds, ctx: dict):
    """Accuracy (and loss) against simulated time. A real learner: from the untrained
    model at t = 0 (a dotted line at its value) with the 95 % Wilson band; the surrogate:
    its modelled curve at the evaluations only."""
    plt = _mpl()

    initial, surrogate = ctx["initial"], ctx["learner"] == "surrogate"
    ev = rounds.dropna(subset=["accuracy"])
    has_loss = "loss" in ev and ev["loss"].notna().any()
    fig, axes = plt.subplots(2 if has_loss else 1, 1, figsize=(8, 6.5 if has_loss else 4),
                             sharex=True, squeeze=False, layout="constrained")
    for ax, col, label in zip(axes[:, 0], ("accuracy", "loss"),
                              ("accuracy", "loss (answer tokens)")):
        t, y = list(ev["t_end_s"]), list(ev[col])
        if initial.get(col) is not None and not surrogate:  # the untrained model at t = 0
            t, y = [0.0] + t, [initial[col]] + y
            ax.axhline(initial[col], color="grey", ls=":", lw=1, label="untrained model")
        line, = ax.plot(t, y, "o-", ms=4,
                        label=f"{col} (modelled: surrogate curve)" if surrogate else col)
        if col == "accuracy" and not surrogate:
            band = _band(ev, initial)
            if band is not None:
                ax.fill_between(band[0], band[1], band[2], color=line.get_color(), alpha=0.2,
                                lw=0, label="95 % Wilson interval")
        ax.legend(fontsize=7, loc="best")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("simulated time (s)")
    fig.suptitle(f"{ctx['name']}: accuracy{' and loss' if has_loss else ''} vs simulated "
                 f"time{_tag(ctx)}", fontsize=10)
    return fig


def _band(ev, initial: dict):
    """(t, lo, hi) of the accuracy interval of a run's evaluations (the untrained model at
    t = 0 first when it has one), or None when the run has no intervals."""
    if "accuracy_lo" not in ev or "accuracy_hi" not in ev or ev["accuracy_lo"].isna().all():
        return None
    t, lo, hi = list(ev["t_end_s"]), list(ev["accuracy_lo"]), list(ev["accuracy_hi"])
    if initial.get("accuracy_lo") is not None and initial.get("accuracy_hi") is not None:
        t, lo, hi = [0.0] + t, [initial["accuracy_lo"]] + lo, [initial["accuracy_hi"]] + hi
    return np.asarray(t, float), np.asarray(lo, float), np.asarray(hi, float)


# -- events (the HTML report)
def plot_event_timeline(events, name: str = "", max_per_kind: int = 5000):
    """A figure: one row per event kind, a tick at each event's simulated time (at most
    ``max_per_kind`` per kind, evenly spaced through the kind's events, saying so), round
    starts as faint vertical lines."""
    plt = _mpl()

    kinds = list(dict.fromkeys(events["event"].tolist()))
    fig, ax = plt.subplots(figsize=(10, 0.32 * max(len(kinds), 3) + 1.4), layout="constrained")
    sampled = False
    for i, k in enumerate(kinds):
        t = events.loc[events["event"] == k, "t_s"].to_numpy(dtype=float)
        if t.size > max_per_kind:
            t = t[np.round(np.linspace(0, t.size - 1, max_per_kind)).astype(np.int64)]
            sampled = True
        ax.plot(t, np.full(t.size, i), "|", color=f"C{i % 10}", ms=8, mew=0.8)
    for t0 in events.loc[events["event"] == "round_start", "t_s"]:
        ax.axvline(t0, color="0.85", lw=0.6, zorder=0)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=7)
    ax.set_ylim(len(kinds) - 0.5, -0.5)
    ax.set_xlabel("simulated time (s)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{name}: events over simulated time (grey: round starts)"
                 + (f"; at most {max_per_kind} ticks per kind" if sampled else ""), fontsize=9)
    return fig


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
    _save_png(_fig_latency_accuracy(groups, title), path)


def _fig_latency_accuracy(groups: list[tuple[str, list[Path]]], title: str):
    plt = _mpl()

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
    return fig


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
    _save_png(_fig_pareto(points, title), path)


def _fig_pareto(points: list[dict], title: str):
    plt = _mpl()

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
    return fig


def _save_png(fig, path: Path) -> None:

    atomic_write_bytes(Path(path), figure_bytes(fig, "png", _DPI))


def plot_collection(out_dir: Path) -> list[str]:
    """The figures of a comparison or sweep directory (``compare.csv`` or ``sweep.csv``):
    ``latency_accuracy.png`` (accuracy with its interval against simulated time, per
    algorithm or grid point) and ``pareto.png`` (final accuracy against simulated time and
    bits, with the Pareto front). Failed variants are left out. Returns the file names."""
    names = []
    for name, fig in collection_figures(out_dir):
        _save_png(fig, Path(out_dir) / f"{name}.png")
        names.append(f"{name}.png")
    return names


def collection_figures(out_dir: Path) -> list[tuple[str, object]]:
    """``(name, Figure)`` of :func:`plot_collection`'s plots, unsaved."""
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
    return [("latency_accuracy", _fig_latency_accuracy(list(groups.items()),
                                                       f"{name}: accuracy vs simulated time")),
            ("pareto", _fig_pareto(points, f"{name}: final accuracy vs cost"))]

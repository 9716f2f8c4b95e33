"""The run directory: resolved scenario, versions, rounds.csv, events.parquet, summary.json,
plots. Every file is written atomically (temp file, then rename); a failed run leaves
``error.txt`` and a ``summary.json`` with ``status: "failed"`` saying why.

Layout of ``runs/<name>-<timestamp>/``:

- ``scenario.resolved.yaml``: the scenario with all defaults filled in (re-runnable).
- ``versions.json``: python, numpy, simpy, pandas, pyarrow, torch (if loaded), fedwave.
- ``rounds.csv``: one row per round (see :data:`sim.simulation.ROUND_COLUMNS`), then the
  algorithm's own columns.
- ``events.parquet``: the event trace (columns documented in :mod:`sim.trace`).
- ``eval.parquet`` (real learners): how every evaluation scored each test prompt, one row
  per (evaluation, prompt): ``round`` (int32; −1 is the untrained model), ``prompt``
  (int64, the prompt's index in the dataset), ``correct`` (bool), ``label`` and
  ``predicted`` (the true label and the label ranked first, as text). Two runs scored on
  the same prompts are compared pairwise from it (:func:`read_eval`,
  :func:`fl.core.metrics.paired_difference`). The surrogate has no test prompts (its accuracy is
  modelled) and writes none.
- ``summary.json``: scenario, seed, versions, wall/simulated time, totals, final metrics,
  ``learner: real|surrogate``, ``status: ok|failed``.
- ``trajectories.npz``: sampled client positions, groups, sites, sectors and roads (the
  cell map's data; see :func:`save_trajectories`).
- ``plots/*.png`` (or ``.svg``, as ``outputs.plot_format`` says): see :mod:`sim.plots`.
- ``report.html`` (``fedwave report DIR --html``): see :mod:`sim.report`.

- ``checkpoint.zip`` (sync driver): the state at the last round boundary, for
  ``fedwave run --resume`` (see :meth:`sim.simulation.Simulation.resume`); a
  :mod:`fl.core.statefile` archive, which cannot execute code.

A directory is never silently reused: :func:`claim_out_dir` refuses a non-empty one unless
the caller resumes it or asked to overwrite it (then it is emptied first, so nothing stale
remains). While a run goes on its ``summary.json`` says ``"status": "running"``; an
interrupted run says ``"interrupted"`` (or stays ``"running"`` when the process was killed
outright), and :func:`run_status` tells the two apart.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from fl.core.statefile import atomic_write_bytes

__all__ = ["make_run_dir", "atomic_write_text", "atomic_write_bytes", "versions",
           "write_run", "write_failure", "write_started", "write_interrupted", "claim_out_dir",
           "RunDirError", "OutputError", "run_status", "read_summary", "read_rounds",
           "EVAL_COLUMNS", "eval_table", "read_eval"]

# Files by which a directory is recognised as fedwave's own (the only kind --overwrite empties).
_OWN_FILES = ("summary.json", "error.txt", "scenario.resolved.yaml", "sweep.yaml", "sweep.csv",
              "compare.json", "compare.csv", "checkpoint.zip", "checkpoint.pkl", "rounds.csv",
              "events.parquet", "eval.parquet")

#: Columns of ``eval.parquet`` (see the module docstring).
EVAL_COLUMNS = ("round", "prompt", "correct", "label", "predicted")


class RunDirError(ValueError):
    """An output directory that fedwave will not write into as asked."""


class OutputError(ValueError):
    """A run directory's file that is missing, truncated or damaged."""


def make_run_dir(name: str, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """``out`` if given, else ``runs/<name>-<UTC timestamp>`` (made unique)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = Path(root) / f"{name}-{stamp}"
        i = 1
        while path.exists():
            path = Path(root) / f"{name}-{stamp}-{i}"
            i += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False,
                  what: str = "run", flags: str = "--overwrite, --resume") -> Path:
    """Make ``out`` ready for a new run (or a resumed one) without destroying anything silently.

    A missing or empty directory is used as is. A non-empty one is refused (``RunDirError``
    naming the fix) unless ``resume`` (kept as it is) or ``overwrite`` (emptied first, so no
    stale file of the old run remains — and only if it looks like fedwave's own output).
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a directory. Fix: choose another --out.")
    used = path.is_dir() and any(path.iterdir())
    if resume or not used:
        path.mkdir(parents=True, exist_ok=True)
        return path
    if not overwrite:
        raise RunDirError(f"--out {path}: the directory is not empty (it holds an earlier {what}: "
                          f"{_listing(path)}); fedwave never replaces a {what} silently. Fix: "
                          f"choose a new --out, or pass {flags}.")
    if not any((path / f).exists() for f in _OWN_FILES):
        raise RunDirError(f"--out {path}: not a fedwave output directory (none of "
                          f"{', '.join(_OWN_FILES[:4])}, ... in it), so --overwrite will not "
                          "empty it. Fix: choose a new or empty --out.")
    import shutil

    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return path


def _listing(path: Path, n: int = 4) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries that shape results."""
    import numpy
    import pandas
    import pyarrow
    import simpy

    out = {"python": platform.python_version(), "numpy": numpy.__version__,
           "simpy": getattr(simpy, "__version__", "unknown"), "pandas": pandas.__version__,
           "pyarrow": pyarrow.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    try:
        from importlib.metadata import version

        out["fedwave"] = version("fedwave")
    except Exception:  # noqa: BLE001  (not installed: running from a checkout)
        out["fedwave"] = "unknown"
    return out


def _json(obj: Any) -> str:
    def default(o):
        try:
            import numpy as np

            if isinstance(o, np.generic):
                return o.item()
        except ImportError:
            pass
        return str(o)

    return json.dumps(obj, indent=2, sort_keys=False, default=default, allow_nan=False) + "\n"


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so summary.json is strict JSON."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_resolved(run_dir: Path, scenario) -> None:
    from sim.scenario import dump_scenario

    atomic_write_text(run_dir / "scenario.resolved.yaml", dump_scenario(scenario))
    atomic_write_text(run_dir / "versions.json", _json(versions()))


def save_trajectories(run_dir: Path, traj: dict) -> None:
    """Store sampled client positions and the layout as ``trajectories.npz``: ``t_s`` (T,),
    ``clients`` (m,) ids, ``xy_m`` (T, m, 2), ``groups`` (m,) group names, ``n_clients``,
    the sites (``bs_xy_m``, ``site_xy_m``, ``site_of_bs``, ``bs_azimuth_deg``,
    ``cell_radius_m``, ``bounds_m``) and roads (``road_xy_m`` (R, 2, 2), ``road_groups``)."""
    import io

    import numpy as np

    if not traj:
        return
    lay = traj["layout"]
    roads = traj.get("roads") or []
    buf = io.BytesIO()
    np.savez(buf, t_s=traj["t_s"], clients=traj["clients"], xy_m=traj["xy_m"],
             bs_xy_m=np.asarray(lay.bs_xy_m), bounds_m=np.asarray(lay.bounds_m, dtype=float),
             site_xy_m=np.asarray(lay.site_xy_m), site_of_bs=np.asarray(lay.site_of_bs),
             bs_azimuth_deg=np.asarray(lay.bs_azimuth_deg, dtype=float),
             cell_radius_m=np.float64(lay.cell_radius_m),
             groups=np.asarray(traj.get("groups", ["clients"] * len(traj["clients"])), dtype=str),
             n_clients=np.int64(traj.get("n_clients", len(traj["clients"]))),
             road_xy_m=np.asarray([[a, b] for _, a, b in roads], dtype=float).reshape(-1, 2, 2),
             road_groups=np.asarray([g for g, _, _ in roads], dtype=str))
    atomic_write_bytes(Path(run_dir) / "trajectories.npz", buf.getvalue())


def write_run(run_dir: Path, result, plot: Callable[[Path, Any], list[str]] | None = None) -> dict:
    """Write rounds.csv, events.parquet, eval.parquet, trajectories.npz and summary.json of
    ``result``; ``plot(run_dir, result)`` draws the plots and returns their file names
    (e.g. :func:`sim.plots.plot_run`; None: no plots)."""
    import io

    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "rounds.csv", result.rounds.to_csv(index=False))
    buf = io.BytesIO()
    pq.write_table(result.tracer.to_arrow(), buf)
    atomic_write_bytes(run_dir / "events.parquet", buf.getvalue())
    if result.prompt_results:
        buf = io.BytesIO()
        pq.write_table(eval_table(result.prompt_results), buf)
        atomic_write_bytes(run_dir / "eval.parquet", buf.getvalue())
    summary = dict(result.summary)
    summary["status"] = "ok"
    summary["versions"] = versions()
    summary["run_dir"] = str(run_dir)
    # the cell map's data, kept with or without plots (fedwave plot and report draw from it)
    save_trajectories(run_dir, getattr(result, "trajectories", None) or {})
    plot_files = plot(run_dir, result) if plot is not None else []
    summary["plots"] = plot_files
    summary = _clean(summary)
    atomic_write_text(run_dir / "summary.json", _json(summary))
    return summary


def eval_table(prompt_results):
    """``eval.parquet`` as a pyarrow Table from (round, :class:`fl.core.metrics.PromptResults`)
    pairs, in order: a few hundred rows per evaluation."""
    import numpy as np
    import pyarrow as pa

    def names(res, idx):
        return np.asarray(res.label_names, dtype=object)[np.asarray(idx, dtype=np.int64)]

    parts = [(np.full(len(res.prompt), rnd, dtype=np.int32), res) for rnd, res in prompt_results]
    cols = {
        "round": np.concatenate([r for r, _ in parts]),
        "prompt": np.concatenate([np.asarray(res.prompt, dtype=np.int64) for _, res in parts]),
        "correct": np.concatenate([np.asarray(res.correct, dtype=bool) for _, res in parts]),
        "label": np.concatenate([names(res, res.label) for _, res in parts]),
        "predicted": np.concatenate([names(res, res.predicted) for _, res in parts]),
    }
    schema = pa.schema([("round", pa.int32()), ("prompt", pa.int64()), ("correct", pa.bool_()),
                        ("label", pa.string()), ("predicted", pa.string())])
    return pa.table({k: cols[k] for k in EVAL_COLUMNS}, schema=schema)


def read_eval(run_dir: str | Path):
    """``run_dir/eval.parquet`` as a DataFrame (columns :data:`EVAL_COLUMNS`), or None when the
    run has none (the surrogate, a run from before fedwave wrote it); :class:`OutputError`
    for a damaged file."""
    import pandas as pd

    path = Path(run_dir) / "eval.parquet"
    if not path.is_file():
        return None
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is "
                          "truncated or damaged. Fix: run the scenario again with --overwrite.") from None
    missing = [c for c in EVAL_COLUMNS if c not in df.columns]
    if missing:
        raise OutputError(f"{path}: lacks the column(s) {', '.join(missing)}; not fedwave's "
                          "eval.parquet. Fix: run the scenario again with --overwrite.")
    return df


def write_started(run_dir: Path, scenario_name: str, resumed: bool, progress: dict | None = None) -> None:
    """Mark ``run_dir`` as a run in progress (what a killed run leaves behind); ``progress``:
    where it is (:func:`sim.progress.round_record`), once a round is done."""
    doc = {"scenario": scenario_name, "status": "running", "pid": os.getpid(),
           "host": platform.node(), "resumed": resumed, "versions": versions()}
    if progress is not None:
        doc["progress"] = progress
    atomic_write_text(Path(run_dir) / "summary.json", _json(doc))


def write_interrupted(run_dir: Path, scenario_name: str, exc: BaseException) -> None:
    """Mark ``run_dir`` as interrupted (Ctrl-C, SIGTERM): its checkpoint can resume it."""
    atomic_write_text(Path(run_dir) / "summary.json", _json({
        "scenario": scenario_name, "status": "interrupted",
        "error": f"{type(exc).__name__}: {exc}".rstrip(": "), "versions": versions()}))


def run_status(run_dir: str | Path, summary: dict | None = None) -> tuple[str, str]:
    """``(status, sentence)`` of a run directory: ``ok``, ``failed``, ``running`` (its process
    is alive on this host), ``interrupted`` (marked so, or marked running by a process that is
    gone), with what to do about it."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) if summary is None else summary
    status = summary.get("status")
    if status == "running" and summary.get("host") == platform.node() \
            and _alive(summary.get("pid")):
        return "running", f"{run_dir}: the run is still going (process {summary.get('pid')})."
    if status in ("running", "interrupted"):
        done = _rounds_done(run_dir)
        after = f"after round {done - 1}" if done else "before its first round ended"
        how = (f"resume with: fedwave run SCENARIO --out {run_dir} --resume (the same scenario "
               "file and --set overrides; scenario.resolved.yaml here is that scenario)"
               if done else f"run it again: fedwave run SCENARIO --out {run_dir} --overwrite")
        return "interrupted", f"{run_dir}: the run was interrupted {after} — {how}."
    if status == "failed":
        return "failed", f"{run_dir}: the run failed: {summary.get('error')}"
    return str(status), ""


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rounds_done(run_dir: Path) -> int:
    """Rounds a checkpoint in ``run_dir`` holds (0 if none can be read)."""
    from fl.core.statefile import StateFileError, read_state_head
    from sim.checkpoint import CHECKPOINT_KIND

    try:
        return int(read_state_head(run_dir / "checkpoint.zip", CHECKPOINT_KIND)["next_round"])
    except (StateFileError, KeyError, TypeError, ValueError):
        return 0


def read_summary(run_dir: str | Path) -> dict:
    """``run_dir/summary.json``; :class:`OutputError` says what is wrong with it."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise OutputError(f"{run_dir}: no summary.json here; is it a fedwave run directory? "
                          "Fix: give the directory a run wrote (--out).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is "
                          "truncated or damaged. Fix: run the scenario again into this directory "
                          "with --overwrite.") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path}: not a run summary (a JSON object). Fix: run the scenario again "
                          "with --overwrite.")
    return data


def read_rounds(run_dir: str | Path):
    """``run_dir/rounds.csv`` as a DataFrame; :class:`OutputError` for a missing, truncated or
    damaged file."""
    import pandas as pd

    path = Path(run_dir) / "rounds.csv"
    if not path.is_file():
        raise OutputError(f"{run_dir}: no rounds.csv here (the run has not finished). Fix: "
                          "resume or rerun it.")
    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise OutputError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc).strip()}); "
                          "the file is truncated or damaged. Fix: run the scenario again with "
                          "--overwrite.") from None
    missing = [c for c in ("round", "t_end_s", "accuracy") if c not in df.columns]
    if missing:
        raise OutputError(f"{path}: lacks the column(s) {', '.join(missing)}; the file is "
                          "truncated or not fedwave's. Fix: run the scenario again with --overwrite.")
    return df


def write_failure(run_dir: Path, exc: BaseException, scenario_name: str | None = None) -> None:
    """Leave ``error.txt`` and a failed ``summary.json`` in ``run_dir``."""
    run_dir = Path(run_dir)
    text = f"{type(exc).__name__}: {exc}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    atomic_write_text(run_dir / "error.txt", text)
    atomic_write_text(run_dir / "summary.json", _json(_clean({
        "scenario": scenario_name, "status": "failed",
        "error": f"{type(exc).__name__}: {exc}", "versions": versions()})))

"""The run directory: resolved scenario, versions, rounds.csv, events.parquet, summary.json,
plots. Every file is written atomically (temp file, then rename); a failed run leaves
``error.txt`` and a ``summary.json`` with ``status: "failed"`` saying why.

Layout of ``runs/<name>-<timestamp>/``:

- ``scenario.resolved.yaml``: the scenario with all defaults filled in (re-runnable).
- ``versions.json``: python, numpy, simpy, pandas, pyarrow, torch (if loaded), fedwave.
- ``rounds.csv``: one row per round (see :data:`sim.simulation.ROUND_COLUMNS`), then the
  algorithm's own columns.
- ``events.parquet``: the event trace (columns documented in :mod:`sim.trace`).
- ``summary.json``: scenario, seed, versions, wall/simulated time, totals, final metrics,
  ``learner: real|surrogate``, ``status: ok|failed``.
- ``plots/*.png``: see :mod:`sim.plots`.

- ``checkpoint.pkl`` (sync driver): the state at the last round boundary, for
  ``fedwave run --resume`` (see :meth:`sim.simulation.Simulation.resume`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

__all__ = ["make_run_dir", "atomic_write_text", "atomic_write_bytes", "versions",
           "write_run", "write_failure"]


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def write_run(run_dir: Path, result, plots: bool = True) -> dict:
    """Write rounds.csv, events.parquet, summary.json (and plots) of ``result``."""
    import io

    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "rounds.csv", result.rounds.to_csv(index=False))
    buf = io.BytesIO()
    pq.write_table(result.tracer.to_arrow(), buf)
    atomic_write_bytes(run_dir / "events.parquet", buf.getvalue())
    summary = dict(result.summary)
    summary["status"] = "ok"
    summary["versions"] = versions()
    summary["run_dir"] = str(run_dir)
    plot_files: list[str] = []
    if plots:
        from sim.plots import plot_run

        plot_files = plot_run(run_dir, result)
    summary["plots"] = plot_files
    summary = _clean(summary)
    atomic_write_text(run_dir / "summary.json", _json(summary))
    return summary


def write_failure(run_dir: Path, exc: BaseException, scenario_name: str | None = None) -> None:
    """Leave ``error.txt`` and a failed ``summary.json`` in ``run_dir``."""
    run_dir = Path(run_dir)
    text = f"{type(exc).__name__}: {exc}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    atomic_write_text(run_dir / "error.txt", text)
    atomic_write_text(run_dir / "summary.json", _json(_clean({
        "scenario": scenario_name, "status": "failed",
        "error": f"{type(exc).__name__}: {exc}", "versions": versions()})))

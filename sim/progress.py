"""Where a run is: the progress line of ``fedwave run``, ``compare`` and ``sweep``.

A run in progress keeps its place in its own ``summary.json`` (status ``running`` and a
``progress`` record rewritten after every round: rounds done, simulated time, the last
evaluated accuracy with its interval, wall time), so a run can be followed from outside
its process — :class:`Watcher` polls the run directories of a comparison or a sweep
(whatever backend runs them) and prints one line per variant as it moves.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["ProgressRecord", "round_record", "progress_text", "eta_s", "Watcher"]

ProgressRecord = dict


def round_record(done: int, total: int, row: Mapping, wall_s: float, done_at_start: int = 0,
                 last_eval: Mapping | None = None) -> ProgressRecord:
    """The ``progress`` record of ``summary.json`` after round ``done`` of ``total``.

    ``done_at_start``: rounds a resumed run had already done (the ETA counts only the rounds
    this process ran). ``last_eval``: the last row that carried an accuracy, if ``row`` has
    none (rounds between evaluations)."""
    src = row if _finite(row.get("accuracy")) else (last_eval or {})
    rec = {"rounds_done": int(done), "rounds": int(total), "t_s": _num(row.get("t_end_s", row.get("t_s"))),
           "wall_s": float(wall_s), "rounds_this_process": int(done - done_at_start),
           "accuracy": _num(src.get("accuracy")), "accuracy_lo": _num(src.get("accuracy_lo")),
           "accuracy_hi": _num(src.get("accuracy_hi")),
           "accuracy_round": int(src["round"]) if _finite(src.get("accuracy")) and "round" in src else None}
    rec["eta_s"] = eta_s(rec)
    return rec


def eta_s(rec: Mapping) -> float | None:
    """Wall seconds left: the mean wall time per round this process ran × rounds left."""
    n = rec.get("rounds_this_process") or 0
    left = rec["rounds"] - rec["rounds_done"]
    if left <= 0:
        return 0.0
    if n <= 0 or not rec.get("wall_s"):
        return None
    return rec["wall_s"] / n * left


def clock(seconds: float | None) -> str:
    """``1:02:03`` / ``4:05``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def accuracy_text(rec: Mapping) -> str:
    acc = rec.get("accuracy")
    if not _finite(acc):
        return "accuracy —"
    text = f"accuracy {acc:.3f}"
    lo, hi = rec.get("accuracy_lo"), rec.get("accuracy_hi")
    if _finite(lo) and _finite(hi):
        text += f" [{lo:.2f}, {hi:.2f}]"
    r = rec.get("accuracy_round")
    if r is not None and r != rec["rounds_done"] - 1:
        text += f" (round {r})"
    return text


def progress_text(rec: Mapping, with_rounds: bool = True) -> str:
    """``round 3/8 · t = 412.5 s simulated · accuracy 0.412 [0.31, 0.51] · 6:02 wall, ETA 9:40``."""
    parts = [f"round {rec['rounds_done']}/{rec['rounds']}"] if with_rounds else []
    if _finite(rec.get("t_s")):
        parts.append(f"t = {rec['t_s']:.1f} s simulated")
    parts.append(accuracy_text(rec))
    parts.append(f"{clock(rec.get('wall_s'))} wall, ETA {clock(rec.get('eta_s'))}")
    return " · ".join(parts)


def read_progress(run_dir: str | Path) -> ProgressRecord | None:
    """The ``progress`` record of a run directory's ``summary.json``, or None (not started,
    not readable yet, or no round done)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rec = summary.get("progress") if isinstance(summary, dict) else None
    return rec if isinstance(rec, dict) and "rounds_done" in rec else None


class Watcher:
    """Polls run directories and calls ``emit(label, record)`` when a run finishes a round.

    Use as a context manager around a comparison or a sweep: a daemon thread reads each
    run directory's ``summary.json`` every ``every_s`` seconds (a run that has not started
    yet, or a half-written file, is skipped until the next poll)."""

    def __init__(self, runs: Sequence[tuple[str, str | Path]], emit: Callable[[str, ProgressRecord], None],
                 every_s: float = 2.0) -> None:
        self.runs = [(label, Path(d)) for label, d in runs]
        self.emit = emit
        self.every_s = every_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fedwave-progress", daemon=True)

    def __enter__(self) -> "Watcher":
        for label, d in self.runs:  # a resumed comparison: say nothing of rounds done before
            rec = read_progress(d)
            if rec is not None:
                self._seen[label] = (rec["rounds_done"], rec["rounds"])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def poll(self) -> None:
        for label, d in self.runs:
            rec = read_progress(d)
            if rec is None:
                continue
            key = (rec["rounds_done"], rec["rounds"])
            if self._seen.get(label) != key:
                self._seen[label] = key
                self.emit(label, rec)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001  (a progress line is never worth a failed run)
                pass


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v) -> float | None:
    return float(v) if _finite(v) else None

"""Run a scenario into a run directory (what ``fedwave run`` does), in Python.

::

    from sim.runner import run_scenario
    run_dir, summary = run_scenario("scenarios/quickstart.yaml", overrides=["fl.rounds=3"])

The sync driver writes ``checkpoint.zip`` into the run directory at every round boundary;
``run_scenario(..., out=DIR, resume=True)`` continues an interrupted run from it, with
outputs identical to an uninterrupted run.

What a run directory is promised (the README's "Run outputs"): a non-empty ``out`` is
refused unless ``overwrite`` (emptied first) or ``resume``; a run refused or failing before
it starts leaves every file already there untouched; while it runs ``summary.json`` says
``running``, and an interrupted one ``interrupted`` (see :func:`sim.outputs.run_status`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sim.outputs import (claim_out_dir, make_run_dir, write_failure, write_interrupted,
                         write_resolved, write_run, write_started)
from sim.scenario import Scenario, load_scenario

__all__ = ["run_scenario", "CHECKPOINT"]


CHECKPOINT = "checkpoint.zip"
_OLD_CHECKPOINT = "checkpoint.pkl"  # before fedwave's state files: never read (pickle)


def run_scenario(scenario: Scenario | str | Path, overrides=(), out: str | Path | None = None,
                 progress: Callable[[int, int, dict], None] | None = None, plots: bool = True,
                 runs_root: str | Path = "runs", resume: bool = False, overwrite: bool = False,
                 stop_after_rounds: int | None = None) -> tuple[Path, dict]:
    """Validate (if given a path), simulate, and write the run directory.

    ``out``: the run directory (default ``runs/<name>-<UTC time>``); a non-empty one is
    refused (:class:`sim.outputs.RunDirError`) unless ``overwrite`` (emptied first) or
    ``resume``: continue the run in ``out`` from its ``checkpoint.zip`` (sync driver; the
    scenario must equal the checkpoint's). ``stop_after_rounds``: stop the sync driver after
    that many rounds (simulates an interruption; the outputs hold those rounds).

    A failure before the run starts (a refused resume, a model that cannot be loaded)
    leaves the files already in ``out`` untouched (a new directory gets ``error.txt`` and a
    failed ``summary.json``); a failure later leaves them, and the exception propagates.
    Ctrl-C marks the run ``interrupted``. While it runs, ``summary.json`` says where it is
    (status ``running`` and a ``progress`` record, rewritten after every round:
    :mod:`sim.progress`); ``progress(rounds done, rounds, the round's row)`` is called then.
    """
    from sim.simulation import Simulation

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, list(overrides))
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other. Fix: pass one of them.")
    if resume:
        if out is None:
            raise ValueError("Resume needs the run directory of the interrupted run: give --out DIR.")
        if scenario.fl.driver != "sync":
            raise ValueError("Resume supports the sync driver only (fl.driver: sync); this "
                             f"scenario has fl.driver: {scenario.fl.driver!r}. Fix: run it "
                             "again from the start.")
        if not (Path(out) / CHECKPOINT).is_file():
            old = (Path(out) / _OLD_CHECKPOINT).is_file()
            raise FileNotFoundError(
                f"No {CHECKPOINT} in {out}: nothing to resume"
                + (f" ({_OLD_CHECKPOINT} there is the old pickle format, which fedwave no longer "
                   "reads: loading it could run code)" if old else "")
                + ". Fix: run again from the start with --overwrite (a sync run writes a "
                "checkpoint every round).")
    if out is None:
        run_dir = make_run_dir(scenario.name, None, runs_root)
        fresh = True
    else:
        run_dir = Path(out)
        fresh = not (run_dir.is_dir() and any(run_dir.iterdir()))
        claim_out_dir(run_dir, overwrite=overwrite, resume=resume)
        fresh = fresh or overwrite
    ckpt = run_dir / CHECKPOINT
    try:  # the start: nothing in run_dir changes until it succeeds
        if resume:
            sim = Simulation.resume(scenario, ckpt, run_dir=str(run_dir))
        else:
            sim = Simulation(scenario, run_dir=str(run_dir),
                             checkpoint=ckpt if scenario.fl.driver == "sync" else None)
    except BaseException as exc:
        if fresh:
            write_failure(run_dir, exc, scenario.name)
        raise
    try:
        (run_dir / "error.txt").unlink(missing_ok=True)  # from the interrupted run's failure
        write_resolved(run_dir, scenario)
        write_started(run_dir, scenario.name, resumed=resume)
        sim.stop_after_rounds = stop_after_rounds
        result = sim.run(progress=_recording(run_dir, scenario.name, resume, progress))
        from sim.plots import plot_run

        summary = write_run(run_dir, result, plot=plot_run if plots else None)
    except (KeyboardInterrupt, SystemExit) as exc:
        write_interrupted(run_dir, scenario.name, exc)
        raise
    except BaseException as exc:
        write_failure(run_dir, exc, scenario.name)
        raise
    return run_dir, summary


def _recording(run_dir: Path, name: str, resumed: bool, progress):
    """A round callback that keeps ``summary.json``'s ``progress`` record, then calls ``progress``."""
    import time

    from sim.progress import round_record

    wall0 = time.perf_counter()
    state: dict = {"start": None, "last_eval": None}

    def on_round(done: int, total: int, row: dict) -> None:
        if state["start"] is None:
            state["start"] = done - 1  # rounds a resumed run had already done
        if row.get("accuracy") == row.get("accuracy"):  # not NaN: an evaluated round
            state["last_eval"] = row
        rec = round_record(done, total, row, time.perf_counter() - wall0, state["start"], state["last_eval"])
        write_started(run_dir, name, resumed=resumed, progress=rec)
        if progress is not None:
            progress(done, total, row)

    return on_round

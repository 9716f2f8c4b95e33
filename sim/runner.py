"""Run a scenario into a run directory (what ``fedwave run`` does), in Python.

::

    from sim.runner import run_scenario
    run_dir, summary = run_scenario("scenarios/quickstart.yaml", overrides=["fl.rounds=3"])

The sync driver writes ``checkpoint.pkl`` into the run directory at every round boundary;
``run_scenario(..., out=DIR, resume=True)`` continues an interrupted run from it, with
outputs identical to an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sim.outputs import make_run_dir, write_failure, write_resolved, write_run
from sim.scenario import Scenario, load_scenario

__all__ = ["run_scenario"]


CHECKPOINT = "checkpoint.pkl"


def run_scenario(scenario: Scenario | str | Path, overrides=(), out: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None, plots: bool = True,
                 runs_root: str | Path = "runs", resume: bool = False,
                 stop_after_rounds: int | None = None) -> tuple[Path, dict]:
    """Validate (if given a path), simulate, and write the run directory.

    ``resume``: continue the run in ``out`` from its ``checkpoint.pkl`` (sync driver; the
    scenario must equal the checkpoint's). ``stop_after_rounds``: stop the sync driver
    after that many rounds (simulates an interruption; the outputs hold those rounds).

    On failure the directory holds ``error.txt`` and a failed ``summary.json``, and the
    exception propagates.
    """
    from sim.simulation import Simulation

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, list(overrides))
    if resume:
        if out is None:
            raise ValueError("Resume needs the run directory of the interrupted run: give --out DIR.")
        if scenario.fl.driver != "sync":
            raise ValueError("Resume supports the sync driver only (fl.driver: sync); this "
                             f"scenario has fl.driver: {scenario.fl.driver!r}. Fix: run it "
                             "again from the start.")
        if not (Path(out) / CHECKPOINT).is_file():
            raise FileNotFoundError(f"No {CHECKPOINT} in {out}: nothing to resume. Fix: run "
                                    "without --resume (a sync run writes one every round).")
    run_dir = make_run_dir(scenario.name, out, runs_root)
    (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier failed run here
    try:
        ckpt = run_dir / CHECKPOINT
        if resume:
            sim = Simulation.resume(scenario, ckpt, run_dir=str(run_dir))
        else:
            ckpt.unlink(missing_ok=True)  # from an earlier run here
            sim = Simulation(scenario, run_dir=str(run_dir),
                             checkpoint=ckpt if scenario.fl.driver == "sync" else None)
        write_resolved(run_dir, scenario)
        sim.stop_after_rounds = stop_after_rounds
        result = sim.run(progress=progress)
        summary = write_run(run_dir, result, plots=plots)
    except BaseException as exc:
        write_failure(run_dir, exc, scenario.name)
        raise
    return run_dir, summary

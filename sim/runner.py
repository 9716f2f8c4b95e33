"""Run a scenario into a run directory (what ``fedwave run`` does), in Python.

::

    from sim.runner import run_scenario
    run_dir, summary = run_scenario("scenarios/quickstart.yaml", overrides=["fl.rounds=3"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sim.outputs import make_run_dir, write_failure, write_resolved, write_run
from sim.scenario import Scenario, load_scenario

__all__ = ["run_scenario"]


def run_scenario(scenario: Scenario | str | Path, overrides=(), out: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None, plots: bool = True,
                 runs_root: str | Path = "runs") -> tuple[Path, dict]:
    """Validate (if given a path), simulate, and write the run directory.

    On failure the directory holds ``error.txt`` and a failed ``summary.json``, and the
    exception propagates.
    """
    from sim.simulation import Simulation

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, list(overrides))
    run_dir = make_run_dir(scenario.name, out, runs_root)
    (run_dir / "error.txt").unlink(missing_ok=True)  # from an earlier failed run here
    try:
        write_resolved(run_dir, scenario)
        sim = Simulation(scenario, run_dir=str(run_dir))
        result = sim.run(progress=progress)
        summary = write_run(run_dir, result, plots=plots)
    except BaseException as exc:
        write_failure(run_dir, exc, scenario.name)
        raise
    return run_dir, summary

"""sim: the discrete-event co-simulation kernel of fedwave (SimPy + channel models).

Public API::

    from sim import Simulation, load_scenario, run_scenario
    scn = load_scenario("scenarios/quickstart.yaml", overrides=["fl.rounds=3"])
    result = Simulation(scn).run()          # in memory: result.rounds, result.tracer, result.summary
    run_dir, summary = run_scenario(scn)    # and written to runs/<name>-<timestamp>/
"""

# fedwave never downloads: offline mode before anything can import transformers (fl.lm.offline).
from fl.lm.offline import force_offline as _force_offline

_force_offline()

from sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from sim.simulation import RunResult, Simulation
from sim.runner import run_scenario

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario", "Simulation",
           "RunResult", "run_scenario"]

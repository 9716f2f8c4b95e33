"""Checkpoints: a sync run written at a round boundary, and resumed from there exactly.

:func:`write_checkpoint` and :func:`resume` back :meth:`Simulation.write_checkpoint
<sim.simulation.Simulation.write_checkpoint>` and :meth:`Simulation.resume
<sim.simulation.Simulation.resume>`. The file is a :mod:`fl.core.statefile` archive (JSON,
npy, safetensors; reading it runs no code from it) holding the simulation's attributes, the
algorithm's ``state_dict`` and the process-wide generators. :func:`numerics` and
:func:`first_difference` decide whether a scenario may resume a checkpoint (``fedwave
compare`` uses them too).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import simpy

from fl.core.algorithm import Algorithm
from fl.core.statefile import StateFileError, read_state_file, read_state_head, write_state_file
from sim.entities import make_algorithm
from sim.scenario import Scenario

__all__ = ["CHECKPOINT_KIND", "write_checkpoint", "resume", "quiescent", "numerics",
           "first_difference"]

CHECKPOINT_KIND = "simulation-checkpoint"

#: Simulation attributes a checkpoint does not hold: rebuilt by :func:`resume` (the
#: environment, the run's wiring, what is under way — nothing is at a round boundary).
_NOT_WRITTEN = frozenset({"env", "scenario", "algorithm", "progress", "checkpoint",
                          "stop_after_rounds", "_start_round", "_executor", "_live", "_batcher"})


def quiescent(sim) -> bool:
    """Nothing in flight that a checkpoint would lose (true at almost every sync round
    boundary; not when, e.g., a hierarchical cloud → edge copy outlived its round)."""
    res = sim.server.resource
    return (sim.network.n_active == 0 and sim.wired.n_in_flight == 0
            and (sim.server.ps is None or sim.server.ps.n_jobs == 0)
            and (res is None or (res.count == 0 and not res.queue)))


def write_checkpoint(sim, next_round: int) -> bool:
    """Write ``sim.checkpoint`` atomically (temp file + ``os.replace``): everything needed
    to continue exactly from round ``next_round`` at the current simulated time.

    Returns False (and keeps the previous checkpoint) when something is still in flight.

    The SimPy environment and its event queue are not written: at a round boundary the
    queue holds only wake-ups that no longer do anything (ended tasks' timers, stale pool
    wake-ups): no transfer is planned. Mobility is evaluated lazily from its (written) state
    and the channel is a function of the seed (its caches are not written), so nothing else
    is scheduled ahead.
    """
    if not quiescent(sim):
        return False
    sim.wired.forget_stale_timers()  # cancelled/arrived messages' timers: no-ops, not state
    head = {"scenario": sim.scenario.model_dump(mode="json"), "next_round": next_round,
            "now": sim.env.now}
    body = {"sim": {k: v for k, v in sim.__dict__.items() if k not in _NOT_WRITTEN},
            "algorithm": sim.algorithm.state_dict(), "global_rng": _global_rng_state()}
    env = sim.env

    def external(obj):
        if obj is env:
            return "env"
        if type(obj) is simpy.Resource:  # idle at a round boundary: rebuilt empty
            return ("resource", obj.capacity)
        return None

    write_state_file(sim.checkpoint, CHECKPOINT_KIND, head, body, external)
    return True


def resume(cls, scenario: Scenario, checkpoint: str | Path, *, algorithm: Algorithm | None = None,
           run_dir: str | None = None, keep_checkpointing: bool = True):
    """A ``cls`` (:class:`~sim.simulation.Simulation`) restored from ``checkpoint``; see
    :meth:`Simulation.resume <sim.simulation.Simulation.resume>`."""
    if scenario.fl.driver != "sync":
        raise ValueError("Resume supports the sync driver only (fl.driver: sync); this "
                         f"scenario has fl.driver: {scenario.fl.driver!r}. Fix: run it "
                         "again from the start.")
    path = Path(checkpoint)
    head = read_state_head(path, CHECKPOINT_KIND)
    diff = first_difference(numerics(head.get("scenario")),
                            numerics(scenario.model_dump(mode="json")))
    if diff is not None:
        key, old, new = diff
        raise ValueError(f"The scenario does not match the checkpoint {path}: {key} is "
                         f"{old!r} in the checkpoint and {new!r} in the scenario given. "
                         "Fix: resume with the same scenario file and --set overrides.")
    env = simpy.Environment(initial_time=float(head["now"]))

    def resolve(key):
        if key == "env":
            return env
        if isinstance(key, tuple) and len(key) == 2 and key[0] == "resource":
            return simpy.Resource(env, capacity=int(key[1]))
        raise StateFileError(f"unknown external object {key!r}")

    _, body = read_state_file(path, CHECKPOINT_KIND, resolve)
    sim = cls.__new__(cls)
    sim.__dict__.update(body["sim"])
    sim.env = env
    sim.scenario = scenario
    sim.progress = None
    sim._live = {}  # nothing is under way at a round boundary
    sim._executor = None  # workers are not checkpointed: started again at the first job
    sim._batcher = None  # empty at a round boundary
    sim.checkpoint = path if keep_checkpointing else None
    sim.stop_after_rounds = None
    sim._start_round = head["next_round"]
    sim.algorithm = algorithm if algorithm is not None else make_algorithm(scenario, run_dir)
    sim.algorithm.load_state_dict(body["algorithm"])
    _set_global_rng_state(body["global_rng"])
    return sim


def _global_rng_state() -> dict:
    """Process-wide generators that libraries may draw from (torch dropout, numpy legacy)."""
    state = {"random": random.getstate(), "numpy": np.random.get_state()}
    if "torch" in sys.modules:
        state["torch"] = sys.modules["torch"].get_rng_state()
    return state


def _set_global_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])


def numerics(scenario: dict) -> dict:
    """A dumped scenario without what never changes the results: where client updates run
    (``execution.backend``, ``execution.workers``; threads, device, dtype and the prefix
    cache stay), so a run resumes on any backend; the ``outputs`` section (how plots are
    drawn); an empty ``fl.algorithm_options``; and the old name of the FLOP/s keys."""
    execution = {k: v for k, v in (scenario.get("execution") or {}).items()
                 if k not in ("backend", "workers", "prefix_cache_mb")}
    out = {k: v for k, v in scenario.items() if k != "outputs"}
    out["execution"] = execution
    fl = scenario.get("fl")
    if isinstance(fl, dict) and not fl.get("algorithm_options"):
        # an empty fl.algorithm_options is no block at all (runs written before it existed)
        out["fl"] = {k: v for k, v in fl.items() if k != "algorithm_options"}
    # the FLOP/s of devices and server were called ``flops`` before 0.2
    clients = out.get("clients")
    if isinstance(clients, dict) and isinstance(clients.get("devices"), list):
        out["clients"] = {**clients, "devices": [_rate_key(d) for d in clients["devices"]]}
    if isinstance(out.get("server"), dict):
        out["server"] = _rate_key(out["server"])
    return out


def _rate_key(spec):
    """A device or server mapping with ``flops`` (its name before 0.2) as ``flops_per_s``."""
    if isinstance(spec, dict) and "flops" in spec and "flops_per_s" not in spec:
        return {("flops_per_s" if k == "flops" else k): v for k, v in spec.items()}
    return spec


def first_difference(a, b, key: str = ""):
    """(key path, a's value, b's value) of the first difference of two JSON-like trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{key}.{i}")
            if d is not None:
                return d
        return None
    return None if a == b else (key or "(top level)", a, b)

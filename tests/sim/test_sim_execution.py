"""Execution backends (sim.execution): client updates in worker processes, same outputs.

The non-negotiable: inline and process backends give identical events, rounds and final
adapters; jobs really run in the workers; a failed upload's job never reaches aggregation;
workers never outlive a run, also when a job fails.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from fl.core.algorithm import AlgorithmContext
from sim.links import TableLink
from sim.scenario import ScenarioError, load_scenario
from sim.simulation import Simulation

from jobkit import JobAlgo, JobConfig
from simkit import ScriptAlgo, scenario

ROOT = Path(__file__).resolve().parents[2]
SCN = ROOT / "scenarios"
NO_WIRE = {"site_edge_latency_s": 0.0, "edge_cloud_latency_s": 0.0,
           "site_edge_capacity_bps": math.inf, "edge_cloud_capacity_bps": math.inf}


def _no_children() -> bool:
    return multiprocessing.active_children() == []


# ----------------------------------------------------------------------------- the kernel
def _script_run(backend: str, **cfg):
    """Three clients alone in their cells at 1, 1, 0.1 Mbit/s upload 1 Mbit, deadline 2 s:
    clients 0 and 1 deliver at 1 s; client 2's upload (its job already submitted) fails."""
    scn = scenario(clients={"n_clients": 3}, backhaul=NO_WIRE,
                   fl={"rounds": 2, "clients_per_round": 3, "deadline_s": 2.0},
                   execution={"backend": backend, "workers": 2, "threads": 1})
    algo = JobAlgo(JobConfig(flops=0.0, **cfg), AlgorithmContext(n_clients=3, seed=5))
    sim = Simulation(scn, algorithm=algo, link=TableLink([1e6, 1e6, 0.1e6], cells=[0, 1, 2]))
    return sim.run(), algo


def _without_pid(aggregates):
    return [(rnd, [{k: v for k, v in u.items() if k != "pid"} for u in ups], fails)
            for rnd, ups, fails in aggregates]


def test_process_jobs_run_in_workers_and_equal_inline():
    inline, a = _script_run("inline")
    pool, b = _script_run("process")
    assert inline.tracer.to_frame().equals(pool.tracer.to_frame())
    assert inline.rounds.equals(pool.rounds)
    assert _without_pid(a.aggregates) == _without_pid(b.aggregates)
    for rnd, ups, fails in b.aggregates:  # the failed upload's job never reaches aggregation
        assert [u["client"] for u in ups] == [0, 1] and all(u["rnd"] == rnd for u in ups)
        assert [(f.client, f.reason, f.stage) for f in fails] == [(2, "deadline", "update")]
        assert all(u["value"] == (u["client"] + 1) * 1000.0 + rnd + 5 for u in ups)  # replica's
    assert {u["pid"] for _, ups, _ in a.aggregates for u in ups} == {os.getpid()}
    assert os.getpid() not in {u["pid"] for _, ups, _ in b.aggregates for u in ups}
    assert _no_children()


def test_a_failing_job_fails_the_run_and_leaves_no_worker():
    with pytest.raises(RuntimeError, match="failed on purpose"):
        _script_run("process", fail=True)
    assert _no_children()


def test_algorithms_without_jobs_start_no_pool():
    scn = scenario(execution={"backend": "process", "workers": 2})
    sim = Simulation(scn, algorithm=ScriptAlgo(2), link=TableLink([1e6, 1e6]))
    sim.run()
    assert sim._executor is None and _no_children()


# ----------------------------------------------------------------------------- the schema
def test_execution_key_and_errors(monkeypatch):
    scn = load_scenario(SCN / "surrogate_quickstart.yaml",
                        ["execution.backend=process", "execution.workers=2"])
    assert (scn.execution.backend, scn.execution.workers, scn.execution.threads) == ("process", 2, None)
    assert load_scenario(SCN / "surrogate_quickstart.yaml").execution.backend == "inline"
    with pytest.raises(ScenarioError, match=r"execution\.workers: .*got 0\. Fix: give a number >= 1"):
        load_scenario(SCN / "surrogate_quickstart.yaml", ["execution.workers=0"])
    with pytest.raises(ScenarioError, match=r"execution\.backend: .*got 'gpu'\. Fix: use one of"):
        load_scenario(SCN / "surrogate_quickstart.yaml", ["execution.backend=gpu"])
    import sim.execution

    monkeypatch.setattr(sim.execution, "ray_available", lambda: False)
    with pytest.raises(ScenarioError, match=r"execution\.backend: 'ray' needs Ray.*pip install 'fedwave\[ray\]'"):
        load_scenario(SCN / "surrogate_quickstart.yaml", ["execution.backend=ray"])


# ----------------------------------------------------------------------------- real algorithms
# fedavg_lora trains with the host's torch thread count, fedsoda with execution.threads=1
REAL = {
    "fedavg_lora": ("quickstart", ["fl.options.model={kind: tiny}", "fl.options.lora.layers={top: 1}",
                                   "fl.clients_per_round=3"]),
    "fedsoda": ("fedsoda", ["fl.options.model={kind: tiny, n_layers: 6}", "fl.options.sgp_keep=4",
                            "fl.options.data.n_public=16", "fl.options.sgp_calibration=8",
                            "fl.options.oda_initial_steps=1", "fl.options.eval_full=false",
                            "execution.threads=1"]),
    "kd_topk": ("kd_adaptive", ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.client_keep_layers=[0, 2]",
                                "fl.options.lora.layers={top: 1}",
                                "fl.options.data.n_public=8", "fl.options.public_batch_size=4",
                                "fl.options.server_steps=1", "fl.options.warmup_steps=1",
                                "fl.options.mutual=true"]),
}
SMALL = ["fl.rounds=2", "fl.min_updates=1", "fl.options.data.n_test=12",
         "fl.options.data.max_per_class=30", "fl.options.local_steps=2", "execution.workers=2"]


@pytest.fixture(autouse=True)
def _fast_malloc(monkeypatch):
    """Workers keep freed memory (tiny-model steps are several times faster; docs/benchmarks.md)."""
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000")


def _real(name: str, backend: str, ckpt=None, stop_after=None, resume=False):
    file, sets = REAL[name]
    scn = load_scenario(SCN / f"{file}.yaml", sets + SMALL + [f"execution.backend={backend}"])
    sim = Simulation.resume(scn, ckpt) if resume else Simulation(scn, checkpoint=ckpt)
    sim.stop_after_rounds = stop_after
    res = sim.run()
    return res.tracer.to_frame(), res.rounds, sim.algorithm.global_state


@pytest.fixture(scope="module")
def inline_runs():
    return {}


def _inline(inline_runs, name):
    if name not in inline_runs:
        inline_runs[name] = _real(name, "inline")
    return inline_runs[name]


def _assert_same(a, b):
    (ea, ra, ga), (eb, rb, gb) = a, b
    assert ea.equals(eb)
    assert ra.equals(rb)
    assert list(ga) == list(gb) and all(ga[n].equal(gb[n]) for n in ga)


@pytest.mark.parametrize("name", sorted(REAL))
def test_process_backend_equals_inline_real(name, inline_runs, monkeypatch):
    """Two workers, each with its own replica, train the clients of a round; the host never
    trains (its local_update is broken here), and every output is bit-identical."""
    from fl.core.algorithm import get_algorithm

    expected = _inline(inline_runs, name)
    cls = get_algorithm(name)

    def host_must_not_train(self, *args):
        raise AssertionError("the host trained a client; the workers should have")

    monkeypatch.setattr(cls, "local_update", host_must_not_train)  # workers import it afresh
    _assert_same(expected, _real(name, "process"))
    assert _no_children()


def test_resume_on_process_backend_equals_inline(inline_runs, tmp_path):
    """Workers are not checkpointed: a resumed run starts them again; a checkpoint written on
    one backend resumes on another (where updates run never changes the results)."""
    ckpt = tmp_path / "checkpoint.pkl"
    _real("fedavg_lora", "process", ckpt, stop_after=1)  # written while its workers lived
    assert _no_children()
    shutil.copy(ckpt, tmp_path / "round0.pkl")
    expected = _inline(inline_runs, "fedavg_lora")
    _assert_same(expected, _real("fedavg_lora", "process", ckpt, resume=True))
    _assert_same(expected, _real("fedavg_lora", "inline", tmp_path / "round0.pkl", resume=True))
    file, sets = REAL["fedavg_lora"]  # threads change the numerics: not on resume
    other = load_scenario(SCN / f"{file}.yaml", sets + SMALL + ["execution.threads=1"])
    with pytest.raises(ValueError, match=r"execution\.threads is None in the checkpoint and 1"):
        Simulation.resume(other, tmp_path / "round0.pkl")


def test_replica_with_other_frozen_weights_is_refused():
    """A worker whose model differs from the host's fails loudly instead of training it."""
    import dataclasses

    from fl.algorithms.fedavg_lora.algorithm import FedAvgLoRA, FedAvgLoRAConfig

    cfg = FedAvgLoRAConfig(model={"kind": "tiny"}, data={"max_per_class": 20, "n_test": 12})
    host = FedAvgLoRA(cfg, AlgorithmContext(n_clients=2, seed=0, run_dir="somewhere"))
    rep = host.replica()
    assert rep.context.run_dir is None  # a replica writes nothing
    assert isinstance(rep(), FedAvgLoRA)  # same build: accepted
    bad = dataclasses.replace(rep, fingerprints={k: v + 1.0 for k, v in rep.fingerprints.items()})
    with pytest.raises(ValueError, match="replica was built with different frozen weights"):
        bad()


@pytest.mark.slow  # Ray's start-up and its workers' imports: tens of seconds on 2 cores
def test_ray_backend_equals_inline(inline_runs):
    pytest.importorskip("ray")
    _assert_same(_inline(inline_runs, "fedavg_lora"), _real("fedavg_lora", "ray"))

"""The plain loop, with a stand-in algorithm (no torch)."""

from dataclasses import dataclass

import pytest

from fl.core.actions import Compute, Receive, Send, SendPlan, ServerCompute
from fl.core.algorithm import Algorithm, AlgorithmConfig, AlgorithmContext
from fl.core.runner import drive, run_plain


@dataclass(frozen=True)
class Blob:
    bits: int


class Counting(Algorithm):
    name = "counting"
    Config = AlgorithmConfig

    def __init__(self, config, context, lie=False):
        super().__init__(config, context)
        self.log, self.lie, self.total = [], lie, 0

    def n_samples(self, client):
        return client + 1

    def client_round(self, rnd, client):
        got = yield Receive(Blob(100))
        self.log.append(("received", rnd, client, got.bits))
        done = yield Compute(flops=10.0, work=lambda: "trained")
        self.log.append(("computed", rnd, client, done))
        up = yield Send(sizer=lambda cap: SendPlan(bits=7 if cap == float("inf") else 0),
                        work=lambda plan: Blob(plan.bits + (1 if self.lie else 0)))
        return client * 10 + up.bits

    def server_round(self, rnd, results, failures):
        yield ServerCompute(flops=5.0)
        return dict(self.aggregate(rnd, results, failures))

    def aggregate(self, rnd, results, failures):
        self.total += sum(r.update for r in results)
        return {"sum": float(sum(r.n_samples for r in results))}

    def evaluate(self, rnd):
        return {"accuracy": 0.5, "loss": float(self.total)}


def test_drive_feeds_results_back_and_counts_traffic():
    algo = Counting(AlgorithmConfig(), AlgorithmContext(n_clients=3, seed=0))
    value, traffic = drive(algo.client_round(0, 2))
    assert value == 27
    assert (traffic.bits_up, traffic.bits_down, traffic.flops) == (7, 100, 10.0)
    assert algo.log == [("received", 0, 2, 100), ("computed", 0, 2, "trained")]


def test_drive_catches_a_sizer_that_lies():
    algo = Counting(AlgorithmConfig(), AlgorithmContext(n_clients=3, seed=0), lie=True)
    with pytest.raises(RuntimeError, match="announced 7 bits but the payload has 8"):
        drive(algo.client_round(0, 0))


def test_run_plain_rows_and_selection():
    algo = Counting(AlgorithmConfig(), AlgorithmContext(n_clients=5, seed=0))
    rows = run_plain(algo, rounds=3, clients_per_round=2, seed=4, evaluate_initial=True)
    assert [r["round"] for r in rows] == [-1, 0, 1, 2]
    for r in rows[1:]:
        assert r["n_selected"] == r["n_completed"] == 2 and r["n_failed"] == 0
        assert (r["bits_up"], r["bits_down"], r["flops"], r["server_flops"]) == (14, 200, 20.0, 5.0)
        assert r["accuracy"] == 0.5 and "sum" in r
    again = run_plain(Counting(AlgorithmConfig(), AlgorithmContext(n_clients=5, seed=0)), 3, 2, seed=4, evaluate_initial=True)
    assert again == rows  # the selection stream is seeded
    with pytest.raises(ValueError, match=r"clients_per_round must be in \[1, 5\]. Got 6"):
        run_plain(algo, rounds=1, clients_per_round=6)


def test_eval_rounds_every_n_plus_the_initial_and_the_hosts_last():
    known = Counting(AlgorithmConfig(), AlgorithmContext(n_clients=2, seed=0, rounds=5))
    assert [r for r in range(-1, 5) if known.is_eval_round(r, 3)] == [-1, 2, 4]
    unknown = Counting(AlgorithmConfig(), AlgorithmContext(n_clients=2, seed=0))
    assert [r for r in range(-1, 5) if unknown.is_eval_round(r, 3)] == [-1, 2]
    assert [r for r in range(-1, 5) if known.is_eval_round(r, 1)] == list(range(-1, 5))


def test_the_simulator_tells_the_algorithm_its_rounds():
    from sim.scenario import load_scenario
    from sim.entities import make_algorithm as _make_algorithm
    from pathlib import Path

    scn = load_scenario(Path(__file__).resolve().parents[2] / "scenarios" / "surrogate_quickstart.yaml",
                        ["fl.rounds=7"])
    assert _make_algorithm(scn, None).context.rounds == 7

"""A scripted algorithm whose uploads carry a picklable ``Send.job`` (execution backends).

Importable by name (``jobkit``) in spawned worker processes: they get the test process's
``sys.path``, which pytest prepends with tests/sim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

from fl.core.actions import Compute, Send, SendPlan
from fl.core.algorithm import Algorithm, AlgorithmConfig


class JobConfig(AlgorithmConfig):
    up_bits: int = 1_000_000
    flops: float = 1e9
    fail: bool = False  # the job raises (a worker error must reach the host)


@dataclass(frozen=True)
class EchoJob:
    """Returns who ran it: (client, round, plan bits, a value from the replica, process id)."""

    client: int
    rnd: int

    def __call__(self, replica: "JobAlgo", plan: SendPlan) -> dict:
        if replica.config.fail:
            raise RuntimeError(f"job of client {self.client} failed on purpose")
        return {"client": self.client, "rnd": self.rnd, "bits": plan.bits,
                "value": replica.value(self.client, self.rnd), "pid": os.getpid()}


class JobAlgo(Algorithm):
    """Compute(flops) → Send(up_bits, job=EchoJob); aggregation records the updates."""

    name = "job_script"
    Config = JobConfig

    def __init__(self, config: JobConfig, context) -> None:
        super().__init__(config, context)
        self.aggregates: list[tuple[int, list[dict], list]] = []

    def value(self, client: int, rnd: int) -> float:
        return (client + 1) * 1000.0 + rnd + self.context.seed

    def n_samples(self, client):
        return 10

    def client_round(self, rnd, client):
        yield Compute(self.config.flops)
        job = EchoJob(client, rnd)
        update = yield Send(sizer=lambda cap: SendPlan(bits=self.config.up_bits),
                            work=partial(job, self), job=job)
        return update

    def aggregate(self, rnd, results, failures):
        self.aggregates.append((rnd, [r.update for r in results], list(failures)))
        return {"value_sum": float(sum(r.update["value"] for r in results))}

    def evaluate(self, rnd):
        return {"accuracy": 0.5, "loss": 1.0}

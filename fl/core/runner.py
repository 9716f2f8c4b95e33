"""A plain federated loop without any radio: fl/ usable on its own, and the tests' host.

Every transfer succeeds instantly, sizers see an unlimited capacity, and work runs at once;
the loop records what was sent (bits), computed (FLOPs), and the metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generator

from fl.core.actions import ClientResult, Compute, Receive, Send, ServerCompute
from fl.core.algorithm import Algorithm
from fl.core.seeding import numpy_stream

__all__ = ["Traffic", "drive", "run_plain"]


@dataclass
class Traffic:
    """What one generator moved and computed."""

    bits_up: int = 0
    bits_down: int = 0
    flops: float = 0.0
    server_flops: float = 0.0


def drive(gen: Generator, capacity_bits: float = math.inf) -> tuple[Any, Traffic]:
    """Run an action generator to completion, as a simulator would with perfect links.

    Returns ``(return value, traffic)``. Raises if a payload's ``bits`` differ from what its
    sizer announced (exact accounting).
    """
    traffic = Traffic()
    value: Any = None
    try:
        action = next(gen)
        while True:
            if isinstance(action, Receive):
                traffic.bits_down += int(action.payload.bits)
                value = action.payload
            elif isinstance(action, Compute):
                traffic.flops += action.flops
                value = action.work() if action.work else None
            elif isinstance(action, ServerCompute):
                traffic.server_flops += action.flops
                value = action.work() if action.work else None
            elif isinstance(action, Send):
                plan = action.sizer(capacity_bits)
                traffic.bits_up += int(plan.bits)
                value = action.work(plan) if action.work else None
                sent = getattr(value, "bits", None)
                if sent is not None and int(sent) != int(plan.bits):
                    raise RuntimeError(
                        f"Send {action.label!r}: the sizer announced {plan.bits} bits but the payload has {sent}."
                    )
            else:
                raise TypeError(f"Unknown action {action!r}.")
            action = gen.send(value)
    except StopIteration as stop:
        return stop.value, traffic


def run_plain(
    algorithm: Algorithm,
    rounds: int,
    clients_per_round: int | None = None,
    seed: int = 0,
    evaluate_initial: bool = False,
) -> list[dict[str, float]]:
    """Synchronous FL rounds with every client's transfers succeeding.

    clients_per_round: clients drawn uniformly without replacement each round (stream
        ``selection`` of ``seed``), run in increasing id order; None = all clients.
    evaluate_initial: first add a row for round -1 with the untrained model's metrics.
    Returns one row per round: round, n_selected, n_completed, n_failed, bits_up, bits_down,
    flops, then the algorithm's aggregation columns and evaluation metrics.
    """
    n = algorithm.context.n_clients
    k = n if clients_per_round is None else clients_per_round
    if not 1 <= k <= n:
        raise ValueError(f"clients_per_round must be in [1, {n}]. Got {clients_per_round} instead.")
    rng = numpy_stream(seed, "selection")
    rows: list[dict[str, float]] = []
    if evaluate_initial:
        rows.append({"round": -1, **algorithm.evaluate(-1)})
    for rnd in range(rounds):
        selected = sorted(int(c) for c in rng.choice(n, size=k, replace=False))
        results, total = [], Traffic()
        for client in selected:
            update, traffic = drive(algorithm.client_round(rnd, client))
            results.append(ClientResult(client, update, algorithm.n_samples(client), base_round=rnd))
            total.bits_up += traffic.bits_up
            total.bits_down += traffic.bits_down
            total.flops += traffic.flops
        extra, server = drive(algorithm.server_round(rnd, results, []))
        rows.append({
            "round": rnd,
            "n_selected": len(selected),
            "n_completed": len(results),
            "n_failed": 0,
            "bits_up": total.bits_up,
            "bits_down": total.bits_down,
            "flops": total.flops,
            "server_flops": server.server_flops,
            **(extra or {}),
            **algorithm.evaluate(rnd),
        })
    return rows

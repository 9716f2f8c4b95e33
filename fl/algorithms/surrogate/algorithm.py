"""SURROGATE learner: a no-torch stand-in for network studies (no real learning).

Every output of a run that uses it says so (``learner: "surrogate"`` in summary.json, plot
titles). Accuracy is a fitted curve of the information delivered so far,

    acc(n) = a_max − (a_max − a0) · exp(−n / n_half),
    loss(n) = loss_min + (loss0 − loss_min) · exp(−n / n_half),

where n is the sum over aggregated updates of the client's sample count, discounted by
staleness ``(1 + s) ** −staleness_exponent`` and, for adaptive uploads, scaled by the
fraction ``k / k_max`` of the payload the client could send. The curve's parameters are
options, or come from a calibration file ``fedwave calibrate`` fitted to real runs
(``calibration``, :mod:`fl.algorithms.surrogate.calibration`); the run's summary names the file it used.

A client's round is the FedAvg shape: ``Receive(model) → Compute(flops) → Send(update)``.
Upload size is fixed (``upload_mode: fixed``) or follows the capacity the simulator hands
the sizer (``adaptive``): ``k = clip(floor(capacity_fraction · capacity_bits /
bits_per_k), k_min, k_max)`` and ``bits = header_bits + k · bits_per_k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, SendPlan
from fl.core.algorithm import Algorithm, AlgorithmContext
from fl.algorithms.surrogate.config import SurrogateConfig

__all__ = ["SurrogateConfig", "SurrogateAlgorithm", "SurrogatePayload"]


@dataclass(frozen=True)
class SurrogatePayload:
    """What travels: only its size (and k) matter to the surrogate."""

    bits: int
    k: int | None = None


class SurrogateAlgorithm(Algorithm):
    """Surrogate learner (``is_surrogate = True``): accuracy from delivered information."""

    name = "surrogate"
    Config = SurrogateConfig
    is_surrogate = True

    def __init__(self, config: SurrogateConfig, context: AlgorithmContext) -> None:
        super().__init__(config, context)
        problems = config.context_problems(context.n_clients)
        if problems:
            raise ValueError(f"SurrogateConfig.{problems[0]}")
        self._n_samples = config.n_samples
        # the file the curve came from (read again: its hash and runs go into the summary)
        self.calibration = None
        if config.calibration is not None:
            from fl.algorithms.surrogate.calibration import read_calibration

            self.calibration = read_calibration(config.calibration)
        self.delivered = 0.0  # effective delivered samples, n in acc(n)
        self.version = 0

    def n_samples(self, client: int) -> int:
        ns = self._n_samples
        return int(ns[client]) if isinstance(ns, list) else int(ns)

    def size_hints(self) -> dict[str, float]:
        """Expected sizes before any round ran (the simulator's deadline-aware selection
        uses them): upload/download bits and FLOPs per round (adaptive uploads: the
        smallest, k_min, since the size adapts to the capacity)."""
        c = self.config
        up = c.upload_bits if c.upload_mode == "fixed" else c.header_bits + c.k_min * c.bits_per_k
        return {"upload_bits": float(up), "download_bits": float(c.download_bits),
                "flops": float(c.flops_per_round)}

    def _sizer(self, capacity_bits: float) -> SendPlan:
        c = self.config
        if c.upload_mode == "fixed":
            return SendPlan(bits=c.upload_bits)
        budget = c.capacity_fraction * max(capacity_bits, 0.0) - c.header_bits
        k = int(min(max(math.floor(budget / c.bits_per_k), c.k_min), c.k_max))
        return SendPlan(bits=c.header_bits + k * c.bits_per_k, k=k)

    def client_round(self, rnd: int, client: int):
        c = self.config
        yield Receive(SurrogatePayload(c.download_bits), label="model")
        yield Compute(flops=c.flops_per_round, label="train")
        update = yield Send(sizer=self._sizer,
                            work=lambda plan: SurrogatePayload(plan.bits, plan.k), label="update")
        return update

    def aggregate(self, rnd: int, results: Sequence[ClientResult],
                  failures: Sequence[Failure]) -> dict[str, float]:
        c = self.config
        gain = 0.0
        ks = []
        for r in results:
            frac = 1.0
            if c.upload_mode == "adaptive" and r.update.k is not None:
                frac = r.update.k / c.k_max
                ks.append(r.update.k)
            gain += r.n_samples * frac * (1.0 + r.staleness) ** (-c.staleness_exponent)
        self.delivered += gain
        self.version += 1
        return {"delivered_samples": gain,
                "k_mean": (sum(ks) / len(ks)) if ks else math.nan}

    def info(self) -> dict[str, float | int | str]:
        """The curve this run models and where it came from (``calibration``: the file
        ``fedwave calibrate`` wrote, its sha256 and the runs it was fitted to; ``none``)."""
        c = self.config
        out: dict[str, float | int | str] = {"a0": c.a0, "a_max": c.a_max, "n_half": c.n_half,
                                             "loss0": c.loss0, "loss_min": c.loss_min}
        cal = self.calibration
        if cal is None:
            out["calibration"] = "none"
        else:
            out.update(calibration=cal.path, calibration_sha256=cal.sha256,
                       calibration_runs=" ".join(cal.runs))
        return out

    def evaluate(self, rnd: int) -> dict[str, float]:
        c = self.config
        e = math.exp(-self.delivered / c.n_half)
        return {"accuracy": c.a_max - (c.a_max - c.a0) * e,
                "loss": c.loss_min + (c.loss0 - c.loss_min) * e}

"""The federated-algorithm plug-in point: a small ABC, a config per algorithm, a registry.

An algorithm is registered under the name YAML uses (``fl.algorithm: fedavg_lora``) with a
pydantic config class (``extra="forbid"``) that validates the ``fl.options`` mapping. The
simulator drives it through :mod:`fl.actions`; nothing here imports torch or simpy, so the
surrogate learner runs without torch and real learners import torch lazily.

A host that runs ``Send.job`` s in worker processes asks the algorithm for a picklable
:meth:`~Algorithm.replica` builder once, and each worker builds its own copy from it.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generator, Iterator, Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from fl.actions import Action, ClientResult, Failure

__all__ = [
    "AlgorithmConfig",
    "AlgorithmContext",
    "Algorithm",
    "Replica",
    "register_algorithm",
    "get_algorithm",
    "algorithm_names",
]


class AlgorithmConfig(BaseModel):
    """Base for every algorithm's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class AlgorithmContext:
    """What the host (the simulator, or a plain loop) tells an algorithm at set-up.

    n_clients: number of clients in the population.
    seed: the root seed; algorithms derive their own streams from it by stable name.
    run_dir: where the algorithm may write artefacts (histograms, maps), or None.
    rounds: how many rounds the host will run, if it knows (the last one is always an
        evaluation round, whatever an algorithm's ``eval_every``), else None.
    """

    n_clients: int
    seed: int
    run_dir: str | None = None
    rounds: int | None = None


ClientRound = Generator[Action, Any, Any]


@dataclass(frozen=True)
class Replica:
    """Builds, in a worker process, an algorithm for running ``Send.job`` s: a fresh build
    from the same class, config and context (``run_dir`` None: a replica writes nothing).

    Picklable: the class travels by reference, config and context by value.
    """

    cls: type
    config: AlgorithmConfig
    context: AlgorithmContext

    def __call__(self) -> "Algorithm":
        return self.cls(self.config, self.context)


class Algorithm(ABC):
    """One federated learning method.

    Subclasses set ``name``, ``Config`` and implement the abstract methods. ``is_surrogate``
    is True for stand-ins that do no real learning (every output labels them).
    """

    name: ClassVar[str]
    Config: ClassVar[type[AlgorithmConfig]]
    is_surrogate: ClassVar[bool] = False

    def __init__(self, config: AlgorithmConfig, context: AlgorithmContext) -> None:
        self.config = config
        self.context = context

    def is_eval_round(self, rnd: int, every: int) -> bool:
        """Whether to evaluate after round ``rnd``: every ``every`` rounds ((rnd + 1) % every
        == 0), the initial model (rnd = −1) and the host's last round always."""
        rounds = getattr(self.context, "rounds", None)  # None in checkpoints from before
        return (rnd + 1) % every == 0 or (rounds is not None and rnd == rounds - 1)

    @abstractmethod
    def n_samples(self, client: int) -> int:
        """Local sample count of ``client`` (aggregation weight, selection hints)."""

    @abstractmethod
    def client_round(self, rnd: int, client: int) -> ClientRound:
        """The client's part in round ``rnd``: a generator of actions returning its update."""

    def server_round(
        self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]
    ) -> ClientRound:
        """Aggregate (may yield ``ServerCompute``/``Receive``-free actions); return metrics.

        The default calls :meth:`aggregate`, yields nothing, and returns its metrics.
        """
        return dict(self.aggregate(rnd, results, failures))
        yield  # pragma: no cover  (makes this a generator)

    @abstractmethod
    def aggregate(
        self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]
    ) -> Mapping[str, float]:
        """Fold the round's results into the global state; return per-round extra columns."""

    @abstractmethod
    def evaluate(self, rnd: int) -> Mapping[str, float]:
        """Metrics of the global model after round ``rnd``: at least ``accuracy`` and ``loss``."""

    def close(self) -> None:
        """Release resources (worker pools, files)."""

    def replica(self) -> Replica:
        """What a worker process builds to run this algorithm's ``Send.job`` s (see
        :mod:`fl.actions`): by default a fresh build from the same config and context, which
        must hold everything a job reads from it (frozen models, data)."""
        return Replica(type(self), self.config, dataclasses.replace(self.context, run_dir=None))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here (a checkpoint at a round boundary).

        The default returns every attribute of the algorithm object (the host pickles it:
        model weights, adapters, optimiser states, numpy/torch generators and data cursors
        included). Override it to leave out what cannot be pickled (worker pools, open
        files) and rebuild that in :meth:`load_state_dict`.
        """
        return dict(self.__dict__)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, into an algorithm built from the same
        config and context (the default sets the attributes back)."""
        self.__dict__.update(state)


_REGISTRY: dict[str, str | type[Algorithm]] = {
    # name -> "module:Class" (imported lazily so torch loads only when used) or the class.
    "surrogate": "fl.surrogate:SurrogateAlgorithm",
    "fedavg_lora": "fl.fedavg_lora:FedAvgLoRA",
    "kd_topk": "fl.kd_topk:KDTopK",
    "split_lora": "fl.split_lora:SplitLoRA",
    "fedsoda": "fl.fedsoda:FedSODA",
}


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def algorithm_names() -> list[str]:
    """Registered algorithm names, sorted (some may not be implemented yet)."""
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``; a clear error otherwise."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"Unknown FL algorithm {name!r}. Known: {', '.join(algorithm_names())}."
        ) from None
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise NotImplementedError(
                f"FL algorithm {name!r} is registered but not available ({exc})."
            ) from exc
        _REGISTRY[name] = cls
        return cls
    return entry


def iter_registry() -> Iterator[tuple[str, str | type[Algorithm]]]:
    """(name, entry) pairs for contract tests."""
    return iter(sorted(_REGISTRY.items()))

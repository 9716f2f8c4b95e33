"""The federated-algorithm plug-in point: a small ABC, a config per algorithm, a registry.

An algorithm is registered in :data:`ALGORITHMS` under the name YAML uses (``fl.algorithm:
fedavg_lora``) with its pydantic config class (``extra="forbid"``, torch-free, in
``fl/algorithms/<name>/config.py``) that validates the ``fl.options`` mapping, and a lazy
``"module:Class"`` reference to the algorithm — once, in ``fl/algorithms/<name>/__init__.py``. The simulator drives it through
:mod:`fl.core.actions`; nothing here imports torch or simpy, so scenarios validate and the
surrogate learner runs without torch, and real learners import torch when they are built.

A host that runs ``Send.job`` s in worker processes asks the algorithm for a picklable
:meth:`~Algorithm.replica` builder once, and each worker builds its own copy from it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generator, Iterator, Mapping, Sequence

from fl.core.actions import Action, ClientResult, Failure
from fl.core.registry import Registry
from fl.core.config import AlgorithmConfig

if TYPE_CHECKING:
    from fl.core.metrics import PromptResults

__all__ = [
    "AlgorithmConfig",
    "AlgorithmContext",
    "Runtime",
    "Algorithm",
    "Replica",
    "ALGORITHMS",
    "get_algorithm",
    "algorithm_config",
    "algorithm_names",
]


@dataclass(frozen=True)
class Runtime:
    """Where and how the real learners compute (what ``execution`` says; torch-free).

    device: ``auto`` (a GPU when one is present, else the CPU), ``cpu``, ``cuda``,
        ``cuda:N`` or ``mps``; see :func:`fl.lm.device.resolve_device`.
    dtype: the compute precision of forward passes: ``float32`` (no autocast), or
        ``bfloat16`` / ``float16`` (autocast; adapters, optimiser states and losses stay float32).
    prefix_cache: compute the hidden states below the lowest layer with adapters once per
        example and reuse them (:mod:`fl.lm.prefix`).
    prefix_cache_mb: the most memory that cache may take, MiB.
    """

    device: str = "cpu"
    dtype: str = "float32"
    prefix_cache: bool = True
    prefix_cache_mb: int = 2048


@dataclass(frozen=True)
class AlgorithmContext:
    """What the host (the simulator, or a plain loop) tells an algorithm at set-up.

    n_clients: number of clients in the population.
    seed: the root seed; algorithms derive their own streams from it by stable name.
    run_dir: where the algorithm may write artefacts (histograms, maps), or None.
    rounds: how many rounds the host will run, if it knows (the last one is always an
        evaluation round, whatever an algorithm's ``eval_every``), else None.
    runtime: device, precision and the prefix cache of the real learners.
    """

    n_clients: int
    seed: int
    run_dir: str | None = None
    rounds: int | None = None
    runtime: Runtime = Runtime()


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

    def take_prompt_results(self) -> "PromptResults | None":
        """How the last :meth:`evaluate` scored each test prompt (a
        :class:`fl.core.metrics.PromptResults`: prompt indices, right or wrong, label, prediction),
        handed over once — None afterwards, and None for an algorithm without test prompts
        (the surrogate's accuracy is modelled). The host calls it after every evaluate(), so
        that two runs scored on the same prompts can be compared pairwise."""
        return None

    def info(self) -> Mapping[str, float | int | str]:
        """Static facts for the run summary (sizes, ``client_storage_bytes``: what a client
        holds of the model, bytes); empty by default."""
        return {}

    def close(self) -> None:
        """Release resources (worker pools, files)."""

    def run_jobs(self, items: Sequence[tuple[Any, Any]]) -> list[Any]:
        """Run several clients' ``Send.job`` s at once — ``items`` are ``(job, plan)`` pairs —
        and return their results in order; each result must equal ``job(self, plan)`` (to
        float tolerance). The default runs them one after another; an algorithm whose clients
        share a frozen base may batch them (``execution.batch_clients``)."""
        return [job(self, plan) for job, plan in items]

    def replica(self) -> Replica:
        """What a worker process builds to run this algorithm's ``Send.job`` s (see
        :mod:`fl.core.actions`): by default a fresh build from the same config and context, which
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


#: The algorithms by the name YAML uses: config class (torch-free) and the algorithm class,
#: as a lazy "module:Class" reference until it is first built (torch loads only then). Each
#: folder ``fl/algorithms/<name>/`` registers its algorithm in its ``__init__.py`` — the
#: only place that names it — and importing this module imports every such folder (their
#: ``__init__`` and ``config`` modules only, torch-free). Register an algorithm from
#: elsewhere with ``ALGORITHMS.register(name, Config, "module:Class")`` before
#: :mod:`sim.scenario` is imported (its schema is generated from this registry then).
ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "Fl")


def algorithm_names() -> list[str]:
    """Registered algorithm names, sorted."""
    return ALGORITHMS.names()


def algorithm_config(name: str) -> type[AlgorithmConfig]:
    """The config class of algorithm ``name`` (no torch import); KeyError if unknown."""
    return ALGORITHMS.config(name)


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name`` (imported on first use).

    Raises KeyError for an unknown name and NotImplementedError when the algorithm cannot
    be imported (a missing dependency).
    """
    return ALGORITHMS.get(name)


def iter_registry() -> Iterator[tuple[str, Any]]:
    """(name, class or "module:Class" reference) pairs, for contract tests."""
    return iter([(name, ALGORITHMS.reference(name)) for name in ALGORITHMS.names()])


def _register_folders() -> None:
    """Import every ``fl.algorithms.<name>`` package, in name order: each registers itself."""
    import importlib
    import pkgutil

    import fl.algorithms

    for info in sorted(pkgutil.iter_modules(fl.algorithms.__path__), key=lambda m: m.name):
        if info.ispkg:
            importlib.import_module(f"fl.algorithms.{info.name}")


_register_folders()

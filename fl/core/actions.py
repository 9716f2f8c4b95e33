"""The sim <-> fl contract: plain action objects a client's (or the server's) round yields.

A federated algorithm describes one client's part in a round as a generator of actions,
much as a SimPy process yields events. fl/ never sees SimPy: the simulator's round driver
interprets each action in simulated time and sends the action's result back into the
generator::

    def client_round(self, rnd, client):
        yield Receive(self.global_adapter_payload())         # downlink transfer
        yield Compute(flops=self.train_flops(client))          # local training time
        update = yield Send(sizer=self.size_update,            # uplink transfer; the real
                            work=lambda plan: self.train(client, plan))  # work runs on completion
        return update                                          # handed to aggregation

Rules the driver guarantees (and tests pin):

- ``Receive``: the payload's ``bits`` travel downlink; the generator gets the payload back.
- ``Compute``: ``flops`` are divided by the device's effective FLOP/s to give simulated
  time; when that time has passed, ``work()`` runs (if given) and its result is sent back.
- ``Send``: when the transfer *starts*, the driver calls ``sizer(capacity_bits)`` with the
  bits the client's link is predicted to carry in its time budget; the returned
  :class:`SendPlan` fixes the payload size. The bits then travel. Only when the transfer
  *completes* does ``work(plan)`` run — so a client whose upload never completes costs no
  real compute — and its result is sent back into the generator.
- ``Send.job`` (optional): the same work as a picklable :class:`Job` that a host may run
  elsewhere — in a worker process, on its own replica of the algorithm — as soon as the
  sizer has returned, so that uploads in flight at the same simulated time train at the
  same real time. ``job(replica, plan)`` must return exactly what ``work(plan)`` returns,
  where ``replica`` is :meth:`Algorithm.replica` built in the worker: a job carries
  everything that changes during a run (the state the client received, its batch plan,
  its generator state) and reads from the replica only what never changes (frozen weights,
  data, config). The host consumes the result when the upload completes in simulated time
  and discards it if the upload fails.
- ``ServerCompute``: server-side work inside a client's round (split learning); timed on
  the server's compute resource (queued if the server serves clients sequentially).
- If a transfer fails (deadline, outage, drop-out) the driver closes the generator
  (``GeneratorExit`` inside it) and reports a :class:`Failure` to aggregation as data.
- The generator's return value is the client's update, wrapped in a :class:`ClientResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Union, runtime_checkable

__all__ = [
    "Sized",
    "SendPlan",
    "Receive",
    "Compute",
    "Send",
    "Job",
    "ServerCompute",
    "Action",
    "ClientResult",
    "Failure",
]


@runtime_checkable
class Sized(Protocol):
    """Anything that travels: it states its exact size in bits."""

    @property
    def bits(self) -> int: ...


@dataclass(frozen=True)
class SendPlan:
    """What a sizer decided before an upload starts.

    bits: exact payload size in bits (what the link must carry).
    k: the top-k chosen (adaptive distillation), or None when not applicable.
    info: extra per-send facts recorded in the trace (JSON-serialisable scalars).
    """

    bits: int
    k: int | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.bits) != self.bits or self.bits < 0:
            raise ValueError(f"SendPlan.bits must be a non-negative integer. Got {self.bits!r} instead.")


@dataclass(frozen=True)
class Receive:
    """Download ``payload`` (anything with ``.bits``) from the server to this client."""

    payload: Sized
    label: str = "model"


@dataclass(frozen=True)
class Compute:
    """Run ``flops`` floating-point operations on the client's device.

    ``work`` (optional, no arguments) runs when the computation ends in simulated time; its
    result is sent back into the generator.
    """

    flops: float
    work: Callable[[], Any] | None = None
    label: str = "train"

    def __post_init__(self) -> None:
        if not self.flops >= 0:
            raise ValueError(f"Compute.flops must be >= 0. Got {self.flops!r} instead.")


@runtime_checkable
class Job(Protocol):
    """A ``Send``'s work as a picklable object a host may run in another process.

    ``job(replica, plan)`` equals ``work(plan)`` of the same ``Send``; ``replica`` is an
    algorithm built by :meth:`fl.core.algorithm.Algorithm.replica` (see the module docstring).
    """

    def __call__(self, replica: Any, plan: SendPlan) -> Any: ...


@dataclass(frozen=True)
class Send:
    """Upload to the server.

    sizer: ``capacity_bits -> SendPlan``, called when the transfer starts.
    work: ``plan -> payload`` (optional), called when the transfer completes; the result is
        sent back into the generator (and is what the server receives).
    job: the same work as a picklable :class:`Job` (optional); a host with worker processes
        may run it instead of ``work``, from the moment the sizer returns. Hosts without
        workers ignore it.
    budget_s: the airtime the sizer's capacity is meant for (optional): the host hands the
        sizer ``predicted rate × budget`` with this budget unless the scenario sets its own
        (``fl.capacity_budget_s``); None: the time left to the deadline.
    """

    sizer: Callable[[float], SendPlan]
    work: Callable[[SendPlan], Any] | None = None
    label: str = "update"
    job: Job | None = None
    budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"Send.budget_s must be > 0 or None. Got {self.budget_s!r} instead.")


@dataclass(frozen=True)
class ServerCompute:
    """Server-side work inside a client's round (e.g. split learning's server half)."""

    flops: float
    work: Callable[[], Any] | None = None
    label: str = "server"

    def __post_init__(self) -> None:
        if not self.flops >= 0:
            raise ValueError(f"ServerCompute.flops must be >= 0. Got {self.flops!r} instead.")


Action = Union[Receive, Compute, Send, ServerCompute]


@dataclass(frozen=True)
class ClientResult:
    """A client's completed update as aggregation sees it.

    update: the generator's return value (algorithm-defined payload object).
    n_samples: the client's local sample count (aggregation weight).
    base_round: the global-model version the client started from.
    staleness: rounds (or aggregations) between base_round and aggregation (0 when synchronous).
    """

    client: int
    update: Any
    n_samples: int
    base_round: int
    staleness: int = 0


@dataclass(frozen=True)
class Failure:
    """A client that did not deliver; passed to aggregation as data, never dropped silently.

    reason: one of ``deadline``, ``outage``, ``dropout``, ``not_selected_in_time``.
    stage: the action label at which it failed (e.g. ``update``, ``model``).
    bits_delivered: bits of the failed transfer that did arrive.
    """

    client: int
    reason: str
    stage: str
    bits_delivered: float = 0.0

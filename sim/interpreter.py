"""The action interpreter: what each :mod:`fl.core.actions` action does in simulated time.

A client's part in a round is a generator of plain actions (fl/ knows no SimPy); the
:class:`Interpreter` runs it as a SimPy process:

- ``Receive``: wired path aggregator → the client's site, then the downlink radio transfer.
- ``Compute``: ``flops / effective FLOP/s`` of the device (jittered); then ``work()``.
- ``Send``: at the start of the transfer ``sizer(capacity_bits)`` with ``capacity_bits =
  predicted rate (current channel state, current MAC share) × time budget`` (the budget:
  ``fl.capacity_budget_s`` when the scenario sets it, else the ``Send``'s own ``budget_s``,
  else the time left to the deadline, else 1 s); the uplink radio transfer; the wired path
  to the aggregator; only then ``work(plan)``. With ``execution.backend`` ``process`` or
  ``ray`` (or ``execution.batch_clients``), a ``Send`` with a ``job`` is submitted right
  after the sizer and its result is taken when the upload completes (:mod:`sim.execution`);
  the outputs are the same.
- ``ServerCompute``: on the server: ``sequential`` service queues jobs (FIFO, one at a
  time at the full FLOP/s); ``parallel`` service shares the FLOP/s equally among the jobs
  in service (processor sharing, exact completion times; a lone job takes ``flops /
  server FLOP/s``).

A failure (deadline, outage timeout, drop-out) closes the generator and is returned as a
:class:`~fl.core.actions.Failure`. Bits and energy go to the simulation's current
:class:`RoundAccount`. Which clients run, and when, is the round drivers' business
(:mod:`sim.drivers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import simpy

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, ServerCompute
from sim.execution import JobBatcher, make_executor, torch_threads
from sim.links import DOWN, UP

__all__ = ["Interpreter", "Task", "TaskFailed", "RoundAccount"]


@dataclass
class RoundAccount:
    """Per-round (sync) or per-aggregation (async) accumulator."""

    t_start: float
    n_selected: int = 0
    bits_up: float = 0.0
    bits_down: float = 0.0
    energy_j: float = 0.0
    in_row: bool = False  # already written as a row of rounds.csv


class TaskFailed(Exception):
    """A client's task cannot go on (a transfer failed); ``reason`` is the failure's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Task:
    """State of one client's part in one round (what a failure reports)."""

    client: int
    rnd: int
    base_version: int
    deadline_abs: float
    edge: str | None = None  # hierarchical rounds: the client's edge aggregator
    stage: str = "start"
    bits_delivered: float = 0.0
    flow: Any = None
    proc: Any = None
    upload_bits: int = 0
    compute_t0: float | None = None  # simulated start of the computation under way, if any
    compute_flops_per_s: float = 0.0  # its pace: a cut computation counts the share it did


def update_bits(update: Any) -> int:
    """``update.bits`` as an int (0 when the update has none)."""
    b = getattr(update, "bits", 0)
    try:
        return int(b)
    except (TypeError, ValueError):
        return 0


class Interpreter:
    """Runs clients' and the server's action generators against one simulation's entities.

    Args:
        sim: the :class:`~sim.simulation.Simulation` (its environment, network, clients,
            server, counters and current round account).
        edge_copy: hierarchical rounds: ``edge_copy(round, edge, bits)`` is the event of
            the global model's arrival at ``edge`` (a ``Receive`` of a task with an edge
            waits for it before its own wired hop); ``None`` for flat rounds.
    """

    def __init__(self, sim, edge_copy: Callable[[int, str, int], simpy.Event] | None = None) -> None:
        self.sim = sim
        # what never changes during a run (the counters and the account are read from sim)
        self.env = sim.env
        self.tracer = sim.tracer
        self.network = sim.network
        self.wired_net = sim.wired
        self.backhaul = sim.backhaul
        self.clients = sim.clients
        self.compute_model = sim.compute
        self.server = sim.server
        self.algorithm = sim.algorithm
        self.scenario = sim.scenario
        self.cell_node = sim._cell_node
        self.edge_copy = edge_copy

    def _trace(self, event: str, **kw) -> None:
        self.tracer.record(self.env.now, event, **kw)

    def _aggregator_for(self, task: Task) -> str:
        return task.edge if task.edge is not None else self.server.node

    def _budget_s(self, task: Task, action: Send) -> float:
        for b in (self.scenario.fl.capacity_budget_s, action.budget_s):
            if b is not None:
                return b
        if math.isfinite(task.deadline_abs):
            return max(task.deadline_abs - self.env.now, 0.0)
        return 1.0

    # ------------------------------------------------------------------ a client's round
    def client_task(self, task: Task):
        """Process: interpret one client's action generator; return ClientResult or Failure."""
        sim = self.sim
        cid = task.client
        client = self.clients[cid]
        gen = self.algorithm.client_round(task.rnd, cid)
        value = None
        self.network.hold(cid)  # a participant: its channel is evaluated with each chunk's batch
        sim._live[id(task)] = task
        try:
            while True:
                try:
                    action = gen.send(value)
                except StopIteration as stop:
                    update = stop.value
                    break
                task.stage = action.label
                if isinstance(action, Receive):
                    value = yield from self.receive(task, client, action)
                elif isinstance(action, Compute):
                    value = yield from self.compute(task, client, action)
                elif isinstance(action, Send):
                    value = yield from self.send(task, client, action)
                elif isinstance(action, ServerCompute):
                    value = yield from self.server_compute(task.rnd, action, cid)
                else:
                    raise TypeError(f"Algorithm {self.algorithm.name!r} yielded {action!r}; "
                                    "expected Receive, Compute, Send or ServerCompute.")
        except (simpy.Interrupt, TaskFailed) as exc:
            reason = exc.cause if isinstance(exc, simpy.Interrupt) else exc.reason
            if task.flow is not None and task.flow.ok is None:
                self.network.cancel(task.flow, reason)
                self.account_flow(task.flow, client)
                task.bits_delivered = task.flow.sent
            gen.close()
            self.network.release(cid)
            self._trace("client_failed", round=task.rnd, client=cid,
                        bits_delivered=task.bits_delivered, detail=f"{reason}:{task.stage}")
            sim.n_failures += 1
            return Failure(cid, str(reason), task.stage, float(task.bits_delivered))
        finally:
            sim._live.pop(id(task), None)
        self.network.release(cid)
        self._trace("client_done", round=task.rnd, client=cid)
        sim.n_results += 1
        return ClientResult(cid, update, self.algorithm.n_samples(cid), task.base_version)

    def account_flow(self, flow, client) -> None:
        """Add a finished (or cut) flow's energy and bits to the client and the round."""
        acct = self.sim._acct
        client.energy_j += flow.energy_j
        acct.energy_j += flow.energy_j
        if flow.direction == UP:
            acct.bits_up += flow.sent
        else:
            acct.bits_down += flow.sent

    def radio(self, task: Task, client, direction: str, bits: int, capacity_bits=None, k=None):
        """Process part: one radio transfer of ``bits``; raises :class:`TaskFailed` if it fails."""
        power = client.tx_power_w if direction == UP else client.device.rx_power_w
        flow = self.network.start(client.id, direction, bits, power, task.rnd, task.stage,
                                  capacity_bits, k)
        task.flow = flow
        task.bits_delivered = 0.0
        if flow.ok is None:
            yield flow.done
        task.flow = None
        task.bits_delivered = flow.sent
        self.account_flow(flow, client)
        if not flow.ok:
            raise TaskFailed(flow.reason or "failed")
        return flow

    def wired(self, task: Task, src: str, dst: str, bits: int, direction: str, cid: int):
        """Process part: ``bits`` over the wired path ``src`` → ``dst``."""
        msg = self.wired_net.send(self.backhaul.path(src, dst), bits)
        if msg.done is not None:
            try:
                yield msg.done
            except simpy.Interrupt:
                self.wired_net.cancel(msg)  # the others on its links speed up
                raise
        if self.tracer.enabled:
            self._trace("wired_end", round=task.rnd, client=cid, direction=direction, bits=bits,
                        detail=f"{src}->{dst}")

    def receive(self, task: Task, client, action: Receive):
        bits = int(action.payload.bits)
        self.sim._hist["down_bits"].append(bits)
        if task.edge is not None:
            yield self.edge_copy(task.rnd, task.edge, bits)
        yield from self.wired(task, self._aggregator_for(task), self.sim.site_of(client.id), bits,
                              DOWN, client.id)
        yield from self.radio(task, client, DOWN, bits)
        return action.payload

    def compute(self, task: Task, client, action: Compute):
        sim = self.sim
        sim._hist["flops"].append(action.flops)
        dt = self.compute_model.duration_s(client.id, action.flops)
        self._trace("compute_start", round=task.rnd, client=client.id, detail=action.label)
        task.compute_t0 = self.env.now
        task.compute_flops_per_s = action.flops / dt if dt > 0 else 0.0
        try:
            yield self.env.timeout(dt)
        except simpy.Interrupt as exc:
            self.cut_compute(task, client, f"{action.label}: {exc.cause}")
            raise
        finally:
            task.compute_t0 = None
        sim.client_flops += action.flops
        e = self.compute_model.energy_j(client.id, dt)
        client.energy_j += e
        sim._acct.energy_j += e
        self._trace("compute_end", round=task.rnd, client=client.id, energy_j=e,
                    detail=action.label)
        return action.work() if action.work is not None else None

    def cut_compute(self, task: Task, client, detail: str) -> None:
        """Account (and trace) the energy of a computation cut short now."""
        sim = self.sim
        e = self.compute_model.energy_j(client.id, self.env.now - task.compute_t0)  # spent so far
        sim.client_flops += task.compute_flops_per_s * (self.env.now - task.compute_t0)
        client.energy_j += e
        sim._acct.energy_j += e
        self._trace("compute_cut", round=task.rnd, client=client.id, energy_j=e, detail=detail)

    def cut_at_duration(self) -> None:
        """The run stops at ``duration_s``: what is under way is accounted as of now — an
        upload's delivered bits and the rest as lost (``send_failed``, reason
        ``duration_end``), a computation's energy so far (``compute_cut``)."""
        for task in sorted(self.sim._live.values(), key=lambda t: (t.rnd, t.client)):
            client = self.clients[task.client]
            if task.flow is not None and task.flow.ok is None:
                self.network.cancel(task.flow, "duration_end")
                self.account_flow(task.flow, client)
                task.bits_delivered = task.flow.sent
            if task.compute_t0 is not None:
                self.cut_compute(task, client, "duration_end")
                task.compute_t0 = None

    def send(self, task: Task, client, action: Send):
        rate = self.network.predict_rate(client.id, UP)
        capacity = rate * self._budget_s(task, action)
        plan = action.sizer(capacity)
        self.sim._hist["up_bits"].append(plan.bits)
        pending = self.submit(action, plan)  # trains now, in real time, if workers exist
        try:
            flow = yield from self.radio(task, client, UP, plan.bits, capacity, plan.k)
            site = self.cell_node[flow.cell]
            yield from self.wired(task, site, self._aggregator_for(task), plan.bits, UP, client.id)
        except BaseException:  # failed (or abandoned): its result must never be used
            if pending is not None:
                pending.cancel()
            raise
        task.upload_bits = plan.bits
        if pending is not None:
            return pending.result()
        if action.work is None:
            return None
        with torch_threads(self.scenario.execution.threads):
            return action.work(plan)

    def submit(self, action: Send, plan):
        """Hand ``action.job`` to a worker (starting them at the first job), or None when
        the work runs inline at completion (backend inline, or no job)."""
        sim = self.sim
        ex = self.scenario.execution
        if action.job is None:
            return None
        if ex.backend == "inline":
            if not ex.batch_clients:
                return None
            if sim._batcher is None:
                sim._batcher = JobBatcher(self.algorithm, ex.threads)
            return sim._batcher.submit(action.job, plan)
        if sim._executor is None:
            sim._executor = make_executor(ex.backend, self.algorithm.replica(), ex.workers,
                                          ex.threads)
        return sim._executor.submit(action.job, plan)

    # ------------------------------------------------------------------ the server
    def server_compute(self, rnd: int, action: ServerCompute, cid: int | None = None):
        srv = self.server
        req = None
        if srv.resource is not None:
            req = srv.resource.request()
            yield req
        try:
            self._trace("server_compute_start", round=rnd, client=cid, detail=action.label)
            if action.flops > 0:
                if srv.ps is None:
                    yield self.env.timeout(action.flops / srv.flops_per_s)
                else:
                    job = srv.ps.submit(action.flops)
                    try:
                        yield job
                    except simpy.Interrupt:
                        srv.ps.cancel(job)  # the other jobs speed up
                        raise
            self._trace("server_compute_end", round=rnd, client=cid, detail=action.label)
            self.sim.server_flops += action.flops
        finally:
            if req is not None:
                srv.resource.release(req)
        return action.work() if action.work is not None else None

    def server_round(self, rnd: int, results, failures):
        """Process part: aggregation cost, then the algorithm's server_round generator."""
        agg_flops = self.scenario.server.aggregation_flops_per_update * len(results)
        if agg_flops > 0:
            yield from self.server_compute(rnd, ServerCompute(agg_flops, label="aggregate"))
        gen = self.algorithm.server_round(rnd, results, failures)
        value = None
        while True:
            try:
                action = gen.send(value)
            except StopIteration as stop:
                metrics = stop.value or {}
                break
            if not isinstance(action, ServerCompute):
                raise TypeError(f"server_round of {self.algorithm.name!r} yielded {action!r}; "
                                "only ServerCompute is supported there.")
            value = yield from self.server_compute(rnd, action)
        self._trace("aggregate", round=rnd, bits=int(sum(update_bits(r.update) for r in results)))
        return dict(metrics)

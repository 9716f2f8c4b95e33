"""Round drivers: which clients run when, and when the server aggregates.

- :class:`Driver`: what every driver shares — selecting clients and marking them, starting
  a client's task (with its drop-out), the server's round, evaluation and the rows of
  rounds.csv. Subclasses write :meth:`Driver.run`.
- :class:`SyncDriver`: rounds; each selects ``fl.clients_per_round`` clients, waits for all
  of them or the deadline (``fl.deadline_s``), and aggregates when at least
  ``fl.min_updates`` updates arrived. Writes a checkpoint at every round boundary.
- :class:`HierarchicalDriver`: sync rounds through edge servers (``fl.hierarchical``):
  the cloud sends the global model to each edge once per round, each edge forwards one
  partial aggregate to the cloud.
- :class:`AsyncDriver`: buffered asynchronous aggregation (``fl.driver: async``): a
  client is dispatched whenever one returns; every ``fl.buffer_size`` updates are
  aggregated, updates older than ``fl.max_staleness`` versions are discarded.

What a client's task does is :mod:`sim.interpreter`'s; a failure (deadline, outage,
drop-out, stale) reaches ``Algorithm.aggregate`` as a :class:`~fl.core.actions.Failure`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import simpy

from fl.core.actions import ClientResult, Failure
from sim.interpreter import Interpreter, RoundAccount, Task
from sim.links import DOWN, UP
from sim.prediction import selection_context
from sim.scenario import DEFAULT_DROPOUT_WINDOW_S

__all__ = ["Driver", "SyncDriver", "HierarchicalDriver", "AsyncDriver", "make_driver"]


class Driver:
    """Base of the round drivers (see the module docstring).

    Args:
        sim: the :class:`~sim.simulation.Simulation` whose rounds this drives.
    """

    def __init__(self, sim) -> None:
        self.sim = sim
        self.env = sim.env
        self.fl = sim.scenario.fl
        self.interpreter = Interpreter(sim, edge_copy=self._edge_copy_hook())
        clients = sim.scenario.clients
        self.dropout_prob = clients.dropout_prob
        # a drop-out happens uniformly in this window after the task starts
        self.dropout_window_s = (clients.dropout_window_s or self.fl.deadline_s
                                 or DEFAULT_DROPOUT_WINDOW_S)

    def run(self, start_round: int = 0):
        """The driver's SimPy process (a generator), from round ``start_round`` on."""
        raise NotImplementedError

    def _edge_copy_hook(self):
        """What the interpreter waits on before a download from an edge (None: flat rounds)."""
        return None

    def _trace(self, event: str, **kw) -> None:
        self.sim.tracer.record(self.env.now, event, **kw)

    # ------------------------------------------------------------------ selection and tasks
    def select(self, rnd: int, candidates: np.ndarray, k: int) -> np.ndarray:
        """``k`` of ``candidates`` (int64 ids) by the scenario's selection policy."""
        ctx = selection_context(self.sim, rnd, candidates, k)
        return np.asarray(self.sim.selection.select(ctx), dtype=np.int64)

    def mark_selected(self, cid: int, rnd: int) -> None:
        """Record that client ``cid`` was selected in round ``rnd`` (and trace it)."""
        sim = self.sim
        sim.clients[cid].last_selected = rnd
        sim._last_selected[cid] = rnd
        self._trace("selected", round=rnd, client=cid, cell=int(sim.link.serving[cid]))

    def start_task(self, task: Task, body) -> simpy.Process:
        """Start the process ``body`` (a generator running ``task``) and, with probability
        ``clients.dropout_prob``, schedule its drop-out at a uniform time within
        :attr:`dropout_window_s` (``clients.dropout_window_s``, else ``fl.deadline_s``, else
        :data:`~sim.scenario.DEFAULT_DROPOUT_WINDOW_S`)."""
        task.proc = proc = self.env.process(body)
        if self.dropout_prob > 0:
            rng = self.sim.rng.get("dropout")
            if rng.random() < self.dropout_prob:
                ev = self.env.timeout(rng.random() * self.dropout_window_s, value=task)
                ev.callbacks.append(self._on_dropout)
        return proc

    def _on_dropout(self, ev) -> None:
        task = ev._value
        if task.proc.is_alive:
            self._trace("dropout", round=task.rnd, client=task.client, detail=task.stage)
            task.proc.interrupt("dropout")

    # ------------------------------------------------------------------ the end of a round
    def end_round(self, rnd: int, n_completed: int, n_failed: int, metrics: dict,
                  samples_delivered: int) -> None:
        """Evaluate (every ``fl.eval_every`` rounds and the last), trace ``round_end`` and
        append the round's row."""
        evaluated = self._evaluate(rnd, rnd == self.fl.rounds - 1)
        self._trace("round_end", round=rnd)
        self._round_row(rnd, n_completed, n_failed, metrics, evaluated, samples_delivered)

    def _evaluate(self, rnd: int, last: bool) -> dict | None:
        if (rnd + 1) % self.fl.eval_every and not last:
            return None
        ev = dict(self.sim.algorithm.evaluate(rnd))
        self.sim._take_prompt_results(rnd)
        self._trace("evaluate", round=rnd, detail=", ".join(f"{k}={v:.6g}" for k, v in ev.items()))
        return ev

    def _round_row(self, rnd: int, n_completed: int, n_failed: int, metrics: dict,
                   evaluated: dict | None, samples_delivered: int = 0) -> None:
        """Append the round's row; ``samples_delivered``: the sample counts of the clients
        whose updates the round aggregated (0 when it did not aggregate) — the x axis of
        the surrogate's learning curve (``fedwave calibrate``)."""
        sim = self.sim
        a = sim._acct
        row = {"round": rnd, "t_start_s": a.t_start, "t_end_s": self.env.now,
               "n_selected": a.n_selected, "n_completed": n_completed, "n_failed": n_failed,
               "samples_delivered": float(samples_delivered), "bits_up": a.bits_up,
               "bits_down": a.bits_down, "energy_j": a.energy_j,
               "accuracy": math.nan, "loss": math.nan}
        row.update({k: float(v) for k, v in metrics.items()})
        if evaluated:
            for k, v in evaluated.items():
                row[k] = float(v)
        sim.rows.append(row)
        a.in_row = True
        if sim.progress is not None:
            sim.progress(len(sim.rows), self.fl.rounds, row)


class SyncDriver(Driver):
    """Synchronous rounds with a deadline and a minimum number of updates."""

    def _edge_of(self, cid: int) -> str | None:
        """The edge aggregator of client ``cid`` (None: it uploads to the server)."""
        return None

    def _start_of_round(self, rnd: int) -> None:
        """Called as round ``rnd``'s clients are about to be selected."""

    def _forward(self, rnd: int, tasks: list[Task], results: list[ClientResult]):
        """Process part: what happens between the uploads and the server's round (nothing)."""
        return ()

    def run(self, start_round: int = 0):
        sim, fl, env = self.sim, self.fl, self.env
        all_ids = np.arange(len(sim.clients), dtype=np.int64)
        for rnd in range(start_round, fl.rounds):
            sim._acct = RoundAccount(env.now)
            sim.forget_history()
            self._trace("round_start", round=rnd)
            selected = self.select(rnd, all_ids, fl.clients_per_round)
            sim._acct.n_selected = len(selected)
            deadline_abs = env.now + fl.deadline_s if fl.deadline_s is not None else math.inf
            self._start_of_round(rnd)
            tasks = []
            sim.network.refresh(selected)  # their serving cells, now (one batched evaluation)
            for cid in selected.tolist():
                self.mark_selected(cid, rnd)
                tasks.append(Task(cid, rnd, rnd, deadline_abs, self._edge_of(cid)))
            procs = [self.start_task(t, self.interpreter.client_task(t)) for t in tasks]
            if not procs and math.isfinite(deadline_abs):
                yield env.timeout(deadline_abs - env.now)  # nobody selected: the round idles
            if procs:
                if math.isfinite(deadline_abs):
                    yield env.any_of([env.all_of(procs), env.timeout(deadline_abs - env.now)])
                    for p in procs:
                        if p.is_alive:
                            p.interrupt("deadline")
                # A fresh condition: simpy detaches nested conditions once AnyOf fires.
                yield env.all_of(procs)
            outcomes = [p.value for p in procs]
            results = [o for o in outcomes if isinstance(o, ClientResult)]
            failures = [o for o in outcomes if isinstance(o, Failure)]
            if results:
                yield from self._forward(rnd, tasks, results)
            metrics: dict = {}
            samples = 0
            if len(results) >= fl.min_updates:
                metrics = yield from self.interpreter.server_round(rnd, results, failures)
                samples = sum(int(r.n_samples) for r in results)
            else:
                self._trace("round_failed", round=rnd,
                            detail=f"{len(results)} updates < min_updates {fl.min_updates}")
            self.end_round(rnd, len(results), len(failures), metrics, samples)
            if sim.checkpoint is not None:
                sim.write_checkpoint(rnd + 1)
            if sim.stop_after_rounds is not None and rnd + 1 >= sim.stop_after_rounds:
                return


class HierarchicalDriver(SyncDriver):
    """Sync rounds through edge servers: client → nearest edge → cloud (``fl.hierarchical``).

    The cloud sends the global model once per round to each edge server, when its first
    client asks for it (later clients wait for the same copy); after the uploads each edge
    forwards one partial aggregate (the size of its largest upload) to the cloud.
    """

    def __init__(self, sim) -> None:
        self._copies: dict[tuple[int, str], simpy.Event] = {}  # (round, edge): model at edge
        super().__init__(sim)

    def _edge_copy_hook(self):
        return self._edge_copy

    def _edge_of(self, cid: int) -> str:
        return self.sim.backhaul.nearest(self.sim.site_of(cid), "edge")

    def _start_of_round(self, rnd: int) -> None:
        self._copies = {}

    def _edge_copy(self, rnd: int, edge: str, bits: int) -> simpy.Event:
        """The event of the global model's arrival at ``edge`` in round ``rnd``."""
        key = (rnd, edge)
        ev = self._copies.get(key)
        if ev is None:
            sim = self.sim
            ev = self._copies[key] = self.env.event()
            msg = sim.wired.send(sim.backhaul.path(sim.server.node, edge), bits)
            done = msg.done if msg.done is not None else self.env.timeout(0.0)
            done.callbacks.append(lambda _t, ev=ev, edge=edge, rnd=rnd:
                                  self._on_edge_copy(ev, edge, rnd))
        return ev

    def _on_edge_copy(self, ev, edge: str, rnd: int) -> None:
        self._trace("edge_sync", round=rnd, direction=DOWN, detail=edge)
        ev.succeed()

    def _forward(self, rnd: int, tasks: list[Task], results: list[ClientResult]):
        """Process part: each edge forwards one partial aggregate to the cloud."""
        sim = self.sim
        by_client = {t.client: t for t in tasks}
        per_edge: dict[str, int] = {}
        for r in results:
            t = by_client[r.client]
            per_edge[t.edge] = max(per_edge.get(t.edge, 0), t.upload_bits)
        evs = []
        for edge in sorted(per_edge):
            msg = sim.wired.send(sim.backhaul.path(edge, sim.server.node), per_edge[edge])
            evs.append(msg.done if msg.done is not None else self.env.timeout(0.0))
        if evs:
            yield self.env.all_of(evs)
        for edge in sorted(per_edge):
            self._trace("edge_sync", round=rnd, direction=UP, bits=per_edge[edge], detail=edge)


class AsyncDriver(Driver):
    """Buffered asynchronous aggregation with staleness (``fl.driver: async``).

    ``fl.clients_per_round`` clients run at once; each returning client (result or
    failure) frees a slot for a newly selected one. Every ``fl.buffer_size`` results the
    server aggregates a new version (a row of rounds.csv); a result based on a version more
    than ``fl.max_staleness`` behind is discarded (``stale``). Each task is interrupted at
    its own deadline (``fl.deadline_s`` after it started).
    """

    def start_task(self, task: Task, body) -> simpy.Process:
        proc = super().start_task(task, body)
        if math.isfinite(task.deadline_abs):
            ev = self.env.timeout(task.deadline_abs - self.env.now, value=task)
            ev.callbacks.append(self._on_deadline)
        return proc

    def _on_deadline(self, ev) -> None:
        task = ev._value
        if task.proc.is_alive:
            task.proc.interrupt("deadline")

    def run(self, start_round: int = 0):
        sim, fl, env = self.sim, self.fl, self.env
        clients = sim.clients
        n = len(clients)
        version = 0
        inbox: list[tuple[Task, Any]] = []
        wake = [env.event()]
        buffer: list[tuple[Task, ClientResult]] = []
        failures: list[Failure] = []
        sim._acct = RoundAccount(env.now)
        self._trace("round_start", round=0)
        busy = np.zeros(n, dtype=bool)  # the clients' busy flags, as an array

        def task_proc(task: Task):
            out = yield from self.interpreter.client_task(task)
            inbox.append((task, out))
            if not wake[0].triggered:
                wake[0].succeed()

        def dispatch(k: int) -> None:
            idle = np.flatnonzero(~busy)  # = [c.id for c in clients if not c.busy]
            if len(idle) == 0 or k <= 0:
                return
            chosen = self.select(version, idle, k)
            sim.network.refresh(chosen)  # their serving cells, now (one batched evaluation)
            for cid in chosen.tolist():
                clients[cid].busy = True
                busy[cid] = True
                sim._acct.n_selected += 1
                self.mark_selected(cid, version)
                deadline = env.now + fl.deadline_s if fl.deadline_s is not None else math.inf
                task = Task(cid, version, version, deadline)
                self.start_task(task, task_proc(task))

        dispatch(min(fl.clients_per_round, n))
        while version < fl.rounds:
            if not inbox:
                yield wake[0]
            wake[0] = env.event()
            arrived, inbox[:] = list(inbox), []
            for task, out in arrived:
                clients[task.client].busy = False
                busy[task.client] = False
                if isinstance(out, Failure):
                    failures.append(out)
                else:
                    buffer.append((task, out))
            while len(buffer) >= fl.buffer_size and version < fl.rounds:
                batch, buffer = buffer[: fl.buffer_size], buffer[fl.buffer_size:]
                results = []
                for task, res in batch:
                    s = version - res.base_round
                    if fl.max_staleness is not None and s > fl.max_staleness:
                        self._trace("stale_discarded", round=version, client=res.client,
                                    detail=f"staleness {s}")
                        failures.append(Failure(res.client, "stale", "update", float(task.upload_bits)))
                    else:
                        results.append(ClientResult(res.client, res.update, res.n_samples,
                                                    res.base_round, s))
                fails, failures = failures, []
                metrics = yield from self.interpreter.server_round(version, results, fails)
                self.end_round(version, len(results), len(fails), metrics,
                               sum(int(r.n_samples) for r in results))
                version += 1
                sim._acct = RoundAccount(env.now)
                sim.forget_history()
                if version < fl.rounds:
                    self._trace("round_start", round=version)
            if version < fl.rounds:
                dispatch(len(arrived))


def make_driver(sim) -> Driver:
    """The driver ``fl.driver`` (and ``fl.hierarchical``) of ``sim``'s scenario names."""
    fl = sim.scenario.fl
    if fl.driver != "sync":
        return AsyncDriver(sim)
    return HierarchicalDriver(sim) if fl.hierarchical else SyncDriver(sim)

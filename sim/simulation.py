"""The simulation: one SimPy environment, named random streams, entities, round drivers.

Build one from a validated :class:`~sim.scenario.Scenario` and run it::

    from sim import Simulation, load_scenario
    sim = Simulation(load_scenario("scenarios/quickstart.yaml", ["fl.rounds=3"]))
    result = sim.run()            # RunResult: rounds (DataFrame), tracer, summary (dict)

Tests and notebooks may inject a link model (``link=TableLink(...)``) or an algorithm
instance (``algorithm=...``) instead of the ones the scenario describes.

The round drivers interpret the :mod:`fl.core.actions` a client's round yields:

- ``Receive``: wired path aggregator → the client's site, then the downlink radio transfer.
- ``Compute``: ``flops / effective FLOP/s`` of the device (jittered); then ``work()``.
- ``Send``: at the start of the transfer ``sizer(capacity_bits)`` with ``capacity_bits =
  predicted rate (current channel state, current MAC share) × time budget`` (the budget:
  ``fl.capacity_budget_s`` when the scenario sets it, else the ``Send``'s own ``budget_s``,
  else the time left to the deadline, else 1 s); the uplink radio
  transfer; the wired path to the aggregator; only then ``work(plan)``. With
  ``execution.backend`` ``process`` or ``ray``, a ``Send`` with a ``job`` is submitted to a
  worker right after the sizer and its result is taken when the upload completes
  (:mod:`sim.execution`); the outputs are the same.
- ``ServerCompute``: on the server: ``sequential`` service queues jobs (FIFO, one at a
  time at the full FLOP/s); ``parallel`` service shares the FLOP/s equally among the jobs
  in service (processor sharing, exact completion times; a lone job takes ``flops /
  server FLOP/s``).

A failure (deadline, outage timeout, drop-out, stale) closes the generator and reaches
``Algorithm.aggregate`` as a :class:`~fl.core.actions.Failure`.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import simpy

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, ServerCompute
from fl.core.algorithm import Algorithm, AlgorithmContext, get_algorithm
from fl.core.statefile import StateFileError, read_state_file, read_state_head, write_state_file
from sim.backhaul import Backhaul, WiredNet, site_node
from sim.compute import ComputeModel, DeviceProfile, ProcessorSharing
from sim.execution import Executor, JobBatcher, make_executor, torch_threads
from sim.links import DOWN, UP, LinkModel
from sim.network import Network
from sim.rng import RngStreams
from sim.resources import memory_problems
from sim.scenario import Scenario, ScenarioError
from sim.selection import SelectionContext, make_selection
from sim.trace import Tracer

__all__ = ["Simulation", "RunResult", "Client", "Cell", "Server", "ROUND_COLUMNS"]

CHECKPOINT_KIND = "simulation-checkpoint"
# what summary.json reports of an evaluation: accuracy with its 95 % Wilson interval, loss, n
_REPORTED = ("accuracy", "accuracy_lo", "accuracy_hi", "loss", "n_eval")

ROUND_COLUMNS: tuple[str, ...] = (
    "round", "t_start_s", "t_end_s", "n_selected", "n_completed", "n_failed",
    "samples_delivered", "bits_up", "bits_down", "energy_j", "accuracy", "loss",
)


def dbm_to_w(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


@dataclass
class Cell:
    """A base station (or sector): its site and its uplink/downlink bands.

    The bandwidth pools and the MAC scheduler state live in :class:`sim.network.Network`
    (``network.pool_flows(cell, direction)`` lists the active flows).
    """

    id: int
    site: int
    uplink_bandwidth_hz: float
    downlink_bandwidth_hz: float
    mac: str


@dataclass
class Client:
    """A UE: group (mobility), device profile, radio power, data shard, energy account."""

    id: int
    group: str
    device: DeviceProfile
    tx_power_dbm: float
    shard: int
    energy_j: float = 0.0
    last_selected: int = -1
    busy: bool = False

    @property
    def tx_power_w(self) -> float:
        return dbm_to_w(self.tx_power_dbm)


@dataclass
class Server:
    """The aggregator: backhaul node, FLOP/s, sequential (queued) or parallel service
    (processor sharing)."""

    node: str
    flops_per_s: float
    service: str
    resource: simpy.Resource | None = None
    ps: ProcessorSharing | None = None


@dataclass
class _Acct:
    """Per-round (sync) or per-aggregation (async) accumulator."""

    t_start: float
    n_selected: int = 0
    bits_up: float = 0.0
    bits_down: float = 0.0
    energy_j: float = 0.0
    in_row: bool = False  # already written as a row of rounds.csv


class _TaskFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Task:
    """State of one client's part in one round (what a failure reports)."""

    client: int
    rnd: int
    base_version: int
    deadline_abs: float
    edge: str | None = None
    stage: str = "start"
    bits_delivered: float = 0.0
    flow: Any = None
    proc: Any = None
    upload_bits: int = 0
    compute_t0: float | None = None  # simulated start of the computation under way, if any
    compute_flops_per_s: float = 0.0  # its pace: a cut computation counts the share it did


@dataclass
class RunResult:
    """What a run produced: one row per round, the trace, and the summary."""

    rounds: Any  # pandas.DataFrame with ROUND_COLUMNS first
    tracer: Tracer
    summary: dict
    trajectories: dict = field(default_factory=dict)
    #: (round, :class:`fl.core.metrics.PromptResults`) of every evaluation that scored test
    #: prompts, in order (round -1: the untrained model); empty for the surrogate
    prompt_results: list = field(default_factory=list)


class Simulation:
    """One simulated experiment (see the module docstring).

    Args:
        scenario: a validated scenario.
        algorithm: an algorithm instance to use instead of ``fl.core.algorithm``/``fl.options``.
        link: a link model to use instead of the radio models of ``network``.
        cell_site: site of each cell when ``link`` is given (default: cell i at site i).
        run_dir: where the algorithm may write artefacts.
        trace: record events (``False`` for benchmarks of the bare kernel).
        checkpoint: sync driver: write this checkpoint file at every round boundary
            (see :meth:`resume`).
    """

    def __init__(self, scenario: Scenario, *, algorithm: Algorithm | None = None,
                 link: LinkModel | None = None, cell_site=None, run_dir: str | None = None,
                 trace: bool = True, checkpoint: str | Path | None = None) -> None:
        self.scenario = scn = scenario
        problems = memory_problems(scn)  # before anything is allocated
        if problems:
            raise ScenarioError(problems)
        self.env = simpy.Environment()
        self.rng = RngStreams(scn.seed)
        self.tracer = Tracer(enabled=trace)
        n = scn.clients.n_clients
        self.radio = None
        if link is None:
            from sim.radio import build_radio

            self.radio = build_radio(scn, self.rng)
            link = self.radio.link
            cell_site = self.radio.cell_site
        if link.n_clients != n:
            raise ValueError(f"The link model has {link.n_clients} clients; the scenario "
                             f"clients.n_clients is {n}.")
        self.link = link
        cell_site = (np.arange(link.n_cells) if cell_site is None
                     else np.asarray(cell_site, dtype=np.int64))
        net = scn.network
        self.cells = [Cell(c, int(cell_site[c]), net.uplink_bandwidth_hz,
                           net.downlink_bandwidth_hz, net.mac.kind) for c in range(link.n_cells)]
        self.network = Network(self.env, link, net.uplink_bandwidth_hz, net.downlink_bandwidth_hz,
                               net.mac.kind, net.mac.options, self.tracer, net.outage_timeout_s)
        self.backhaul = _build_backhaul(scn, int(cell_site.max()) + 1)
        self.wired = WiredNet(self.env, scn.backhaul.sharing)
        self._cell_node = [site_node(c.site) for c in self.cells]  # backhaul node of each cell
        profiles = [DeviceProfile(d.name, d.flops_per_s, d.power_w, d.rx_power_w, d.spread_sigma,
                                  d.jitter_sigma, d.weight) for d in scn.clients.devices]
        self.compute = ComputeModel(profiles, n, self.rng.get("devices"),
                                    self.rng.get("compute_jitter"))
        groups = scn.clients.group_names()
        tx = {g.name: (g.tx_power_dbm if g.tx_power_dbm is not None else scn.clients.tx_power_dbm)
              for g in scn.clients.groups}
        self.clients = [Client(i, groups[i], self.compute.profile(i), tx[groups[i]], shard=i)
                        for i in range(n)]
        self._last_selected = np.full(n, -1, dtype=np.int64)  # = [c.last_selected], kept in step
        self.server = _build_server(scn, self.backhaul, self.env)
        self.algorithm = algorithm if algorithm is not None else _make_algorithm(scn, run_dir)
        self.selection = make_selection(scn.fl.selection.kind, scn.fl.selection.options)
        self.rows: list[dict] = []
        self._acct = _Acct(0.0)
        self._hist = {"up_bits": [], "down_bits": [], "flops": []}
        self.progress: Callable[[int, int, dict], None] | None = None
        self.n_results = 0
        self.n_failures = 0
        self._live: dict[int, _Task] = {}  # client tasks under way (what duration_s cuts)
        self.initial: dict[str, float] = {}  # the untrained model's metrics (evaluate(-1))
        self.prompt_results: list = []  # (round, PromptResults) of every evaluation
        self.client_flops = 0.0  # FLOPs the clients computed (a cut computation: its share)
        self.server_flops = 0.0  # FLOPs of the server's completed jobs
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.stop_after_rounds: int | None = None  # test hook: stop the sync driver early
        self._start_round = 0  # > 0 once resumed from a checkpoint
        self._executor: Executor | None = None  # workers for Send jobs (from the first job on)
        self._batcher: JobBatcher | None = None  # inline, clients batched (execution.batch_clients)

    # ------------------------------------------------------------------ running
    def run(self, progress: Callable[[int, int, dict], None] | None = None) -> RunResult:
        """Run the scenario to its end (all rounds, or ``duration_s``); ``progress(rounds
        done, rounds, the round's row)`` after every round."""
        self.progress = progress
        wall0 = time.perf_counter()
        try:
            if self._start_round == 0:  # a resumed run has it (checkpoint)
                # the untrained model's metrics at t = 0: the baseline every curve starts from
                self.initial = {k: float(v) for k, v in dict(self.algorithm.evaluate(-1)).items()}
                self._take_prompt_results(-1)
                if self.initial:
                    self._trace("evaluate", round=-1,
                                detail=", ".join(f"{k}={v:.6g}" for k, v in self.initial.items()))
            driver = (self._sync_driver(self._start_round) if self.scenario.fl.driver == "sync"
                      else self._async_driver())
            proc = self.env.process(driver)
            until = proc if self.scenario.duration_s is None else self.env.any_of(
                [proc, _timeout_at(self.env, self.scenario.duration_s)])
            self.env.run(until=until)
            if not proc.triggered:  # stopped at duration_s with work under way
                self._cut_at_duration()
            self.network.check_accounting()
        finally:  # also on error: no worker outlives the run
            self.close()
        wall = time.perf_counter() - wall0
        return RunResult(self.rounds_frame(), self.tracer, self._summary(wall),
                         self._trajectories(), list(self.prompt_results))

    def close(self) -> None:
        """Stop the workers (if any were started) and release the algorithm's resources."""
        executor, self._executor = self._executor, None
        try:
            if executor is not None:
                executor.close()
        finally:
            self.algorithm.close()

    def rounds_frame(self):
        """rounds.csv as a DataFrame: the documented columns, then algorithm extras."""
        import pandas as pd

        extras: list[str] = []
        for row in self.rows:
            for k in row:
                if k not in ROUND_COLUMNS and k not in extras:
                    extras.append(k)
        df = pd.DataFrame(self.rows, columns=list(ROUND_COLUMNS) + extras)
        for c in ("round", "n_selected", "n_completed", "n_failed"):
            df[c] = df[c].astype("int64")
        return df

    # ------------------------------------------------------------------ helpers
    def _trace(self, event: str, **kw) -> None:
        self.tracer.record(self.env.now, event, **kw)

    def _site_of(self, client: int) -> str:
        return self._cell_node[self.network.serving_cell(client)]

    def _aggregator_for(self, task: _Task) -> str:
        return task.edge if task.edge is not None else self.server.node

    def _forget_history(self) -> None:
        """Let the mobility models drop trajectory history before the previous chunk of
        fading blocks (memory of long runs; the channel asks about the current chunk, the
        next, and — for a transferring client's association — the one before)."""
        if self.radio is not None:
            from channel._sos import CHUNK_BLOCKS

            link = self.radio.link
            j = link.block_index(self.env.now) // CHUNK_BLOCKS
            self.radio.forget_before(link.channel.block_start_s(max(j - 1, 0) * CHUNK_BLOCKS))

    def _budget_s(self, task: _Task, action: Send) -> float:
        for b in (self.scenario.fl.capacity_budget_s, action.budget_s):
            if b is not None:
                return b
        if math.isfinite(task.deadline_abs):
            return max(task.deadline_abs - self.env.now, 0.0)
        return 1.0

    # ------------------------------------------------------------------ a client's round
    def _client_task(self, task: _Task):
        """Process: interpret one client's action generator; return ClientResult or Failure."""
        cid = task.client
        client = self.clients[cid]
        gen = self.algorithm.client_round(task.rnd, cid)
        value = None
        self.network.hold(cid)  # a participant: its channel is evaluated with each chunk's batch
        self._live[id(task)] = task
        try:
            while True:
                try:
                    action = gen.send(value)
                except StopIteration as stop:
                    update = stop.value
                    break
                task.stage = action.label
                if isinstance(action, Receive):
                    value = yield from self._receive(task, client, action)
                elif isinstance(action, Compute):
                    value = yield from self._compute(task, client, action)
                elif isinstance(action, Send):
                    value = yield from self._send(task, client, action)
                elif isinstance(action, ServerCompute):
                    value = yield from self._server_compute(task.rnd, action, cid)
                else:
                    raise TypeError(f"Algorithm {self.algorithm.name!r} yielded {action!r}; "
                                    "expected Receive, Compute, Send or ServerCompute.")
        except (simpy.Interrupt, _TaskFailed) as exc:
            reason = exc.cause if isinstance(exc, simpy.Interrupt) else exc.reason
            if task.flow is not None and task.flow.ok is None:
                self.network.cancel(task.flow, reason)
                self._account_flow(task.flow, client)
                task.bits_delivered = task.flow.sent
            gen.close()
            self.network.release(cid)
            self._trace("client_failed", round=task.rnd, client=cid,
                        bits_delivered=task.bits_delivered, detail=f"{reason}:{task.stage}")
            self.n_failures += 1
            return Failure(cid, str(reason), task.stage, float(task.bits_delivered))
        finally:
            self._live.pop(id(task), None)
        self.network.release(cid)
        self._trace("client_done", round=task.rnd, client=cid)
        self.n_results += 1
        return ClientResult(cid, update, self.algorithm.n_samples(cid), task.base_version)

    def _account_flow(self, flow, client: Client) -> None:
        client.energy_j += flow.energy_j
        self._acct.energy_j += flow.energy_j
        if flow.direction == UP:
            self._acct.bits_up += flow.sent
        else:
            self._acct.bits_down += flow.sent

    def _radio(self, task: _Task, client: Client, direction: str, bits: int,
               capacity_bits=None, k=None):
        power = client.tx_power_w if direction == UP else client.device.rx_power_w
        flow = self.network.start(client.id, direction, bits, power, task.rnd, task.stage,
                                  capacity_bits, k)
        task.flow = flow
        task.bits_delivered = 0.0
        if flow.ok is None:
            yield flow.done
        task.flow = None
        task.bits_delivered = flow.sent
        self._account_flow(flow, client)
        if not flow.ok:
            raise _TaskFailed(flow.reason or "failed")
        return flow

    def _wired(self, task: _Task, src: str, dst: str, bits: int, direction: str, cid: int):
        msg = self.wired.send(self.backhaul.path(src, dst), bits)
        if msg.done is not None:
            try:
                yield msg.done
            except simpy.Interrupt:
                self.wired.cancel(msg)  # the others on its links speed up
                raise
        if self.tracer.enabled:
            self._trace("wired_end", round=task.rnd, client=cid, direction=direction, bits=bits,
                        detail=f"{src}->{dst}")

    def _receive(self, task: _Task, client: Client, action: Receive):
        bits = int(action.payload.bits)
        self._hist["down_bits"].append(bits)
        if task.edge is not None:
            yield self._edge_ready(task.rnd, task.edge, bits)
        yield from self._wired(task, self._aggregator_for(task), self._site_of(client.id), bits,
                               DOWN, client.id)
        yield from self._radio(task, client, DOWN, bits)
        return action.payload

    def _compute(self, task: _Task, client: Client, action: Compute):
        self._hist["flops"].append(action.flops)
        dt = self.compute.duration_s(client.id, action.flops)
        self._trace("compute_start", round=task.rnd, client=client.id, detail=action.label)
        task.compute_t0 = self.env.now
        task.compute_flops_per_s = action.flops / dt if dt > 0 else 0.0
        try:
            yield self.env.timeout(dt)
        except simpy.Interrupt as exc:
            self._cut_compute(task, client, f"{action.label}: {exc.cause}")
            raise
        finally:
            task.compute_t0 = None
        self.client_flops += action.flops
        e = self.compute.energy_j(client.id, dt)
        client.energy_j += e
        self._acct.energy_j += e
        self._trace("compute_end", round=task.rnd, client=client.id, energy_j=e,
                    detail=action.label)
        return action.work() if action.work is not None else None

    def _cut_compute(self, task: _Task, client: Client, detail: str) -> None:
        """Account (and trace) the energy of a computation cut short now."""
        e = self.compute.energy_j(client.id, self.env.now - task.compute_t0)  # spent so far
        self.client_flops += task.compute_flops_per_s * (self.env.now - task.compute_t0)
        client.energy_j += e
        self._acct.energy_j += e
        self._trace("compute_cut", round=task.rnd, client=client.id, energy_j=e, detail=detail)

    def _cut_at_duration(self) -> None:
        """The run stops at ``duration_s``: what is under way is accounted as of now — an
        upload's delivered bits and the rest as lost (``send_failed``, reason
        ``duration_end``), a computation's energy so far (``compute_cut``)."""
        for task in sorted(self._live.values(), key=lambda t: (t.rnd, t.client)):
            client = self.clients[task.client]
            if task.flow is not None and task.flow.ok is None:
                self.network.cancel(task.flow, "duration_end")
                self._account_flow(task.flow, client)
                task.bits_delivered = task.flow.sent
            if task.compute_t0 is not None:
                self._cut_compute(task, client, "duration_end")
                task.compute_t0 = None

    def _send(self, task: _Task, client: Client, action: Send):
        rate = self.network.predict_rate(client.id, UP)
        capacity = rate * self._budget_s(task, action)
        plan = action.sizer(capacity)
        self._hist["up_bits"].append(plan.bits)
        pending = self._submit(action, plan)  # trains now, in real time, if workers exist
        try:
            flow = yield from self._radio(task, client, UP, plan.bits, capacity, plan.k)
            site = self._cell_node[flow.cell]
            yield from self._wired(task, site, self._aggregator_for(task), plan.bits, UP, client.id)
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

    def _submit(self, action: Send, plan):
        """Hand ``action.job`` to a worker (starting them at the first job), or None when
        the work runs inline at completion (backend inline, or no job)."""
        ex = self.scenario.execution
        if action.job is None:
            return None
        if ex.backend == "inline":
            if not ex.batch_clients:
                return None
            if self._batcher is None:
                self._batcher = JobBatcher(self.algorithm, ex.threads)
            return self._batcher.submit(action.job, plan)
        if self._executor is None:
            self._executor = make_executor(ex.backend, self.algorithm.replica(), ex.workers,
                                           ex.threads)
        return self._executor.submit(action.job, plan)

    def _server_compute(self, rnd: int, action: ServerCompute, cid: int | None = None):
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
            self.server_flops += action.flops
        finally:
            if req is not None:
                srv.resource.release(req)
        return action.work() if action.work is not None else None

    def _server_round(self, rnd: int, results, failures):
        """Process part: aggregation cost, then the algorithm's server_round generator."""
        agg_flops = self.scenario.server.aggregation_flops_per_update * len(results)
        if agg_flops > 0:
            yield from self._server_compute(rnd, ServerCompute(agg_flops, label="aggregate"))
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
            value = yield from self._server_compute(rnd, action)
        self._trace("aggregate", round=rnd, bits=int(sum(_bits(r.update) for r in results)))
        return dict(metrics)

    # ------------------------------------------------------------------ selection
    def _select(self, rnd: int, candidates: np.ndarray, k: int) -> np.ndarray:
        deadline = self.scenario.fl.deadline_s
        ctx = SelectionContext(
            round=rnd, candidates=candidates, k=k, rng=self.rng.get("selection"),
            deadline_s=deadline,
            last_selected=self._last_selected.copy(),
            predicted_rate_bps=lambda ids: self._predicted_rate(ids, UP, len(candidates), k),
            predicted_time_s=lambda ids: self._predicted_time(ids, len(candidates), k),
        )
        return np.asarray(self.selection.select(ctx), dtype=np.int64)

    def _predicted_rate(self, ids, direction, n_cand, k) -> np.ndarray:
        """Full-band rate now / expected concurrent flows in the client's cell."""
        ids = np.asarray(ids, dtype=np.int64)
        full = self.network.full_rate_bps(ids, direction)
        cells = self.link.serving[ids]
        per_cell = np.bincount(cells, minlength=self.link.n_cells)[cells]
        concurrent = np.maximum(1.0, per_cell * k / max(n_cand, 1))
        return full / concurrent

    def _estimate(self, key: str, hint: str) -> float:
        h = self._hist[key]
        if h:
            return float(np.mean(h[-1000:]))
        hints = getattr(self.algorithm, "size_hints", None)
        return float(hints().get(hint, 0.0)) if callable(hints) else 0.0

    def _predicted_time(self, ids, n_cand, k) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        up = self._estimate("up_bits", "upload_bits")
        down = self._estimate("down_bits", "download_bits")
        flops = self._estimate("flops", "flops")
        with np.errstate(divide="ignore"):
            t = (down / self._predicted_rate(ids, DOWN, n_cand, k)
                 + flops / self.compute.flops_per_s_of[ids]
                 + up / self._predicted_rate(ids, UP, n_cand, k))
        return np.nan_to_num(t + self._predicted_wired(ids, n_cand, k, up, down), nan=math.inf)

    def _predicted_wired(self, ids, n_cand, k, up_bits: float, down_bits: float) -> np.ndarray:
        """Wired time of each client's upload (site → server) and download (server → site):
        latency + bits / its path's bottleneck share. With ``backhaul.sharing: fair`` a hop is
        expected to carry as many flows as the clients in ``ids`` whose path crosses it, times
        k / n_cand (those of them selected; at least one), like the radio's per-cell share."""
        share = k / max(n_cand, 1) if self.scenario.backhaul.sharing == "fair" else 0.0
        out = np.zeros(len(ids))
        for bits, route in ((up_bits, lambda site: (site, self.server.node)),
                            (down_bits, lambda site: (self.server.node, site))):
            paths = [self.backhaul.path(*route(self._site_of(int(c)))) for c in ids]
            load: dict = {}
            for path in paths:
                for hop, _ in path.finite_hops:
                    load[hop] = load.get(hop, 0) + 1
            for i, path in enumerate(paths):
                if len(path.nodes) < 2:
                    continue
                rate = min((cap / max(1.0, load[hop] * share) for hop, cap in path.finite_hops), default=math.inf)
                out[i] += path.latency_s + bits / rate
        return out

    # ------------------------------------------------------------------ drivers
    def _start_task(self, task: _Task, deadline_interrupt: bool) -> Any:
        proc = self.env.process(self._client_task(task))
        task.proc = proc
        p = self.scenario.clients.dropout_prob
        if p > 0:
            rng = self.rng.get("dropout")
            window = self.scenario.clients.dropout_window_s or self.scenario.fl.deadline_s or 60.0
            if rng.random() < p:
                ev = self.env.timeout(rng.random() * window, value=task)
                ev.callbacks.append(self._on_dropout)
        if deadline_interrupt and math.isfinite(task.deadline_abs):
            ev = self.env.timeout(task.deadline_abs - self.env.now, value=(task, "deadline"))
            ev.callbacks.append(self._on_interrupt)
        return proc

    def _on_dropout(self, ev) -> None:
        task = ev._value
        if task.proc.is_alive:
            self._trace("dropout", round=task.rnd, client=task.client, detail=task.stage)
            task.proc.interrupt("dropout")

    def _on_interrupt(self, ev) -> None:
        task, cause = ev._value
        if task.proc.is_alive:
            task.proc.interrupt(cause)

    def _round_row(self, rnd: int, n_completed: int, n_failed: int, metrics: dict,
                   evaluated: dict | None, samples_delivered: int = 0) -> None:
        """Append the round's row; ``samples_delivered``: the sample counts of the clients
        whose updates the round aggregated (0 when it did not aggregate) — the x axis of
        the surrogate's learning curve (``fedwave calibrate``)."""
        a = self._acct
        row = {"round": rnd, "t_start_s": a.t_start, "t_end_s": self.env.now,
               "n_selected": a.n_selected, "n_completed": n_completed, "n_failed": n_failed,
               "samples_delivered": float(samples_delivered), "bits_up": a.bits_up,
               "bits_down": a.bits_down, "energy_j": a.energy_j,
               "accuracy": math.nan, "loss": math.nan}
        row.update({k: float(v) for k, v in metrics.items()})
        if evaluated:
            for k, v in evaluated.items():
                row[k] = float(v)
        self.rows.append(row)
        a.in_row = True
        if self.progress is not None:
            self.progress(len(self.rows), self.scenario.fl.rounds, row)

    def _evaluate(self, rnd: int, last: bool) -> dict | None:
        if (rnd + 1) % self.scenario.fl.eval_every and not last:
            return None
        ev = dict(self.algorithm.evaluate(rnd))
        self._take_prompt_results(rnd)
        self._trace("evaluate", round=rnd, detail=", ".join(f"{k}={v:.6g}" for k, v in ev.items()))
        return ev

    def _take_prompt_results(self, rnd: int) -> None:
        """Keep how the evaluation just made scored each test prompt (eval.parquet)."""
        results = self.algorithm.take_prompt_results()
        if results is not None:
            self.prompt_results.append((rnd, results))

    def _sync_driver(self, start_round: int = 0):
        fl = self.scenario.fl
        env = self.env
        n = len(self.clients)
        all_ids = np.arange(n, dtype=np.int64)
        for rnd in range(start_round, fl.rounds):
            self._acct = _Acct(env.now)
            self._forget_history()
            self._trace("round_start", round=rnd)
            selected = self._select(rnd, all_ids, fl.clients_per_round)
            self._acct.n_selected = len(selected)
            deadline_abs = env.now + fl.deadline_s if fl.deadline_s is not None else math.inf
            self._edge_dl: dict = {}
            tasks = []
            self.network.refresh(selected)  # their serving cells, now (one batched evaluation)
            for cid in selected.tolist():
                self.clients[cid].last_selected = rnd
                self._last_selected[cid] = rnd
                self._trace("selected", round=rnd, client=cid,
                            cell=int(self.link.serving[cid]))
                edge = None
                if fl.hierarchical:
                    edge = self.backhaul.nearest(self._site_of(cid), "edge")
                task = _Task(cid, rnd, rnd, deadline_abs, edge)
                tasks.append(task)
            procs = [self._start_task(t, deadline_interrupt=False) for t in tasks]
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
            if fl.hierarchical and results:
                yield from self._edge_forward(rnd, tasks, results)
            metrics: dict = {}
            samples = 0
            if len(results) >= fl.min_updates:
                metrics = yield from self._server_round(rnd, results, failures)
                samples = sum(int(r.n_samples) for r in results)
            else:
                self._trace("round_failed", round=rnd,
                            detail=f"{len(results)} updates < min_updates {fl.min_updates}")
            evaluated = self._evaluate(rnd, rnd == fl.rounds - 1)
            self._trace("round_end", round=rnd)
            self._round_row(rnd, len(results), len(failures), metrics, evaluated, samples)
            if self.checkpoint is not None:
                self.write_checkpoint(rnd + 1)
            if self.stop_after_rounds is not None and rnd + 1 >= self.stop_after_rounds:
                return

    # ------------------------------------------------------------------ checkpoint / resume
    def _quiescent(self) -> bool:
        """Nothing in flight that a checkpoint would lose (true at almost every sync round
        boundary; not when, e.g., a hierarchical cloud → edge copy outlived its round)."""
        res = self.server.resource
        return (self.network.n_active == 0 and self.wired.n_in_flight == 0
                and (self.server.ps is None or self.server.ps.n_jobs == 0)
                and (res is None or (res.count == 0 and not res.queue)))

    def write_checkpoint(self, next_round: int) -> bool:
        """Write ``self.checkpoint`` atomically (temp file + ``os.replace``): everything
        needed to continue exactly from round ``next_round`` at the current simulated time.

        Returns False (and keeps the previous checkpoint) when something is still in flight.

        The file is a :mod:`fl.core.statefile` archive (JSON, npy, safetensors; reading it runs
        no code from it). The SimPy environment and its event queue are not written: at a
        round boundary the queue holds only wake-ups that no longer do anything (ended tasks'
        timers, stale pool wake-ups): no transfer is planned. Mobility is evaluated lazily
        from its (written) state and the channel is a function of the seed (its caches are
        not written), so nothing else is scheduled ahead.
        """
        if not self._quiescent():
            return False
        self.wired.forget_stale_timers()  # cancelled/arrived messages' timers: no-ops, not state
        skip = {"env", "scenario", "algorithm", "progress", "checkpoint", "stop_after_rounds",
                "_start_round", "_edge_dl", "_executor", "_live", "_batcher"}
        head = {"scenario": self.scenario.model_dump(mode="json"), "next_round": next_round,
                "now": self.env.now}
        body = {"sim": {k: v for k, v in self.__dict__.items() if k not in skip},
                "algorithm": self.algorithm.state_dict(), "global_rng": _global_rng_state()}
        env = self.env

        def external(obj):
            if obj is env:
                return "env"
            if type(obj) is simpy.Resource:  # idle at a round boundary: rebuilt empty
                return ("resource", obj.capacity)
            return None

        write_state_file(self.checkpoint, CHECKPOINT_KIND, head, body, external)
        return True

    @classmethod
    def resume(cls, scenario: Scenario, checkpoint: str | Path, *,
               algorithm: Algorithm | None = None, run_dir: str | None = None,
               keep_checkpointing: bool = True) -> "Simulation":
        """A simulation restored from ``checkpoint``, ready to :meth:`run` the remaining
        rounds; the outputs equal those of an uninterrupted run.

        ``scenario`` must equal the checkpoint's (a ``ValueError`` names the first differing
        key), except for ``execution.backend`` and ``execution.workers``, which never change
        the results. The algorithm is built from the scenario (or ``algorithm`` is used) and gets
        the checkpoint's :meth:`~fl.core.algorithm.Algorithm.state_dict`.
        """
        if scenario.fl.driver != "sync":
            raise ValueError("Resume supports the sync driver only (fl.driver: sync); this "
                             f"scenario has fl.driver: {scenario.fl.driver!r}. Fix: run it "
                             "again from the start.")
        path = Path(checkpoint)
        head = read_state_head(path, CHECKPOINT_KIND)
        diff = _first_difference(_numerics(head.get("scenario")),
                                 _numerics(scenario.model_dump(mode="json")))
        if diff is not None:
            key, old, new = diff
            raise ValueError(f"The scenario does not match the checkpoint {path}: {key} is "
                             f"{old!r} in the checkpoint and {new!r} in the scenario given. "
                             "Fix: resume with the same scenario file and --set overrides.")
        env = simpy.Environment(initial_time=float(head["now"]))

        def resolve(key):
            if key == "env":
                return env
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "resource":
                return simpy.Resource(env, capacity=int(key[1]))
            raise StateFileError(f"unknown external object {key!r}")

        _, body = read_state_file(path, CHECKPOINT_KIND, resolve)
        sim = cls.__new__(cls)
        sim.__dict__.update(body["sim"])
        sim.env = env
        sim.scenario = scenario
        sim.progress = None
        sim._edge_dl = {}
        sim._live = {}  # nothing is under way at a round boundary
        sim._executor = None  # workers are not checkpointed: started again at the first job
        sim._batcher = None  # empty at a round boundary
        sim.checkpoint = path if keep_checkpointing else None
        sim.stop_after_rounds = None
        sim._start_round = head["next_round"]
        sim.algorithm = algorithm if algorithm is not None else _make_algorithm(scenario, run_dir)
        sim.algorithm.load_state_dict(body["algorithm"])
        _set_global_rng_state(body["global_rng"])
        return sim

    def _edge_ready(self, rnd: int, edge: str, bits: int) -> simpy.Event:
        """Hierarchical: the cloud sends the global model once per round to each edge
        server, when its first client asks for it; later clients wait for the same copy."""
        key = (rnd, edge)
        ev = self._edge_dl.get(key)
        if ev is None:
            ev = self._edge_dl[key] = self.env.event()
            msg = self.wired.send(self.backhaul.path(self.server.node, edge), bits)
            done = msg.done if msg.done is not None else self.env.timeout(0.0)
            done.callbacks.append(lambda _t, ev=ev, edge=edge, rnd=rnd:
                                  self._on_edge_ready(ev, edge, rnd))
        return ev

    def _on_edge_ready(self, ev, edge: str, rnd: int) -> None:
        self._trace("edge_sync", round=rnd, direction=DOWN, detail=edge)
        ev.succeed()

    def _edge_forward(self, rnd: int, tasks: list[_Task], results: list[ClientResult]):
        """Hierarchical: each edge forwards one partial aggregate to the cloud."""
        by_client = {t.client: t for t in tasks}
        per_edge: dict[str, int] = {}
        for r in results:
            t = by_client[r.client]
            per_edge[t.edge] = max(per_edge.get(t.edge, 0), t.upload_bits)
        evs = []
        for edge in sorted(per_edge):
            msg = self.wired.send(self.backhaul.path(edge, self.server.node), per_edge[edge])
            evs.append(msg.done if msg.done is not None else self.env.timeout(0.0))
        if evs:
            yield self.env.all_of(evs)
        for edge in sorted(per_edge):
            self._trace("edge_sync", round=rnd, direction=UP, bits=per_edge[edge], detail=edge)

    def _async_driver(self):
        fl = self.scenario.fl
        env = self.env
        n = len(self.clients)
        version = 0
        inbox: list[tuple[_Task, Any]] = []
        wake = [env.event()]
        buffer: list[tuple[_Task, ClientResult]] = []
        failures: list[Failure] = []
        self._acct = _Acct(env.now)
        self._trace("round_start", round=0)
        busy = np.zeros(n, dtype=bool)  # the clients' busy flags, as an array

        def task_proc(task: _Task):
            out = yield from self._client_task(task)
            inbox.append((task, out))
            if not wake[0].triggered:
                wake[0].succeed()

        def dispatch(k: int) -> None:
            idle = np.flatnonzero(~busy)  # = [c.id for c in clients if not c.busy]
            if len(idle) == 0 or k <= 0:
                return
            chosen = self._select(version, idle, k)
            self.network.refresh(chosen)  # their serving cells, now (one batched evaluation)
            for cid in chosen.tolist():
                c = self.clients[cid]
                c.busy = True
                busy[cid] = True
                c.last_selected = version
                self._last_selected[cid] = version
                self._acct.n_selected += 1
                self._trace("selected", round=version, client=cid, cell=int(self.link.serving[cid]))
                deadline = env.now + fl.deadline_s if fl.deadline_s is not None else math.inf
                task = _Task(cid, version, version, deadline)
                task.proc = None
                proc = env.process(task_proc(task))
                task.proc = proc
                self._schedule_async_interrupts(task)

        dispatch(min(fl.clients_per_round, n))
        while version < fl.rounds:
            if not inbox:
                yield wake[0]
            wake[0] = env.event()
            arrived, inbox[:] = list(inbox), []
            for task, out in arrived:
                self.clients[task.client].busy = False
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
                metrics = yield from self._server_round(version, results, fails)
                evaluated = self._evaluate(version, version == fl.rounds - 1)
                self._trace("round_end", round=version)
                self._round_row(version, len(results), len(fails), metrics, evaluated,
                                sum(int(r.n_samples) for r in results))
                version += 1
                self._acct = _Acct(env.now)
                self._forget_history()
                if version < fl.rounds:
                    self._trace("round_start", round=version)
            if version < fl.rounds:
                dispatch(len(arrived))

    def _schedule_async_interrupts(self, task: _Task) -> None:
        p = self.scenario.clients.dropout_prob
        if p > 0:
            rng = self.rng.get("dropout")
            window = self.scenario.clients.dropout_window_s or self.scenario.fl.deadline_s or 60.0
            if rng.random() < p:
                ev = self.env.timeout(rng.random() * window, value=task)
                ev.callbacks.append(self._on_dropout)
        if math.isfinite(task.deadline_abs):
            ev = self.env.timeout(task.deadline_abs - self.env.now, value=(task, "deadline"))
            ev.callbacks.append(self._on_interrupt)

    # ------------------------------------------------------------------ outputs
    def _summary(self, wall_s: float) -> dict:
        df_rows = self.rows
        # a run stopped at duration_s mid-round: that round's bits and energy have no row
        rest = self._acct if not self._acct.in_row else _Acct(0.0)
        last_acc = next((r["accuracy"] for r in reversed(df_rows)
                         if not math.isnan(r["accuracy"])), None)
        last_loss = next((r["loss"] for r in reversed(df_rows)
                          if not math.isnan(r["loss"])), None)
        last_eval = next((r for r in reversed(df_rows) if not math.isnan(r["accuracy"])), {})
        surrogate = bool(getattr(self.algorithm, "is_surrogate", False))
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "algorithm": self.algorithm.name,
            "learner": "surrogate" if surrogate else "real",
            "note": ("SURROGATE learner: accuracy/loss come from a fitted curve of delivered "
                     "updates, not from training.") if surrogate else "",
            "driver": self.scenario.fl.driver,
            "wall_time_s": wall_s,
            "simulated_time_s": float(self.env.now),
            "n_rounds": len(df_rows),
            "n_clients": len(self.clients),
            "n_cells": self.link.n_cells,
            "totals": {
                "bits_up": float(sum(r["bits_up"] for r in df_rows) + rest.bits_up),
                "bits_down": float(sum(r["bits_down"] for r in df_rows) + rest.bits_down),
                "energy_j": float(sum(r["energy_j"] for r in df_rows) + rest.energy_j),
                "updates_delivered": int(self.n_results),
                "failures": int(self.n_failures),
                "bits_offered": float(self.network.bits_offered),
                "bits_over_the_air": float(self.network.bits_delivered),
                "bits_lost": float(self.network.bits_lost),
                "client_flops": float(self.client_flops),
                "server_flops": float(self.server_flops),
                "events": len(self.tracer),
            },
            # static facts of the learner: client_storage_bytes (what a client holds), sizes
            "algorithm_info": dict(self.algorithm.info()),
            # this process's prefix cache: memory (MiB) and hit rate (absent without one)
            "prefix_cache": dict(getattr(self.algorithm, "prefix_report", dict)()),
            "initial": {k: self.initial.get(k) for k in _REPORTED},
            "final": {"accuracy": last_acc, "loss": last_loss,
                      **{k: last_eval.get(k) for k in _REPORTED if k not in ("accuracy", "loss")}},
        }

    def _trajectories(self, n_max: int = 20, n_t: int = 120) -> dict:
        """Sampled positions of up to ``n_max`` clients over the run (for the cell map)."""
        if self.radio is None:
            return {}
        t = np.linspace(0.0, max(float(self.env.now), 1e-9), n_t)
        n = len(self.clients)
        ids = np.unique(np.linspace(0, n - 1, min(n_max, n)).astype(np.int64))  # all groups
        # the run dropped old history (_forget_history): replay it (seed-determined)
        xy = self.radio.replay_positions_m(t, ids)  # (n_t, m, 2)
        groups = np.asarray(self.scenario.clients.group_names(), dtype=str)[ids]
        return {"t_s": t, "clients": ids, "xy_m": xy, "layout": self.radio.layout,
                "groups": groups, "n_clients": n, "roads": _roads(self.scenario)}


def _roads(scn: Scenario) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """(group, start (x, y) m, end (x, y) m) of every distinct road segment a group drives
    along (``mobility: {kind: constant_velocity}``), for the cell map."""
    out = []
    for g in scn.clients.groups:
        mob = g.mobility
        if mob.kind != "constant_velocity":
            continue
        starts = np.asarray(mob.start_xy_m, dtype=float).reshape(-1, 2)
        ends = np.asarray(mob.end_xy_m, dtype=float).reshape(-1, 2)
        starts, ends = np.broadcast_arrays(starts, ends)
        seen = set()
        for a, b in zip(starts, ends):
            key = (*a, *b)
            if key not in seen:
                seen.add(key)
                out.append((g.name, (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))))
    return out


def _bits(update: Any) -> int:
    b = getattr(update, "bits", 0)
    try:
        return int(b)
    except (TypeError, ValueError):
        return 0


def _make_algorithm(scn: Scenario, run_dir: str | None) -> Algorithm:
    cls = get_algorithm(scn.fl.algorithm)
    return cls(scn.fl.options,  # already the algorithm's validated config
               AlgorithmContext(n_clients=scn.clients.n_clients, seed=scn.seed, run_dir=run_dir,
                                rounds=scn.fl.rounds, runtime=scn.execution.runtime()))


def _timeout_at(env: simpy.Environment, t_s: float) -> simpy.Event:
    """A timeout at exactly ``t_s`` (SimPy adds the delay to ``now``: pick the delay whose
    sum is ``t_s`` to the last bit)."""
    delay = max(t_s - env.now, 0.0)
    for _ in range(8):
        got = env.now + delay
        if got == t_s or delay == 0.0:
            break
        delay = math.nextafter(delay, math.inf if got < t_s else -math.inf)
    return env.timeout(delay)


def _global_rng_state() -> dict:
    """Process-wide generators that libraries may draw from (torch dropout, numpy legacy)."""
    state = {"random": random.getstate(), "numpy": np.random.get_state()}
    if "torch" in sys.modules:
        state["torch"] = sys.modules["torch"].get_rng_state()
    return state


def _set_global_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])


def _numerics(scenario: dict) -> dict:
    """A dumped scenario without what never changes the results: where client updates run
    (``execution.backend``, ``execution.workers``; threads, device, dtype and the prefix
    cache stay), so a run resumes on any backend; the ``outputs`` section (how plots are
    drawn); and an empty ``fl.algorithm_options``."""
    execution = {k: v for k, v in (scenario.get("execution") or {}).items()
                 if k not in ("backend", "workers", "prefix_cache_mb")}
    out = {k: v for k, v in scenario.items() if k != "outputs"}
    out["execution"] = execution
    fl = scenario.get("fl")
    if isinstance(fl, dict) and not fl.get("algorithm_options"):
        # an empty fl.algorithm_options is no block at all (runs written before it existed)
        out["fl"] = {k: v for k, v in fl.items() if k != "algorithm_options"}
    # the FLOP/s of devices and server were called ``flops`` before 0.2
    clients = out.get("clients")
    if isinstance(clients, dict) and isinstance(clients.get("devices"), list):
        out["clients"] = {**clients, "devices": [_rate_key(d) for d in clients["devices"]]}
    if isinstance(out.get("server"), dict):
        out["server"] = _rate_key(out["server"])
    return out


def _rate_key(spec):
    """A device or server mapping with ``flops`` (its name before 0.2) as ``flops_per_s``."""
    if isinstance(spec, dict) and "flops" in spec and "flops_per_s" not in spec:
        return {("flops_per_s" if k == "flops" else k): v for k, v in spec.items()}
    return spec


def _first_difference(a, b, key: str = ""):
    """(key path, a's value, b's value) of the first difference of two JSON-like trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{key}.{i}")
            if d is not None:
                return d
        return None
    return None if a == b else (key or "(top level)", a, b)


def _build_backhaul(scn: Scenario, n_sites: int) -> Backhaul:
    import networkx as nx

    bh = scn.backhaul
    if bh.preset == "star":
        return Backhaul.star(n_sites, bh.site_edge_capacity_bps, bh.site_edge_latency_s,
                             bh.edge_cloud_capacity_bps, bh.edge_cloud_latency_s)
    g = nx.Graph()
    for s in range(n_sites):
        g.add_node(site_node(s), kind="site")
    for node in bh.nodes:
        g.add_node(node.name, kind=node.kind)
    for e in bh.edges:
        g.add_edge(e.a, e.b, capacity_bps=e.capacity_bps, latency_s=e.latency_s)
    return Backhaul(g)


def _build_server(scn: Scenario, backhaul: Backhaul, env: simpy.Environment) -> Server:
    s = scn.server
    node = s.node or backhaul.nodes_of_kind(s.placement)[0]
    if s.service == "sequential":
        return Server(node, s.flops_per_s, s.service, simpy.Resource(env, capacity=1))
    return Server(node, s.flops_per_s, s.service, ps=ProcessorSharing(env, s.flops_per_s))

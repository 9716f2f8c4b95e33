"""The simulation: one SimPy environment, named random streams, the tracer and the entities.

Build one from a validated :class:`~sim.scenario.Scenario` and run it::

    from sim import Simulation, load_scenario
    sim = Simulation(load_scenario("scenarios/quickstart.yaml", ["fl.rounds=3"]))
    result = sim.run()            # RunResult: rounds (DataFrame), tracer, summary (dict)

Tests and notebooks may inject a link model (``link=TableLink(...)``) or an algorithm
instance (``algorithm=...``) instead of the ones the scenario describes.

The kernel is split by idea:

- :mod:`sim.simulation` (this module): :class:`Simulation` — state, run, summary;
- :mod:`sim.entities`: :class:`Cell`, :class:`Client`, :class:`Server` and their builders;
- :mod:`sim.interpreter`: what each :mod:`fl.core.actions` action does in simulated time;
- :mod:`sim.drivers`: the sync, hierarchical and async round drivers;
- :mod:`sim.prediction`: the rate and time predictions client selection sees;
- :mod:`sim.checkpoint`: writing a sync run at a round boundary and resuming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import simpy

from fl.core.algorithm import Algorithm
from sim import checkpoint as _checkpoint
from sim.backhaul import WiredNet, site_node
from sim.checkpoint import CHECKPOINT_KIND
from sim.checkpoint import first_difference as _first_difference  # noqa: F401  (old home)
from sim.checkpoint import numerics as _numerics  # noqa: F401  (old home)
from sim.compute import ComputeModel, DeviceProfile
from sim.drivers import make_driver
from sim.entities import (Cell, Client, Server, build_backhaul, build_server, make_algorithm,
                          road_segments)
from sim.execution import Executor, JobBatcher
from sim.interpreter import RoundAccount, Task
from sim.links import LinkModel
from sim.network import Network
from sim.rng import RngStreams
from sim.resources import memory_problems
from sim.scenario import Scenario, ScenarioError
from sim.selection import make_selection
from sim.trace import Tracer

__all__ = ["Simulation", "RunResult", "Client", "Cell", "Server", "ROUND_COLUMNS"]

_make_algorithm = make_algorithm  # its old name (tests, notebooks)
# what summary.json reports of an evaluation: accuracy with its 95 % Wilson interval, loss, n
_REPORTED = ("accuracy", "accuracy_lo", "accuracy_hi", "loss", "n_eval")

ROUND_COLUMNS: tuple[str, ...] = (
    "round", "t_start_s", "t_end_s", "n_selected", "n_completed", "n_failed",
    "samples_delivered", "bits_up", "bits_down", "energy_j", "accuracy", "loss",
)


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
        self.backhaul = build_backhaul(scn, int(cell_site.max()) + 1)
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
        self.server = build_server(scn, self.backhaul, self.env)
        self.algorithm = algorithm if algorithm is not None else make_algorithm(scn, run_dir)
        self.selection = make_selection(scn.fl.selection.kind, scn.fl.selection.options)
        self.rows: list[dict] = []
        self._acct = RoundAccount(0.0)
        self._hist = {"up_bits": [], "down_bits": [], "flops": []}
        self.progress: Callable[[int, int, dict], None] | None = None
        self.n_results = 0
        self.n_failures = 0
        self._live: dict[int, Task] = {}  # client tasks under way (what duration_s cuts)
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
            driver = make_driver(self)
            proc = self.env.process(driver.run(self._start_round))
            until = proc if self.scenario.duration_s is None else self.env.any_of(
                [proc, _timeout_at(self.env, self.scenario.duration_s)])
            self.env.run(until=until)
            if not proc.triggered:  # stopped at duration_s with work under way
                driver.interpreter.cut_at_duration()
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

    def site_of(self, client: int) -> str:
        """The backhaul node of the site serving ``client`` now."""
        return self._cell_node[self.network.serving_cell(client)]

    def forget_history(self) -> None:
        """Let the mobility models drop trajectory history before the previous chunk of
        fading blocks (memory of long runs; the channel asks about the current chunk, the
        next, and — for a transferring client's association — the one before)."""
        if self.radio is not None:
            from channel._sos import CHUNK_BLOCKS

            link = self.radio.link
            j = link.block_index(self.env.now) // CHUNK_BLOCKS
            self.radio.forget_before(link.channel.block_start_s(max(j - 1, 0) * CHUNK_BLOCKS))

    def _take_prompt_results(self, rnd: int) -> None:
        """Keep how the evaluation just made scored each test prompt (eval.parquet)."""
        results = self.algorithm.take_prompt_results()
        if results is not None:
            self.prompt_results.append((rnd, results))

    # ------------------------------------------------------------------ checkpoint / resume
    def write_checkpoint(self, next_round: int) -> bool:
        """Write ``self.checkpoint`` atomically: everything needed to continue exactly from
        round ``next_round`` at the current simulated time; False (the previous checkpoint
        kept) when something is still in flight (:func:`sim.checkpoint.write_checkpoint`)."""
        return _checkpoint.write_checkpoint(self, next_round)

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
        return _checkpoint.resume(cls, scenario, checkpoint, algorithm=algorithm, run_dir=run_dir,
                                  keep_checkpointing=keep_checkpointing)

    # ------------------------------------------------------------------ outputs
    def _summary(self, wall_s: float) -> dict:
        df_rows = self.rows
        # a run stopped at duration_s mid-round: that round's bits and energy have no row
        rest = self._acct if not self._acct.in_row else RoundAccount(0.0)
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
        # the run dropped old history (forget_history): replay it (seed-determined)
        xy = self.radio.replay_positions_m(t, ids)  # (n_t, m, 2)
        groups = np.asarray(self.scenario.clients.group_names(), dtype=str)[ids]
        return {"t_s": t, "clients": ids, "xy_m": xy, "layout": self.radio.layout,
                "groups": groups, "n_clients": n, "roads": road_segments(self.scenario)}



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


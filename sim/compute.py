"""Device compute: time = FLOPs / effective FLOP/s; energy = power × time. Server compute:
:class:`ProcessorSharing` (parallel service).

Each client gets a device profile (drawn by the profiles' weights from the ``devices``
stream) and a static speed factor (log-normal, ``spread_sigma``; heterogeneity between
devices of one kind). Each computation may be jittered by a mean-one log-normal factor
(``jitter_sigma``) drawn from the ``compute_jitter`` stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.core import URGENT

__all__ = ["DeviceProfile", "ComputeModel", "ProcessorSharing"]


@dataclass(frozen=True)
class DeviceProfile:
    """A kind of device.

    flops_per_s: sustained FLOP/s for training; power_w: power while computing (W);
    rx_power_w: radio power while receiving (W); spread_sigma: log-normal sigma of the
    per-device speed factor; jitter_sigma: log-normal sigma of the per-computation factor.
    """

    name: str
    flops_per_s: float
    power_w: float
    rx_power_w: float = 0.0
    spread_sigma: float = 0.0
    jitter_sigma: float = 0.0
    weight: float = 1.0

    _state_renames = {"flops": "flops_per_s"}  # checkpoints written before 0.2 (fl.core.statefile)


class ComputeModel:
    """Compute time and energy of every client (vectorised assignment, scalar queries).

    Args:
        profiles: the device kinds.
        n_clients: population size.
        rng_assign: stream for the profile assignment and static speed factors.
        rng_jitter: stream for per-computation jitter.
    """

    def __init__(self, profiles: list[DeviceProfile], n_clients: int,
                 rng_assign: np.random.Generator, rng_jitter: np.random.Generator) -> None:
        self.profiles = profiles
        w = np.array([p.weight for p in profiles], dtype=np.float64)
        self.profile_of = rng_assign.choice(len(profiles), size=n_clients, p=w / w.sum())
        sig = np.array([p.spread_sigma for p in profiles])[self.profile_of]
        z = rng_assign.standard_normal(n_clients)
        self.flops_per_s_of = (np.array([p.flops_per_s for p in profiles])[self.profile_of]
                         * np.exp(sig * z - 0.5 * sig**2))  # (n_clients,) FLOP/s
        self._jitter = rng_jitter

    _state_renames = {"flops_of": "flops_per_s_of"}  # checkpoints written before 0.2

    def profile(self, client: int) -> DeviceProfile:
        return self.profiles[self.profile_of[client]]

    def duration_s(self, client: int, flops: float) -> float:
        """Simulated time (s) for ``flops`` on ``client``'s device."""
        if flops <= 0:
            return 0.0
        t = flops / self.flops_per_s_of[client]
        sigma = self.profiles[self.profile_of[client]].jitter_sigma
        if sigma > 0:
            t *= math.exp(sigma * self._jitter.standard_normal() - 0.5 * sigma * sigma)
        return float(t)

    def energy_j(self, client: int, duration_s: float) -> float:
        """Compute energy (J) of ``duration_s`` of computation on ``client``."""
        return self.profiles[self.profile_of[client]].power_w * duration_s


class ProcessorSharing:
    """A server whose FLOP/s are shared equally by the jobs in service (egalitarian
    processor sharing): with n jobs each progresses at ``flops_per_s / n``.

    Rates change only when a job arrives or leaves, so each completion time is exact: one
    pending wake-up at the earliest ``t + remaining / rate`` (a generation counter voids
    wake-ups made stale by a later arrival). A job of ``flops`` alone takes ``flops / flops_per_s``.

    Args:
        env: the simulation's environment.
        flops_per_s: server FLOP/s (> 0).
    """

    def __init__(self, env: simpy.Environment, flops_per_s: float) -> None:
        if not flops_per_s > 0:
            raise ValueError(f"The 'flops_per_s' parameter of ProcessorSharing must be > 0. "
                             f"Got {flops_per_s!r} instead.")
        self.env = env
        self.flops_per_s = float(flops_per_s)
        self._jobs: dict[int, list] = {}  # id -> [remaining FLOPs, done event]; start order
        self._next_id = 0
        self._gen = 0
        self._t_last = 0.0
        self.flops_served = 0.0  # FLOPs of completed jobs plus the served part of cancelled ones

    _state_renames = {"flops": "flops_per_s"}  # checkpoints written before 0.2

    @property
    def n_jobs(self) -> int:
        return len(self._jobs)

    def submit(self, flops: float) -> simpy.Event:
        """Start a job of ``flops`` now; the returned event succeeds when it completes (its
        value: the job id, for :meth:`cancel`)."""
        self._settle()
        jid = self._next_id
        self._next_id += 1
        done = self.env.event()
        done.job_id = jid  # for cancel()
        self._jobs[jid] = [float(flops), done]
        self.flops_served += float(flops)
        self._replan()
        return done

    def cancel(self, done: simpy.Event) -> None:
        """Abandon the job of ``done`` (its client was interrupted); the others speed up."""
        job = self._jobs.get(getattr(done, "job_id", -1))
        if job is None or job[1] is not done:
            return
        self._settle()
        self.flops_served -= job[0]  # counted in full at submit
        del self._jobs[done.job_id]
        self._replan()

    def _settle(self) -> None:
        now = self.env.now
        dt = now - self._t_last
        if dt > 0 and self._jobs:
            served = self.flops_per_s / len(self._jobs) * dt
            for job in self._jobs.values():
                job[0] -= served
        self._t_last = now

    def _replan(self) -> None:
        self._gen += 1
        if not self._jobs:
            return
        best = min(j[0] for j in self._jobs.values())
        ev = self.env.timeout(max(best, 0.0) / (self.flops_per_s / len(self._jobs)), value=self._gen)
        ev.callbacks.append(self._on_wake)

    def _on_wake(self, ev) -> None:
        if ev._value != self._gen:
            return
        self._settle()
        rate = self.flops_per_s / len(self._jobs)
        done = [jid for jid, (rem, _) in self._jobs.items() if rem <= 1e-9 * rate + 1e-9]
        for jid in done:  # start order: deterministic
            _, event = self._jobs.pop(jid)
            # urgent: the waiting process resumes right after this wake-up, as it would
            # after a plain timeout (same-time order as an uncontended service)
            event._ok = True
            event._value = jid
            self.env.schedule(event, URGENT)
        self._replan()

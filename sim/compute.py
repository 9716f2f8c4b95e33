"""Device compute: time = FLOPs / effective FLOP/s; energy = power × time.

Each client gets a device profile (drawn by the profiles' weights from the ``devices``
stream) and a static speed factor (log-normal, ``spread_sigma``; heterogeneity between
devices of one kind). Each computation may be jittered by a mean-one log-normal factor
(``jitter_sigma``) drawn from the ``compute_jitter`` stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DeviceProfile", "ComputeModel"]


@dataclass(frozen=True)
class DeviceProfile:
    """A kind of device.

    flops: sustained FLOP/s for training; power_w: power while computing (W);
    rx_power_w: radio power while receiving (W); spread_sigma: log-normal sigma of the
    per-device speed factor; jitter_sigma: log-normal sigma of the per-computation factor.
    """

    name: str
    flops: float
    power_w: float
    rx_power_w: float = 0.0
    spread_sigma: float = 0.0
    jitter_sigma: float = 0.0
    weight: float = 1.0


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
        self.flops_of = (np.array([p.flops for p in profiles])[self.profile_of]
                         * np.exp(sig * z - 0.5 * sig**2))  # (n_clients,) FLOP/s
        self._jitter = rng_jitter

    def profile(self, client: int) -> DeviceProfile:
        return self.profiles[self.profile_of[client]]

    def duration_s(self, client: int, flops: float) -> float:
        """Simulated time (s) for ``flops`` on ``client``'s device."""
        if flops <= 0:
            return 0.0
        t = flops / self.flops_of[client]
        sigma = self.profiles[self.profile_of[client]].jitter_sigma
        if sigma > 0:
            t *= math.exp(sigma * self._jitter.standard_normal() - 0.5 * sigma * sigma)
        return float(t)

    def energy_j(self, client: int, duration_s: float) -> float:
        """Compute energy (J) of ``duration_s`` of computation on ``client``."""
        return self.profiles[self.profile_of[client]].power_w * duration_s

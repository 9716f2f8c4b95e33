"""MAC sharing policies: how a cell's band is shared by its active flows.

A policy is a small class with a frozen pydantic ``Config``, registered in :data:`MAC` under
the name YAML uses (``network.mac.kind``). The network calls :meth:`MacPolicy.shares` at every change
point of a cell (a flow starts or ends, a fading block begins, a handover) with the
*full-band* rate each flow's link would have alone; the policy returns, per flow, the
fraction of the band it gets (FDMA) and the fraction of the time it transmits (TDMA). The
flow's rate is then ``time_frac · rate(bandwidth = bw_frac · B)``, evaluated by the link
model (so uplink FDMA gains from concentrating the UE's power on a narrower band).

A fluid model: between change points, each flow's rate is constant; time-sharing policies
(round robin, proportional fair, max rate) are represented by their long-run time shares
within the interval, which is exact for the bits delivered at the interval's end and the
standard abstraction for scheduling periods much shorter than a fading block.

Flows that are in outage (full-band rate 0) get no resources.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fl.core.registry import Registry

__all__ = ["MacPolicy", "MAC", "MAC_POLICIES", "make_mac", "EqualShare", "RoundRobin",
           "ProportionalFair", "MaxRate", "mac_names"]


class MacConfig(BaseModel):
    """Base of every policy's options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MacPolicy(ABC):
    """Protocol of a MAC sharing policy (one instance per cell and direction)."""

    name: ClassVar[str]
    Config: ClassVar[type[MacConfig]] = MacConfig

    def __init__(self, config: MacConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def shares(self, keys: Sequence[int], full_rate_bps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band and time shares of the active flows; must not change the policy's state.

        Args:
            keys: flow ids, in flow start order (length n).
            full_rate_bps: (n,) float64 rate of each flow if it had the whole band all the time.

        Returns:
            ``(bw_frac, time_frac)``: two (n,) float64 arrays in [0, 1]; sums of
            ``bw_frac · time_frac`` never exceed 1.
        """

    # Hooks for policies that keep state (proportional fair: averaged throughputs); the
    # defaults do nothing. The network calls on_flow_start (which costs it a rate evaluation)
    # and observe (at every fading block) only for classes that override them, so stateless
    # policies pay nothing per event; forget is a no-op call per ended flow.

    #: True when the class overrides :meth:`on_flow_start` (set for each subclass).
    wants_flow_start: ClassVar[bool] = False
    #: True when the class overrides :meth:`observe` (set for each subclass).
    wants_observe: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.wants_flow_start = cls.on_flow_start is not MacPolicy.on_flow_start
        cls.wants_observe = cls.observe is not MacPolicy.observe

    def on_flow_start(self, key: int, full_rate_bps: float) -> None:
        """Flow ``key`` started; ``full_rate_bps``: its rate with the whole band, now."""

    def observe(self, keys: Sequence[int], achieved_bps: np.ndarray, dt_s: float) -> None:
        """The flows achieved ``achieved_bps`` during the last ``dt_s`` seconds (state update)."""

    def forget(self, key: int) -> None:
        """Flow ``key`` ended (or left the cell at a handover); drop its state."""


class EqualShare(MacPolicy):
    """FDMA: each of the n served flows gets 1/n of the band, all the time."""

    name = "equal_share"

    def shares(self, keys, full_rate_bps):
        live = full_rate_bps > 0
        n = int(live.sum())
        bw = np.where(live, 1.0 / max(n, 1), 0.0)
        return bw, live.astype(np.float64)


class RoundRobin(MacPolicy):
    """TDMA round robin: each of the n served flows gets the whole band 1/n of the time."""

    name = "round_robin"

    def shares(self, keys, full_rate_bps):
        live = full_rate_bps > 0
        n = int(live.sum())
        return live.astype(np.float64), np.where(live, 1.0 / max(n, 1), 0.0)


class ProportionalFairConfig(MacConfig):
    time_constant_s: float = Field(
        1.0, gt=0, description="Averaging time constant of the throughput averages, s.")


class ProportionalFair(MacPolicy):
    """Proportional fair (time domain): time shares ∝ r_inst / r_avg.

    State: an exponentially averaged throughput per flow, initialised to the flow's first
    instantaneous rate and updated at every change point with weight
    ``1 − exp(−Δt / time_constant_s)``. With constant rates it converges to equal time
    shares; with fading it favours each flow's peaks (multi-user diversity).
    """

    name = "proportional_fair"
    Config = ProportionalFairConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._avg: dict[int, float] = {}

    def shares(self, keys, full_rate_bps):
        avg = np.array([self._avg.get(k, r) for k, r in zip(keys, full_rate_bps)], dtype=np.float64)
        w = np.where(full_rate_bps > 0, full_rate_bps / np.maximum(avg, 1e-9), 0.0)
        total = w.sum()
        time = w / total if total > 0 else w
        return (full_rate_bps > 0).astype(np.float64), time

    def observe(self, keys, achieved_bps, dt_s):
        a = -math.expm1(-dt_s / self.config.time_constant_s)
        for k, r in zip(keys, achieved_bps):
            old = self._avg.get(k)
            self._avg[k] = float(r) if old is None else (1.0 - a) * old + a * float(r)

    def on_flow_start(self, key, full_rate_bps):
        """Initialise a new flow's average to its first instantaneous rate."""
        self._avg.setdefault(key, float(full_rate_bps))

    def forget(self, key):
        self._avg.pop(key, None)


class MaxRate(MacPolicy):
    """Max rate: the flow with the highest full-band rate gets everything (ties: earliest)."""

    name = "max_rate"

    def shares(self, keys, full_rate_bps):
        bw = np.zeros(len(keys))
        time = np.zeros(len(keys))
        if len(keys) and full_rate_bps.max() > 0:
            i = int(np.argmax(full_rate_bps))
            bw[i] = time[i] = 1.0
        return bw, time


#: MAC policies by the name YAML uses: config class and policy class.
MAC: Registry[type[MacPolicy]] = Registry("MAC policy", "Mac")
for _cls in (EqualShare, RoundRobin, ProportionalFair, MaxRate):
    MAC.register(_cls.name, _cls.Config, _cls)
MAC_POLICIES: dict[str, type[MacPolicy]] = {name: MAC.get(name) for name in MAC.names()}


def mac_names() -> list[str]:
    """Registered MAC policy names, sorted."""
    return MAC.names()


def make_mac(kind: str, options: dict | None = None) -> MacPolicy:
    """A new policy instance of ``kind`` with ``options`` validated by its Config."""
    cls = MAC.get(kind)
    return cls(MAC.config(kind)(**(options or {})))

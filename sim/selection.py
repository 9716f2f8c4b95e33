"""Client selection policies: which clients take part in a round.

A policy is a small class with a frozen pydantic ``Config``, registered in :data:`SELECTION`
under the name YAML uses (``fl.selection.kind``). :meth:`SelectionPolicy.select` receives a
:class:`SelectionContext` (candidates, K, the ``selection`` random stream, predictions
computed from the current channel state) and returns the chosen client ids, sorted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fl.core.registry import Registry

__all__ = ["SelectionContext", "SelectionPolicy", "SELECTION", "SELECTION_POLICIES", "make_selection",
           "selection_names"]


@dataclass
class SelectionContext:
    """What a selection policy may look at.

    round: round index (sync) or global version (async).
    candidates: (m,) int64 available client ids, ascending.
    k: how many to select (clients_per_round, or 1 for an async refill).
    rng: the ``selection`` stream.
    deadline_s: the round's time budget (None if no deadline).
    last_selected: (n_clients,) int64 last round each client was selected, −1 if never.
    predicted_rate_bps: ids -> (m,) predicted uplink rate now (channel state, MAC share).
    predicted_time_s: ids -> (m,) predicted round time (download + compute + upload + wired).
    """

    round: int
    candidates: np.ndarray
    k: int
    rng: np.random.Generator
    deadline_s: float | None
    last_selected: np.ndarray
    predicted_rate_bps: Callable[[np.ndarray], np.ndarray]
    predicted_time_s: Callable[[np.ndarray], np.ndarray]


class SelectionConfig(BaseModel):
    """Base of every policy's options (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SelectionPolicy(ABC):
    """Protocol of a selection policy."""

    name: ClassVar[str]
    Config: ClassVar[type[SelectionConfig]] = SelectionConfig

    def __init__(self, config: SelectionConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def select(self, ctx: SelectionContext) -> np.ndarray:
        """Chosen ids, ascending, a subset of ``ctx.candidates`` of size <= ``ctx.k``
        (``all`` returns every candidate)."""


class SelectAll(SelectionPolicy):
    """Every available client."""

    name = "all"

    def select(self, ctx):
        return ctx.candidates.copy()


class SelectRandom(SelectionPolicy):
    """K clients uniformly at random without replacement."""

    name = "random"

    def select(self, ctx):
        k = min(ctx.k, len(ctx.candidates))
        return np.sort(ctx.rng.choice(ctx.candidates, size=k, replace=False))


class SelectBestRate(SelectionPolicy):
    """The K clients with the best predicted uplink rate (ties: lower id)."""

    name = "best_rate"

    def select(self, ctx):
        rate = ctx.predicted_rate_bps(ctx.candidates)
        order = np.lexsort((ctx.candidates, -rate))
        return np.sort(ctx.candidates[order[: ctx.k]])


class DeadlineAwareConfig(SelectionConfig):
    margin: float = Field(1.0, gt=0, description=(
        "Select only clients predicted to finish within margin × deadline_s."))


class SelectDeadlineAware(SelectionPolicy):
    """Up to K clients chosen at random among those predicted to finish in time.

    Predicted time = download + compute + upload at the predicted rates + wired delay
    (payload sizes and FLOPs estimated from previous rounds; the radio share per cell and,
    with ``backhaul.sharing: fair``, each backhaul hop's share count the candidates expected
    to be selected with the client). Without a deadline every
    candidate is feasible. May select fewer than K (even none).
    """

    name = "deadline_aware"
    Config = DeadlineAwareConfig

    def select(self, ctx):
        cands = ctx.candidates
        if ctx.deadline_s is not None:
            t = ctx.predicted_time_s(cands)
            cands = cands[t <= self.config.margin * ctx.deadline_s]
        k = min(ctx.k, len(cands))
        return np.sort(ctx.rng.choice(cands, size=k, replace=False)) if k else cands[:0]


class SelectFair(SelectionPolicy):
    """Age-based: the K least recently selected clients (never selected first; ties random)."""

    name = "fair"

    def select(self, ctx):
        last = ctx.last_selected[ctx.candidates]
        tie = ctx.rng.random(len(ctx.candidates))
        order = np.lexsort((tie, last))
        return np.sort(ctx.candidates[order[: ctx.k]])


#: Selection policies by the name YAML uses: config class and policy class.
SELECTION: Registry[type[SelectionPolicy]] = Registry("selection policy", "Selection")
for _cls in (SelectAll, SelectRandom, SelectBestRate, SelectDeadlineAware, SelectFair):
    SELECTION.register(_cls.name, _cls.Config, _cls)
SELECTION_POLICIES: dict[str, type[SelectionPolicy]] = {n: SELECTION.get(n) for n in SELECTION.names()}


def selection_names() -> list[str]:
    """Registered selection policy names, sorted."""
    return SELECTION.names()


def make_selection(kind: str, options: dict | None = None) -> SelectionPolicy:
    """A policy instance of ``kind`` with ``options`` validated by its Config."""
    cls = SELECTION.get(kind)
    return cls(SELECTION.config(kind)(**(options or {})))

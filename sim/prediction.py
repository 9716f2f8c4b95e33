"""Predictions for client selection: what a client's round is expected to cost, from now.

Selection policies (:mod:`sim.selection`) see these through the
:class:`~sim.selection.SelectionContext` a driver builds with :func:`selection_context`:

- ``predicted_rate_bps(ids)``: the full-band rate of each client's link now, divided by
  the flows expected in its cell (its cell's candidates × k / n candidates, at least one).
- ``predicted_time_s(ids)``: download + compute + upload + wired time of a round, with the
  payload sizes and FLOPs seen so far (mean of the last 1,000) or, before any, the
  algorithm's ``size_hints()``.

Nothing here changes the simulation's state; :func:`selection_context` is called once per
selection.
"""

from __future__ import annotations

import math

import numpy as np

from sim.links import DOWN, UP
from sim.selection import SelectionContext

__all__ = ["selection_context", "predicted_rate", "predicted_time", "predicted_wired", "estimate"]


def selection_context(sim, rnd: int, candidates: np.ndarray, k: int) -> SelectionContext:
    """What a selection policy is given to choose ``k`` of ``candidates`` (int64 ids) in
    round ``rnd`` (its random stream: the simulation's ``selection`` stream)."""
    n_cand = len(candidates)
    return SelectionContext(
        round=rnd, candidates=candidates, k=k, rng=sim.rng.get("selection"),
        deadline_s=sim.scenario.fl.deadline_s,
        last_selected=sim._last_selected.copy(),
        predicted_rate_bps=lambda ids: predicted_rate(sim, ids, UP, n_cand, k),
        predicted_time_s=lambda ids: predicted_time(sim, ids, n_cand, k),
    )


def predicted_rate(sim, ids, direction: str, n_cand: int, k: int) -> np.ndarray:
    """(len(ids),) float64 bit/s: full-band rate now / expected concurrent flows in the
    client's cell."""
    ids = np.asarray(ids, dtype=np.int64)
    full = sim.network.full_rate_bps(ids, direction)
    cells = sim.link.serving[ids]
    per_cell = np.bincount(cells, minlength=sim.link.n_cells)[cells]
    concurrent = np.maximum(1.0, per_cell * k / max(n_cand, 1))
    return full / concurrent


def estimate(sim, key: str, hint: str) -> float:
    """Mean of the last 1,000 values of ``sim._hist[key]`` (``up_bits``, ``down_bits``,
    ``flops``), or the algorithm's ``size_hints()[hint]`` before any (0 without hints)."""
    h = sim._hist[key]
    if h:
        return float(np.mean(h[-1000:]))
    hints = getattr(sim.algorithm, "size_hints", None)
    return float(hints().get(hint, 0.0)) if callable(hints) else 0.0


def predicted_time(sim, ids, n_cand: int, k: int) -> np.ndarray:
    """(len(ids),) float64 s: predicted download + compute + upload + wired time (inf where
    a link is in outage)."""
    ids = np.asarray(ids, dtype=np.int64)
    up = estimate(sim, "up_bits", "upload_bits")
    down = estimate(sim, "down_bits", "download_bits")
    flops = estimate(sim, "flops", "flops")
    with np.errstate(divide="ignore"):
        t = (down / predicted_rate(sim, ids, DOWN, n_cand, k)
             + flops / sim.compute.flops_per_s_of[ids]
             + up / predicted_rate(sim, ids, UP, n_cand, k))
    return np.nan_to_num(t + predicted_wired(sim, ids, n_cand, k, up, down), nan=math.inf)


def predicted_wired(sim, ids, n_cand: int, k: int, up_bits: float, down_bits: float) -> np.ndarray:
    """(len(ids),) float64 s: wired time of each client's upload (site → server) and download
    (server → site): latency + bits / its path's bottleneck share. With ``backhaul.sharing:
    fair`` a hop is expected to carry as many flows as the clients in ``ids`` whose path
    crosses it, times k / n_cand (those of them selected; at least one), like the radio's
    per-cell share."""
    share = k / max(n_cand, 1) if sim.scenario.backhaul.sharing == "fair" else 0.0
    server = sim.server.node
    out = np.zeros(len(ids))
    for bits, route in ((up_bits, lambda site: (site, server)),
                        (down_bits, lambda site: (server, site))):
        paths = [sim.backhaul.path(*route(sim.site_of(int(c)))) for c in ids]
        load: dict = {}
        for path in paths:
            for hop, _ in path.finite_hops:
                load[hop] = load.get(hop, 0) + 1
        for i, path in enumerate(paths):
            if len(path.nodes) < 2:
                continue
            rate = min((cap / max(1.0, load[hop] * share) for hop, cap in path.finite_hops),
                       default=math.inf)
            out[i] += path.latency_s + bits / rate
    return out

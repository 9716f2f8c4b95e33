"""Compiled per-event arithmetic of the transfer engine (numba).

The engine (:mod:`sim.network`) re-plans a cell's pool of flows at every change point: a
few dozen numpy calls on small ``[n flows × H blocks]`` arrays, where numpy's per-call
cost (~1 µs) is most of the work. These functions do the same arithmetic in one compiled
call each, **in the same order of floating-point operations** as the numpy code they
replace, so the simulator's outputs stay bit-identical (tests/sim/test_kernels.py checks
each one against its numpy twin on random inputs; the shipped scenarios' outputs are
checked before and after).

- :func:`plan_cum` — a plan's block durations and the cumulative bits of each flow;
- :func:`next_change` — the pool's next change point: the first completion (exact first
  crossing of each flow's remaining bits), the first outage transition, or the plan's end;
- :func:`settle` — every flow's sent bits, airtime and energy at a moment of the plan;
- :func:`equal_shares`, :func:`merge_sub`, :func:`positive` — equal share's per-block rates
  and time shares (the sub-band rates of flows that share a block come from the link).

Compiled on first use and cached on disk next to this file (``cache=True``): the first run
on a machine pays ~1–3 s, later processes load the machine code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["plan_cum", "next_change", "settle", "equal_shares", "merge_sub", "positive"]


@njit(cache=True)
def plan_cum(rate, edges):
    """(dt, cum): dt (H,) the blocks' durations (the last one capped at 1e300 s so that
    rate · dt stays finite in a block that never ends); cum [n, H + 1] each flow's bits at
    the blocks' starts, relative to the plan's start (cum[:, 0] = 0)."""
    n, n_h = rate.shape
    dt = np.empty(n_h)
    for h in range(n_h):
        dt[h] = edges[h + 1] - edges[h]
    if dt[n_h - 1] > 1e300:
        dt[n_h - 1] = 1e300
    cum = np.empty((n, n_h + 1))
    for i in range(n):
        c = 0.0
        cum[i, 0] = 0.0
        for h in range(n_h):
            c = c + rate[i, h] * dt[h]
            cum[i, h + 1] = c
    return dt, cum


@njit(cache=True)
def next_change(rate, full, cum, edges, sent0, bits, now):
    """The pool's next change point from ``now`` (before handovers, which the caller adds):
    ``now`` if a flow has delivered its bits already; else the earliest of every flow's
    completion (the block where its cumulative bits first reach its remaining bits, then
    the exact moment within it), the start of the first block in which any flow enters or
    leaves outage (full-band rate 0 ↔ > 0, relative to block 0), and the plan's end."""
    n, n_h = rate.shape
    for i in range(n):
        if bits[i] - sent0[i] <= 1e-9 * bits[i] + 1e-9:
            return now
    t_next = edges[n_h]
    for i in range(n):
        rem = bits[i] - sent0[i]
        for h in range(n_h):
            if cum[i, h + 1] >= rem:
                t = edges[h] + (rem - cum[i, h]) / rate[i, h]
                if t < t_next:
                    t_next = t
                break
    for h in range(1, n_h):
        for i in range(n):
            if (full[i, h] > 0) != (full[i, 0] > 0):
                if edges[h] < t_next:
                    t_next = edges[h]
                return t_next
    return t_next


@njit(cache=True)
def settle(edges, rate, tf, dt, cum, state, now):
    """(h, out): the plan's block h that contains ``now`` (the last one at its end) and
    out (5, n) = sent bits, airtime, energy, power, bits of the flows at ``now`` from the
    plan's ``state`` (5, n) at its start (sent0, air0, energy0, power, bits)."""
    n, n_h = rate.shape
    h = np.searchsorted(edges, now, side="right") - 1
    if h < 0:
        h = 0
    if h > n_h - 1:
        h = n_h - 1
    d = now - edges[h]
    out = np.empty_like(state)
    for i in range(n):
        out[0, i] = (state[0, i] + cum[i, h]) + rate[i, h] * d
        air = tf[i, h] * d
        if h:
            a = tf[i, 0] * dt[0]
            for j in range(1, h):
                a = a + tf[i, j] * dt[j]
            air = a + air
        out[1, i] = state[1, i] + air
        out[2, i] = state[2, i] + state[3, i] * air
        out[3, i] = state[3, i]
        out[4, i] = state[4, i]
    return h, out


@njit(cache=True)
def equal_shares(full):
    """Equal share over blocks: (rate, frac, any_sub). rate [n, H]: a live flow's full-band
    rate (0 in outage) — final wherever it is the only live flow of its block; frac [n, H]:
    1 / (live flows of the block) where a live flow shares the band (a sub-band share,
    whose rate the link decides), else 1.0; any_sub: whether any entry shares."""
    n, n_h = full.shape
    rate = np.empty((n, n_h))
    frac = np.empty((n, n_h))
    any_sub = False
    for h in range(n_h):
        n_live = 0
        for i in range(n):
            if full[i, h] > 0:
                n_live += 1
        share = 1.0 / max(n_live, 1)
        for i in range(n):
            live = full[i, h] > 0
            rate[i, h] = full[i, h] if live else 0.0
            if live and n_live > 1:
                frac[i, h] = share
                any_sub = True
            else:
                frac[i, h] = 1.0
    return rate, frac, any_sub


@njit(cache=True)
def merge_sub(rate, frac, r_sub):
    """(rate, tf) of equal share: ``r_sub`` (the link's sub-band rates) where a flow shares
    its block (frac < 1), ``rate`` elsewhere; tf = 1.0 where the result is > 0, else 0.0."""
    n, n_h = rate.shape
    out = np.empty((n, n_h))
    tf = np.empty((n, n_h))
    for i in range(n):
        for h in range(n_h):
            r = r_sub[i, h] if frac[i, h] < 1.0 else rate[i, h]
            out[i, h] = r
            tf[i, h] = 1.0 if r > 0 else 0.0
    return out, tf


@njit(cache=True)
def positive(rate):
    """tf = 1.0 where ``rate`` > 0, else 0.0 (float64, same shape)."""
    n, n_h = rate.shape
    tf = np.empty((n, n_h))
    for i in range(n):
        for h in range(n_h):
            tf[i, h] = 1.0 if rate[i, h] > 0 else 0.0
    return tf

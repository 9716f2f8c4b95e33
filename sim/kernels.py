"""Per-event arithmetic of the transfer engine, compiled with numba where it is installed.

The engine (:mod:`sim.network`) re-plans a cell's pool of flows at every change point: a
few dozen numpy calls on small ``[n flows × H blocks]`` arrays, where numpy's per-call
cost (~1 µs) is most of the work. Each function here does that arithmetic in one call:

- :func:`plan_cum` — a plan's block durations and the cumulative bits of each flow;
- :func:`next_change` — the pool's next change point: the first completion (exact first
  crossing of each flow's remaining bits), the first outage transition, or the plan's end;
- :func:`settle` — every flow's sent bits, airtime and energy at a moment of the plan;
- :func:`equal_shares`, :func:`merge_sub`, :func:`positive` — equal share's per-block rates
  and time shares (the sub-band rates of flows that share a block come from the link).

Two implementations of each, **with the same floating-point operations in the same order**,
so that the simulator's outputs are bit-identical whichever runs (tests/sim/test_kernels.py
checks every pair on random inputs, ties and outages included):

- loops compiled by numba (``@njit(cache=True)``: compiled on first use and cached on disk
  next to this file — the first run on a machine pays a few seconds, later processes load
  the machine code); used when numba imports;
- their numpy twins (``*_np``: the vectorised code the engine used before), used without
  numba or with ``FEDWAVE_JIT=0`` in the environment.

:data:`JIT` says which one the engine uses (decided at the first call: :func:`load`). One re-plan's arithmetic measured 27 / 36 / 48 µs
in numpy against 1.7 / 2.3 / 3.3 µs compiled (n = 1 / 8 / 48 flows; docs/benchmarks.md).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["JIT", "load", "plan_cum", "next_change", "settle", "equal_shares", "merge_sub", "positive",
           "plan_cum_np", "next_change_np", "settle_np", "equal_shares_np", "merge_sub_np",
           "positive_np", "LOOPS"]

_OFF = os.environ.get("FEDWAVE_JIT", "1").strip().lower() in ("0", "false", "no", "off")

#: the pure-Python loops (what numba compiles), by name
LOOPS: dict = {}


def _jit(fn):
    """Register a loop; until :func:`load` runs, its name in this module is a stub that loads
    the kernels at its first call (numba is imported then, not when the engine is)."""
    LOOPS[fn.__name__] = fn

    def stub(*args):
        load()
        return globals()[fn.__name__](*args)

    stub.__name__ = stub.__qualname__ = fn.__name__
    stub.__doc__ = fn.__doc__
    return stub


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
def positive(rate):
    """tf = 1.0 where ``rate`` > 0, else 0.0 (float64, same shape)."""
    n, n_h = rate.shape
    tf = np.empty((n, n_h))
    for i in range(n):
        for h in range(n_h):
            tf[i, h] = 1.0 if rate[i, h] > 0 else 0.0
    return tf


# ----------------------------------------------------------------------------- numpy twins


def plan_cum_np(rate, edges):
    """:func:`plan_cum` in numpy."""
    n, n_h = rate.shape
    dt = edges[1:] - edges[:-1]
    dt[-1] = min(dt[-1], 1e300)
    cum = np.empty((n, n_h + 1))
    cum[:, 0] = 0.0
    np.multiply(rate, dt, out=cum[:, 1:])
    np.cumsum(cum[:, 1:], axis=1, out=cum[:, 1:])
    return dt, cum


def next_change_np(rate, full, cum, edges, sent0, bits, now):
    """:func:`next_change` in numpy."""
    n_h = rate.shape[1]
    remaining = bits - sent0
    if (remaining <= 1e-9 * bits + 1e-9).any():
        return now
    t_next = edges[n_h]
    reach = cum[:, 1:] >= remaining[:, None]  # [n, H]: done by the block's end
    if reach.any():  # first crossing: the block where the bits run out, then within it
        i = np.flatnonzero(reach.any(axis=1))
        h = np.argmax(reach[i], axis=1)
        t_done = edges[h] + (remaining[i] - cum[i, h]) / rate[i, h]
        t_next = min(t_next, float(t_done.min()))
    if n_h > 1:
        live = full > 0
        flips = live[:, 1:] != live[:, :1]
        if flips.any():
            t_next = min(t_next, float(edges[1 + int(np.argmax(flips.any(axis=0)))]))
    return t_next


def settle_np(edges, rate, tf, dt, cum, state, now):
    """:func:`settle` in numpy."""
    n_h = rate.shape[1]
    h = int(np.searchsorted(edges, now, side="right")) - 1
    h = min(max(h, 0), n_h - 1)
    d = now - edges[h]
    out = np.empty(state.shape)
    sent, airtime, energy = out[0], out[1], out[2]
    np.add(state[0], cum[:, h], out=sent)
    sent += rate[:, h] * d  # sent0 + cum_bits + rate · d
    air = tf[:, h] * d  # (block 0: no airtime before it)
    if h:
        air = np.cumsum(tf[:, :h] * dt[:h], axis=1)[:, -1] + air
    np.add(state[1], air, out=airtime)
    np.multiply(state[3], air, out=energy)
    np.add(state[2], energy, out=energy)  # energy0 + power · air
    out[3:] = state[3:]
    return h, out


def equal_shares_np(full):
    """:func:`equal_shares` in numpy."""
    live = full > 0
    n_live = np.count_nonzero(live, axis=0)  # (H,)
    rate = np.where(live, full, 0.0)
    sub = live & (n_live > 1)  # a share 1 / n_live < 1 of the band
    frac = np.where(sub, 1.0 / np.maximum(n_live, 1), 1.0)
    return rate, frac, bool(sub.any())


def merge_sub_np(rate, frac, r_sub):
    """:func:`merge_sub` in numpy."""
    out = np.where(frac < 1.0, r_sub, rate)
    return out, (out > 0).astype(np.float64)


def positive_np(rate):
    """:func:`positive` in numpy."""
    return (rate > 0).astype(np.float64)


#: whether the engine runs the compiled loops (numba) or the numpy twins; None until
#: :func:`load` (the first call of a kernel) has decided
JIT: bool | None = None


def load() -> bool:
    """Bind the kernels: numba's compilations of the loops where numba imports (and
    ``FEDWAVE_JIT`` is not 0), else the numpy twins. Returns :data:`JIT`. Called by the
    first kernel call; importing numba costs ~0.3 s, so commands that never transfer a bit
    (``fedwave validate``, ``schema``) do not pay it."""
    global JIT
    if JIT is not None:
        return JIT
    njit = None
    if not _OFF:
        try:
            from numba import njit
        except ImportError:  # a tree without numba: the numpy twins
            njit = None
    g = globals()
    for name, loop in LOOPS.items():
        g[name] = _compiled(njit, loop) if njit is not None else g[f"{name}_np"]
    JIT = njit is not None
    return JIT


def _compiled(njit, loop):
    """numba's compilation of ``loop``, cached on disk where numba finds a writable place
    (next to this file, else the user's cache directory); compiled per process where none is."""
    try:
        return njit(cache=True)(loop)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(loop)

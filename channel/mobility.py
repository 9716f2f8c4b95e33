"""Client mobility: positions queryable at any simulated time, vectorised over clients.

Every model is a :class:`Mobility`: ``positions_m(t_s)``, ``velocities_mps(t_s)``,
``speeds_mps(t_s)`` (or ``state(t_s)`` for both at once) answer for all clients at any
``t_s >= 0`` without stepping a simulator. Random models build piecewise-linear
trajectories lazily: waypoints are generated in fixed-size chunks for all clients at once,
in a fixed draw order, and cached. Hence

- the trajectory is a function of the generator's seed only — querying times in any order
  (forwards, backwards within the generated history, or jumping far ahead) gives identical
  answers;
- ``reset()`` replays the same trajectory (each model owns a child of the generator it is
  given, so the caller's generator is never rewound);
- ``forget_before(t_s)`` drops history no longer needed. Waypoints cost 24 bytes per
  client each and are kept until dropped (Gauss–Markov makes one per ``step_s``): long
  runs with many clients should call it, e.g. at every round start.

Reflection at the area's border (random direction, Gauss–Markov) is exact and costs
nothing: trajectories are generated in the unfolded plane and folded into ``bounds_m`` at
query time (a billiard reflection is the fold of a straight line), so velocities flip sign
exactly at the wall.

Models (registry :data:`MOBILITY_MODELS`): ``static``, ``random_waypoint``,
``random_direction``, ``gauss_markov``, ``constant_velocity``, ``trace``.
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from ._checks import (
    check_bounds,
    check_choice,
    check_interval,
    check_nonnegative,
    check_positive,
    check_range,
    check_xy,
    child_rng,
    make_child,
)

__all__ = [
    "Mobility",
    "Static",
    "RandomWaypoint",
    "RandomDirection",
    "GaussMarkov",
    "ConstantVelocity",
    "TraceReplay",
    "TraceFormatError",
    "read_trace_csv",
    "MOBILITY_MODELS",
    "make_mobility",
]


def _fold(x, lo, hi):
    """Fold unfolded coordinates into [lo, hi] (mirror reflection); returns (x, sign)."""
    span = hi - lo
    y = np.mod(x - lo, 2.0 * span)
    back = y > span
    return lo + np.where(back, 2.0 * span - y, y), np.where(back, -1.0, 1.0)


class Mobility(ABC):
    """Positions of ``n_ue`` clients as a function of simulated time.

    Attributes:
        n_ue: number of clients.
        bounds_m: (xmin, xmax, ymin, ymax), m — the area the clients stay in.
    """

    n_ue: int
    bounds_m: tuple[float, float, float, float]

    @abstractmethod
    def state(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions (n_ue, 2) m, velocities (n_ue, 2) m/s) at ``t_s`` (float64, new arrays)."""

    @abstractmethod
    def reset(self) -> None:
        """Return to the initial state; the same trajectory follows."""

    def state_of(self, t_s: float, ue_index) -> tuple[np.ndarray, np.ndarray]:
        """(positions (m, 2) m, velocities (m, 2) m/s) of clients ``ue_index`` ((m,) ints) at
        ``t_s`` — the rows of :meth:`state`, computed for those clients only where the model
        allows (the generated trajectories are the same whichever clients are queried)."""
        pos, vel = self.state(t_s)
        return pos[ue_index], vel[ue_index]

    def positions_m(self, t_s: float) -> np.ndarray:
        """(n_ue, 2) float64, m."""
        return self.state(t_s)[0]

    def positions_at(self, times_s, ue_index) -> np.ndarray:
        """[W, m, 2] float64 positions (m) of clients ``ue_index`` ((m,) ints) at each of
        ``times_s`` ((W,) s): row w equals ``state_of(times_s[w], ue_index)[0]``."""
        return np.stack([self.state_of(float(t), ue_index)[0] for t in np.atleast_1d(times_s)])

    def velocities_mps(self, t_s: float) -> np.ndarray:
        """(n_ue, 2) float64, m/s (right-continuous at waypoints)."""
        return self.state(t_s)[1]

    def speeds_mps(self, t_s: float) -> np.ndarray:
        """(n_ue,) float64, m/s."""
        v = self.state(t_s)[1]
        return np.hypot(v[:, 0], v[:, 1])

    def _time(self, t_s, lo: float = 0.0) -> float:
        t = float(t_s)
        if not math.isfinite(t) or t < lo:
            raise ValueError(
                f"The 't_s' parameter of {type(self).__name__} must be a finite time >= {lo:g} s "
                f"(the start of the kept trajectory). Got {t_s!r} instead."
            )
        return t


def _inside(xy, bounds, owner, name):
    x0, x1, y0, y1 = bounds
    bad = (xy[:, 0] < x0) | (xy[:, 0] > x1) | (xy[:, 1] < y0) | (xy[:, 1] > y1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"The {name!r} parameter of {owner} must lie inside bounds_m {bounds}. "
            f"Got {tuple(xy[i].tolist())} for client {i} instead."
        )


class Static(Mobility):
    """Clients that never move.

    Args:
        xy_m: (n_ue, 2), m.
        bounds_m: optional area; default the positions' bounding box (1 m margin).
    """

    def __init__(self, xy_m, bounds_m=None) -> None:
        self._xy = check_xy(xy_m, "xy_m", "Static").copy()
        self.n_ue = self._xy.shape[0]
        if bounds_m is None:
            lo, hi = self._xy.min(axis=0) - 1.0, self._xy.max(axis=0) + 1.0
            bounds_m = (lo[0], hi[0], lo[1], hi[1])
        self.bounds_m = check_bounds(bounds_m, "bounds_m", "Static")
        _inside(self._xy, self.bounds_m, "Static", "xy_m")

    def state(self, t_s):
        self._time(t_s)
        return self._xy.copy(), np.zeros_like(self._xy)

    def state_of(self, t_s, ue_index):
        self._time(t_s)
        xy = self._xy[ue_index]
        return xy, np.zeros_like(xy)

    def positions_at(self, times_s, ue_index):
        times = np.atleast_1d(np.asarray(times_s, dtype=float))
        for t in (times.min(), times.max()) if times.size else ():
            self._time(t)
        return np.broadcast_to(self._xy[ue_index], (times.size, len(self._xy[ue_index]), 2)).copy()

    def reset(self) -> None:
        pass


class _Waypoints(Mobility):
    """Piecewise-linear trajectories stored as per-client waypoint rows.

    ``_t`` (n_ue, cap) times and ``_xy`` (n_ue, cap, 2) positions (unfolded when
    ``_reflect``), ``_k`` valid columns, all rows with the same count. Subclasses implement
    ``_init_generation()`` and ``_generate()`` returning the next chunk (n_ue, L) times and
    (n_ue, L, 2) positions.
    """

    _reflect = False
    _hold_before_start = False

    def _setup(self, start_xy, bounds, rng, owner) -> None:
        self.bounds_m = check_bounds(bounds, "bounds_m", owner)
        self._start = check_xy(start_xy, "start_xy_m", owner).copy()
        _inside(self._start, self.bounds_m, owner, "start_xy_m")
        self.n_ue = self._start.shape[0]
        self._seed = child_rng(rng, owner)  # raises a clear TypeError for rng=None
        self.reset()

    # -- storage -------------------------------------------------------------------------
    def reset(self) -> None:
        self._rng = make_child(self._seed)
        n = self.n_ue
        self._t = np.zeros((n, 64))
        self._xy = np.zeros((n, 64, 2))
        self._t[:, 0] = 0.0
        self._xy[:, 0] = self._start
        self._k = 1
        self._cursor = np.zeros(n, dtype=np.int64)
        self._t_kept = 0.0
        self._t_end = -np.inf  # min over clients of the last waypoint time (generation bound)
        self._rows = np.arange(n)
        self._init_generation()

    def _append(self, t_new: np.ndarray, xy_new: np.ndarray) -> None:
        m = t_new.shape[1]
        need = self._k + m
        if need > self._t.shape[1]:
            cap = max(need, 2 * self._t.shape[1])
            t = np.empty((self.n_ue, cap))
            xy = np.empty((self.n_ue, cap, 2))
            t[:, : self._k] = self._t[:, : self._k]
            xy[:, : self._k] = self._xy[:, : self._k]
            self._t, self._xy = t, xy
        self._t[:, self._k : need] = t_new
        self._xy[:, self._k : need] = xy_new
        self._k = need

    def _extend(self, t: float) -> None:
        if t < self._t_end:  # every client's trajectory already covers t
            return
        while self._t[:, self._k - 1].min() <= t:
            k0 = self._k
            self._append(*self._generate())
            if self._t[:, self._k - 1].min() <= self._t[:, k0 - 1].min():
                raise RuntimeError(f"{type(self).__name__} generated no progress in time")  # pragma: no cover
        self._t_end = float(self._t[:, self._k - 1].min())

    def _init_generation(self) -> None:
        """Set the generation state (after reset)."""

    def _generate(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - trace has none
        raise NotImplementedError

    # -- queries -------------------------------------------------------------------------
    def _locate(self, t_row: np.ndarray, rows: np.ndarray | None = None):
        """Leg index j per client of ``rows`` (default all) with T[j] <= t < T[j+1]
        (cursor, next leg, then bisection), as ``(j, T[j], T[j+1])``; the two time arrays
        are None unless the cursors held (they were gathered to check them)."""
        T = self._t
        every = rows is None
        if every:
            rows = self._rows
        c = self._cursor if every else self._cursor[rows]
        T0, T1 = T[rows, c], T[rows, c + 1]
        ok = (T0 <= t_row) & (t_row < T1)
        if np.count_nonzero(ok) == ok.size:
            return c, T0, T1  # the cursor holds: its leg's times come along
        bad = np.flatnonzero(~ok)
        rb = rows[bad]
        c2 = np.minimum(c[bad] + 1, self._k - 2)
        ok2 = (T[rb, c2] <= t_row[bad]) & (t_row[bad] < T[rb, c2 + 1])
        c = c.copy()
        c[bad[ok2]] = c2[ok2]
        bad = bad[~ok2]
        if bad.size:
            rb = rows[bad]
            tb = t_row[bad]
            lo = np.zeros(bad.size, dtype=np.int64)
            hi = np.full(bad.size, self._k - 1, dtype=np.int64)  # T[hi] > t is guaranteed
            while True:
                active = hi - lo > 1
                if not active.any():
                    break
                mid = (lo + hi) // 2
                le = T[rb, mid] <= tb
                lo = np.where(active & le, mid, lo)
                hi = np.where(active & ~le, mid, hi)
            c[bad] = lo
        if every:
            self._cursor = c
        else:
            self._cursor[rows] = c
        return c, None, None

    def state(self, t_s):
        return self._state_rows(t_s, None)

    def state_of(self, t_s, ue_index):
        return self._state_rows(t_s, np.asarray(ue_index, dtype=np.int64))

    def positions_at(self, times_s, ue_index):
        times = np.atleast_1d(np.asarray(times_s, dtype=float))
        rows = np.asarray(ue_index, dtype=np.int64)
        if times.size == 0:
            return np.empty((0, rows.size, 2))
        self._time(times.min(), self._t_kept)
        t = self._time(times.max(), self._t_kept)
        self._extend(t)
        t_rep = np.repeat(times, rows.size)  # row-major over (time, client)
        pos, _ = self._state_rows_at(t_rep, np.tile(rows, times.size), t_rep)
        return pos.reshape(times.size, rows.size, 2)

    def _state_rows(self, t_s, rows):
        t = self._time(t_s, self._t_kept)
        self._extend(t)
        if rows is None:
            rows = self._rows
        return self._state_rows_at(t, rows, None)

    def _state_rows_at(self, t, rows, t_each):
        """(positions, velocities) of ``rows`` at time ``t`` (or at ``t_each``, one time
        per row, when given); the trajectories already cover those times."""
        if self._hold_before_start:
            t0_row = self._t[rows, 0]
            t_row = np.maximum(t, t0_row)  # before a client's first sample: hold it (traces)
        elif t_each is not None:
            t_row = t_each
        else:  # generated trajectories start at or before the kept history: max(t, T[0]) = t
            t_row = np.full(rows.size, t)
        j, T0, T1 = self._locate(t_row, None if rows is self._rows else rows)
        j1 = j + 1
        if T0 is None:
            T0, T1 = self._t[rows, j], self._t[rows, j1]
        P0, P1 = self._xy[rows, j], self._xy[rows, j1]
        dt = T1 - T0
        step = P1 - P0
        moving = np.isfinite(dt) & (dt > 0.0)
        if np.count_nonzero(moving) == moving.size:  # the np.where below would select every first branch
            vel = step / dt[:, None]
            frac = (t_row - T0) / dt
        else:
            safe = np.where(moving, dt, 1.0)
            vel = np.where(moving[:, None], step / safe[:, None], 0.0)
            frac = np.where(moving, (t_row - T0) / safe, 0.0)
        pos = P0 + step * frac[:, None]
        if self._hold_before_start:
            vel[t < t0_row] = 0.0
        if self._reflect:
            x0, x1, y0, y1 = self.bounds_m
            px, sx = _fold(pos[:, 0], x0, x1)
            py, sy = _fold(pos[:, 1], y0, y1)
            pos = np.stack([px, py], axis=1)
            vel = vel * np.stack([sx, sy], axis=1)
        return pos, vel

    def forget_before(self, t_s: float) -> None:
        """Drop waypoints only needed before ``t_s``; later queries must have t >= t_s."""
        t = self._time(t_s, self._t_kept)
        self._extend(t)
        # every row's times increase, so the columns that start at or before t for *all*
        # clients lead: their count is 1 + the smallest leg index any client is on
        covered = (self._t[:, : self._k] <= t).all(axis=0)
        drop = int(np.argmin(covered)) - 1 if not covered.all() else self._k - 2
        if drop > 0:
            k = self._k - drop
            self._t[:, :k] = self._t[:, drop : self._k]
            self._xy[:, :k] = self._xy[:, drop : self._k]
            self._k = k
            self._cursor = np.maximum(self._cursor - drop, 0)  # a hint; _locate checks it
        self._t_kept = t

    @property
    def n_waypoints(self) -> int:
        """Waypoints currently stored per client (memory: 24 bytes each)."""
        return self._k


class RandomWaypoint(_Waypoints):
    """Random waypoint: move in a straight line to a destination drawn uniformly in
    ``bounds_m`` at a speed drawn uniformly in ``speed_mps``, pause for a time drawn
    uniformly in ``pause_s``, repeat (Johnson & Maltz 1996).

    Args:
        start_xy_m: (n_ue, 2), m, inside ``bounds_m``.
        bounds_m: (xmin, xmax, ymin, ymax), m.
        speed_mps: (low, high), m/s, low > 0 (low = 0 makes the mean speed decay to 0).
        pause_s: (low, high), s, >= 0.
        rng: generator (the model owns a child of it).
    """

    _chunk = 8

    def __init__(
        self, start_xy_m, bounds_m, speed_mps=(0.5, 1.5), pause_s=(0.0, 0.0), rng: np.random.Generator | None = None
    ) -> None:
        owner = "RandomWaypoint"
        self.speed_mps = check_interval(speed_mps, "speed_mps", owner, lo=0.0, lo_open=True)
        self.pause_s = check_interval(pause_s, "pause_s", owner)
        self._setup(start_xy_m, bounds_m, rng, owner)

    def _init_generation(self):
        self._pos = self._start.copy()
        self._tc = np.zeros(self.n_ue)

    def _generate(self):
        n, L = self.n_ue, self._chunk
        x0, x1, y0, y1 = self.bounds_m
        u = self._rng.random((n, L, 2))
        dest = np.stack([x0 + u[..., 0] * (x1 - x0), y0 + u[..., 1] * (y1 - y0)], axis=-1)
        lo, hi = self.speed_mps
        speed = lo + self._rng.random((n, L)) * (hi - lo)
        plo, phi = self.pause_s
        pause = plo + self._rng.random((n, L)) * (phi - plo)
        with_pause = phi > 0.0
        m = 2 * L if with_pause else L
        t_out, xy_out = np.empty((n, m)), np.empty((n, m, 2))
        pos, tc = self._pos, self._tc
        for leg in range(L):
            d = np.hypot(*(dest[:, leg] - pos).T)
            tc = tc + d / speed[:, leg]
            i = 2 * leg if with_pause else leg
            t_out[:, i], xy_out[:, i] = tc, dest[:, leg]
            pos = dest[:, leg]
            if with_pause:
                tc = tc + pause[:, leg]
                t_out[:, i + 1], xy_out[:, i + 1] = tc, pos
        self._pos, self._tc = pos.copy(), tc
        return t_out, xy_out


class RandomDirection(_Waypoints):
    """Random direction: pick a uniform direction and a speed, travel, pause, repeat.

    ``mode="reflect"``: travel for a duration drawn in ``travel_s``, reflecting off the
    area's border like a billiard ball. ``mode="border"`` (Royer et al. 2001): travel
    until the border, pause there, then pick a new direction pointing back inside.

    Args:
        start_xy_m: (n_ue, 2), m.  bounds_m: (xmin, xmax, ymin, ymax), m.
        speed_mps: (low, high), m/s, low > 0.
        travel_s: (low, high), s, low > 0 (``reflect`` only).
        pause_s: (low, high), s.
        mode: ``"reflect"`` or ``"border"``.
        rng: generator.
    """

    _chunk = 8

    def __init__(
        self,
        start_xy_m,
        bounds_m,
        speed_mps=(0.5, 1.5),
        travel_s=(10.0, 60.0),
        pause_s=(0.0, 0.0),
        mode: str = "reflect",
        rng: np.random.Generator | None = None,
    ) -> None:
        owner = "RandomDirection"
        self.speed_mps = check_interval(speed_mps, "speed_mps", owner, lo=0.0, lo_open=True)
        self.travel_s = check_interval(travel_s, "travel_s", owner, lo=0.0, lo_open=True)
        self.pause_s = check_interval(pause_s, "pause_s", owner)
        self.mode = check_choice(mode, "mode", owner, ("reflect", "border"))
        self._reflect = self.mode == "reflect"
        self._setup(start_xy_m, bounds_m, rng, owner)

    def _init_generation(self):
        self._pos = self._start.copy()
        self._tc = np.zeros(self.n_ue)

    def _generate(self):
        n, L = self.n_ue, self._chunk
        theta = self._rng.random((n, L)) * (2.0 * np.pi)
        lo, hi = self.speed_mps
        speed = lo + self._rng.random((n, L)) * (hi - lo)
        tlo, thi = self.travel_s
        travel = tlo + self._rng.random((n, L)) * (thi - tlo)
        plo, phi = self.pause_s
        pause = plo + self._rng.random((n, L)) * (phi - plo)
        with_pause = phi > 0.0
        m = 2 * L if with_pause else L
        t_out, xy_out = np.empty((n, m)), np.empty((n, m, 2))
        pos, tc = self._pos, self._tc
        x0, x1, y0, y1 = self.bounds_m
        for leg in range(L):
            c, s = np.cos(theta[:, leg]), np.sin(theta[:, leg])
            if self.mode == "border":
                # point back inside when sitting on a wall
                span = max(x1 - x0, y1 - y0)
                eps = 1e-9 * span
                c = np.where(((pos[:, 0] >= x1 - eps) & (c > 0)) | ((pos[:, 0] <= x0 + eps) & (c < 0)), -c, c)
                s = np.where(((pos[:, 1] >= y1 - eps) & (s > 0)) | ((pos[:, 1] <= y0 + eps) & (s < 0)), -s, s)
                with np.errstate(divide="ignore", invalid="ignore"):
                    tx = np.where(c > 0, (x1 - pos[:, 0]) / c, np.where(c < 0, (x0 - pos[:, 0]) / c, np.inf))
                    ty = np.where(s > 0, (y1 - pos[:, 1]) / s, np.where(s < 0, (y0 - pos[:, 1]) / s, np.inf))
                dist = np.maximum(np.minimum(tx, ty), 0.0)
                new = pos + dist[:, None] * np.stack([c, s], axis=1)
                new = np.stack([np.clip(new[:, 0], x0, x1), np.clip(new[:, 1], y0, y1)], axis=1)
                dur = dist / speed[:, leg]
            else:
                dur = travel[:, leg]
                new = pos + (speed[:, leg] * dur)[:, None] * np.stack([c, s], axis=1)
            tc = tc + dur
            i = 2 * leg if with_pause else leg
            t_out[:, i], xy_out[:, i] = tc, new
            pos = new
            if with_pause:
                tc = tc + pause[:, leg]
                t_out[:, i + 1], xy_out[:, i + 1] = tc, pos
        self._pos, self._tc = pos.copy(), tc
        return t_out, xy_out


class GaussMarkov(_Waypoints):
    """Gauss–Markov mobility (Liang & Haas, INFOCOM 1999), reflected at the border.

    At update instants t_n = n·step_s each client's speed s and direction θ follow

        s_n = α s_{n−1} + (1 − α) s̄ + sqrt(1 − α²) σ_s z,
        θ_n = α θ_{n−1} + (1 − α) θ̄ + sqrt(1 − α²) σ_θ z',

    and the client moves in a straight line at (s_n, θ_n) until t_{n+1} (piecewise linear).
    α = 1 is constant velocity, α = 0 a memoryless random walk. Speeds are clipped at 0.

    Args:
        start_xy_m: (n_ue, 2), m.  bounds_m: (xmin, xmax, ymin, ymax), m.
        mean_speed_mps: s̄, m/s.
        alpha: α in [0, 1].
        step_s: update interval, s.
        rng: generator.
        speed_std_mps: σ_s, m/s (default s̄/3).
        direction_std_rad: σ_θ, rad (default π/4).
        mean_direction_rad: θ̄, rad — scalar or (n_ue,); default uniform per client.
    """

    _chunk = 32

    def __init__(
        self,
        start_xy_m,
        bounds_m,
        mean_speed_mps: float = 1.0,
        alpha: float = 0.75,
        step_s: float = 1.0,
        rng: np.random.Generator | None = None,
        *,
        speed_std_mps: float | None = None,
        direction_std_rad: float = math.pi / 4,
        mean_direction_rad=None,
    ) -> None:
        owner = "GaussMarkov"
        self.mean_speed_mps = check_nonnegative(mean_speed_mps, "mean_speed_mps", owner)
        self.alpha = check_range(alpha, "alpha", owner, 0.0, 1.0)
        self.step_s = check_positive(step_s, "step_s", owner)
        self.speed_std_mps = check_nonnegative(
            self.mean_speed_mps / 3.0 if speed_std_mps is None else speed_std_mps, "speed_std_mps", owner
        )
        self.direction_std_rad = check_nonnegative(direction_std_rad, "direction_std_rad", owner)
        self._mean_dir = mean_direction_rad
        self._reflect = True
        self._setup(start_xy_m, bounds_m, rng, owner)

    def _init_generation(self):
        n = self.n_ue
        if self._mean_dir is None:
            self._theta_bar = self._rng.random(n) * (2.0 * np.pi)
        else:
            self._theta_bar = np.broadcast_to(np.asarray(self._mean_dir, dtype=float), (n,)).copy()
        self._s = np.full(n, self.mean_speed_mps)
        self._theta = self._theta_bar.copy()
        self._pos = self._start.copy()
        self._n = 0

    def _generate(self):
        n, L = self.n_ue, self._chunk
        z = self._rng.standard_normal((n, L, 2))
        a = self.alpha
        k = math.sqrt(1.0 - a * a)
        t_out, xy_out = np.empty((n, L)), np.empty((n, L, 2))
        pos, s, th = self._pos, self._s, self._theta
        for i in range(L):
            pos = pos + (s * self.step_s)[:, None] * np.stack([np.cos(th), np.sin(th)], axis=1)
            self._n += 1
            t_out[:, i] = self._n * self.step_s
            xy_out[:, i] = pos
            s = np.maximum(a * s + (1 - a) * self.mean_speed_mps + k * self.speed_std_mps * z[:, i, 0], 0.0)
            th = a * th + (1 - a) * self._theta_bar + k * self.direction_std_rad * z[:, i, 1]
        self._pos, self._s, self._theta = pos, s, th
        return t_out, xy_out


class ConstantVelocity(Mobility):
    """Vehicles on straight road segments at constant speed (analytic; no randomness).

    Client i starts ``offset_m[i]`` metres along the segment start→end and drives towards
    ``end`` at ``speed_mps[i]``. At the ends it turns back (``mode="bounce"``, the default:
    the trajectory stays continuous, so the shadowing and fading correlation along the path
    stay meaningful) or re-enters at the start (``mode="wrap"``: a ring road / a stream of
    vehicles; the jump end→start decorrelates the channel like a new vehicle would).

    Args:
        start_xy_m, end_xy_m: (2,) or (n_ue, 2), m (one road for all, or one per client).
        speed_mps: scalar or (n_ue,), m/s, > 0.
        n_ue: number of clients when every argument is shared.
        mode: ``"bounce"`` or ``"wrap"``.
        offset_m: scalar or (n_ue,), m, initial distance along the road.
        bounds_m: optional area; default the roads' bounding box (1 m margin).
    """

    def __init__(
        self,
        start_xy_m,
        end_xy_m,
        speed_mps,
        *,
        n_ue: int | None = None,
        mode: str = "bounce",
        offset_m=0.0,
        bounds_m=None,
    ) -> None:
        owner = "ConstantVelocity"
        a = np.atleast_2d(np.asarray(start_xy_m, dtype=float))
        b = np.atleast_2d(np.asarray(end_xy_m, dtype=float))
        sizes = {x.shape[0] for x in (a, b, np.atleast_1d(speed_mps), np.atleast_1d(offset_m))} - {1}
        if n_ue is not None:
            sizes.add(int(n_ue))
        if len(sizes) > 1:
            raise ValueError(
                f"The client counts of {owner} disagree: start/end/speed/offset/n_ue give {sorted(sizes)}. "
                "Pass arrays of one length (or scalars and n_ue)."
            )
        n = sizes.pop() if sizes else 1
        self.n_ue = n
        self._a = check_xy(np.broadcast_to(a, (n, 2)), "start_xy_m", owner).copy()
        self._b = check_xy(np.broadcast_to(b, (n, 2)), "end_xy_m", owner).copy()
        self._speed = check_positive(np.broadcast_to(np.asarray(speed_mps, dtype=float), (n,)), "speed_mps", owner)
        self._offset = check_nonnegative(np.broadcast_to(np.asarray(offset_m, dtype=float), (n,)), "offset_m", owner)
        self.mode = check_choice(mode, "mode", owner, ("bounce", "wrap"))
        d = self._b - self._a
        self._len = np.hypot(d[:, 0], d[:, 1])
        check_positive(self._len, "end_xy_m", owner, fix="Each road needs distinct start and end points.")
        self._dir = d / self._len[:, None]
        if bounds_m is None:
            lo = np.minimum(self._a, self._b).min(axis=0) - 1.0
            hi = np.maximum(self._a, self._b).max(axis=0) + 1.0
            bounds_m = (lo[0], hi[0], lo[1], hi[1])
        self.bounds_m = check_bounds(bounds_m, "bounds_m", owner)
        _inside(np.concatenate([self._a, self._b]), self.bounds_m, owner, "start_xy_m/end_xy_m")

    def state(self, t_s):
        return self._state_rows(t_s, slice(None))

    def state_of(self, t_s, ue_index):
        return self._state_rows(t_s, np.asarray(ue_index, dtype=np.int64))

    def positions_at(self, times_s, ue_index):
        times = np.atleast_1d(np.asarray(times_s, dtype=float))
        rows = np.asarray(ue_index, dtype=np.int64)
        for t in (times.min(), times.max()) if times.size else ():
            self._time(t)
        s = self._offset[rows] + self._speed[rows] * times[:, None]  # [W, m]
        u = np.mod(s, self._len[rows]) if self.mode == "wrap" else _fold(s, 0.0, self._len[rows])[0]
        return self._a[rows] + u[:, :, None] * self._dir[rows]

    def _state_rows(self, t_s, rows):
        t = self._time(t_s)
        speed, length, direction = self._speed[rows], self._len[rows], self._dir[rows]
        s = self._offset[rows] + speed * t
        if self.mode == "wrap":
            u, sign = np.mod(s, length), np.ones(s.shape)
        else:
            u, sign = _fold(s, 0.0, length)
        pos = self._a[rows] + u[:, None] * direction
        vel = (speed * sign)[:, None] * direction
        return pos, vel

    def reset(self) -> None:
        pass


class TraceFormatError(ValueError):
    """A mobility trace file is malformed (the message names file, line and problem)."""


class TraceReplay(_Waypoints):
    """Replay recorded trajectories with linear interpolation between samples.

    Before a client's first sample it stays at that sample, after its last it stays at the
    last (velocity 0 in both cases).

    Args:
        times_s: sequence (one per client) of 1-D arrays of strictly increasing times, s.
        xy_m: sequence of (m_i, 2) arrays, m.
        client_ids: labels of the clients (default 0..n−1).
        bounds_m: optional area; default the samples' bounding box (1 m margin).
    """

    _hold_before_start = True

    def __init__(self, times_s: Sequence, xy_m: Sequence, client_ids=None, bounds_m=None) -> None:
        owner = "TraceReplay"
        if len(times_s) != len(xy_m) or len(times_s) == 0:
            raise ValueError(
                f"The 'times_s' and 'xy_m' parameters of {owner} must be non-empty sequences of equal "
                f"length (one entry per client). Got {len(times_s)} and {len(xy_m)} instead."
            )
        ts = [np.asarray(t, dtype=float).ravel() for t in times_s]
        ps = [check_xy(p, "xy_m", owner) for p in xy_m]
        for i, (t, p) in enumerate(zip(ts, ps)):
            if t.size == 0 or t.size != p.shape[0]:
                raise ValueError(
                    f"The 'times_s' parameter of {owner} must have one time per position for client {i}. "
                    f"Got {t.size} times and {p.shape[0]} positions instead."
                )
            if not np.isfinite(t).all() or (np.diff(t) <= 0).any():
                raise ValueError(
                    f"The 'times_s' parameter of {owner} must be finite and strictly increasing for "
                    f"client {i}. Got {t.tolist()[:8]} instead."
                )
            if t[0] < 0:
                raise ValueError(
                    f"The 'times_s' parameter of {owner} must be >= 0. Got {t[0]:g} for client {i} instead."
                )
        self.client_ids = list(range(len(ts))) if client_ids is None else list(client_ids)
        self.n_ue = len(ts)
        allp = np.concatenate(ps)
        if bounds_m is None:
            lo, hi = allp.min(axis=0) - 1.0, allp.max(axis=0) + 1.0
            bounds_m = (lo[0], hi[0], lo[1], hi[1])
        self.bounds_m = check_bounds(bounds_m, "bounds_m", owner)
        _inside(allp, self.bounds_m, owner, "xy_m")
        cap = max(t.size for t in ts) + 1
        self._T = np.full((self.n_ue, cap), np.inf)
        self._P = np.empty((self.n_ue, cap, 2))
        for i, (t, p) in enumerate(zip(ts, ps)):
            self._T[i, : t.size] = t
            self._P[i, : t.size] = p
            self._P[i, t.size :] = p[-1]
        self._seed = None
        self.reset()

    def reset(self) -> None:
        self._t, self._xy = self._T, self._P
        self._k = self._T.shape[1]
        self._cursor = np.zeros(self.n_ue, dtype=np.int64)
        self._t_kept = 0.0
        self._t_end = np.inf
        self._rows = np.arange(self.n_ue)

    def _extend(self, t: float) -> None:
        pass  # every row ends with an infinite time

    def forget_before(self, t_s: float) -> None:
        """Traces are kept whole (they are already in memory)."""
        self._t_kept = self._time(t_s, self._t_kept)

    @classmethod
    def from_csv(cls, path, bounds_m=None) -> "TraceReplay":
        """Load a trace from CSV.

        One file with a header ``t,client,x,y`` (rows in any order; clients sorted by id,
        numerically when all ids are integers), or a list of files with header ``t,x,y``
        (one client per file, in the order given). Times in s, positions in m. Raises
        :class:`TraceFormatError` naming the file and line of the first problem.
        """
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if not paths:
            raise TraceFormatError("TraceReplay.from_csv needs at least one file. Got an empty list instead.")
        times, xys, ids = [], [], []
        multi = len(paths) > 1
        for p in paths:
            rows, has_client = read_trace_csv(Path(p))
            if multi and has_client:
                raise TraceFormatError(f"{p}: per-client files must have columns t,x,y. Got a 'client' column instead.")
            if has_client:
                groups: dict[str, list] = {}
                for line_no, t, c, x, y in rows:
                    groups.setdefault(c, []).append((line_no, t, x, y))
                keys = list(groups)
                if all(_is_int(k) for k in keys):
                    keys.sort(key=lambda k: int(k))
                else:
                    keys.sort()
                for k in keys:
                    t, xy = _sorted_samples(groups[k], f"{p}, client {k}")
                    times.append(t), xys.append(xy), ids.append(int(k) if _is_int(k) else k)
            else:
                t, xy = _sorted_samples([(ln, t, x, y) for ln, t, _, x, y in rows], str(p))
                times.append(t), xys.append(xy), ids.append(len(ids))
        return cls(times, xys, client_ids=ids, bounds_m=bounds_m)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def read_trace_csv(path: Path):
    """The samples of one trace file: ``(rows, has_client)``, rows ``(line, t, client or
    None, x, y)``; raises :class:`TraceFormatError` naming the file and line of the first
    problem (what :meth:`TraceReplay.from_csv` reads)."""
    if not path.is_file():
        raise TraceFormatError(f"{path}: no such trace file.")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise TraceFormatError(f"{path}: the file is empty; expected a header t,client,x,y or t,x,y.")
        cols = [h.strip().lower() for h in header]
        if sorted(cols) == ["client", "t", "x", "y"]:
            has_client = True
        elif sorted(cols) == ["t", "x", "y"]:
            has_client = False
        else:
            raise TraceFormatError(
                f"{path}, line 1: the header must be t,client,x,y or t,x,y (any order). Got {','.join(header)} instead."
            )
        it, ix, iy = cols.index("t"), cols.index("x"), cols.index("y")
        ic = cols.index("client") if has_client else None
        rows = []
        for line_no, rec in enumerate(reader, start=2):
            if not rec or all(not f.strip() for f in rec):
                continue
            if len(rec) != len(cols):
                raise TraceFormatError(
                    f"{path}, line {line_no}: expected {len(cols)} fields ({','.join(cols)}). Got {len(rec)} instead."
                )
            vals = []
            for name, i in (("t", it), ("x", ix), ("y", iy)):
                try:
                    v = float(rec[i])
                except ValueError:
                    raise TraceFormatError(
                        f"{path}, line {line_no}: column {name!r} must be a number. Got {rec[i]!r} instead."
                    ) from None
                if not math.isfinite(v):
                    raise TraceFormatError(
                        f"{path}, line {line_no}: column {name!r} must be finite. Got {rec[i]!r} instead."
                    )
                vals.append(v)
            c = rec[ic].strip() if has_client else None
            if has_client and not c:
                raise TraceFormatError(f"{path}, line {line_no}: column 'client' is empty.")
            rows.append((line_no, vals[0], c, vals[1], vals[2]))
        if not rows:
            raise TraceFormatError(f"{path}: no samples after the header.")
        return rows, has_client


def _sorted_samples(samples, where: str):
    samples = sorted(samples, key=lambda r: r[1])
    t = np.array([s[1] for s in samples])
    dup = np.flatnonzero(np.diff(t) == 0)
    if dup.size:
        a, b = samples[dup[0]], samples[dup[0] + 1]
        raise TraceFormatError(f"{where}: two samples at t={a[1]:g} (lines {a[0]} and {b[0]}).")
    if t[0] < 0:
        raise TraceFormatError(f"{where}, line {samples[0][0]}: t must be >= 0. Got {t[0]:g} instead.")
    return t, np.array([[s[2], s[3]] for s in samples])


#: Mobility models by the name scenario YAML uses.
MOBILITY_MODELS: dict[str, type[Mobility]] = {
    "static": Static,
    "random_waypoint": RandomWaypoint,
    "random_direction": RandomDirection,
    "gauss_markov": GaussMarkov,
    "constant_velocity": ConstantVelocity,
    "trace": TraceReplay,
}


def make_mobility(kind: str, **params) -> Mobility:
    """Build a registered mobility model (``trace`` takes ``path=`` and uses
    :meth:`TraceReplay.from_csv`)."""
    if kind not in MOBILITY_MODELS:
        raise ValueError(
            f"The 'kind' parameter of make_mobility must be one of {', '.join(map(repr, MOBILITY_MODELS))}. "
            f"Got {kind!r} instead."
        )
    if kind == "trace":
        return TraceReplay.from_csv(**params)
    return MOBILITY_MODELS[kind](**params)

"""The radio side of a scenario: channel/ models behind the :class:`LinkModel` interface.

:func:`build_radio` turns ``network`` and ``clients`` of a scenario into a
:class:`RadioLink`: layout, client drops, mobility per group, path loss, shadowing, block
fading (``channel.radio.RadioChannel``), association with hysteresis, and the rate mapping.

The channel is a function of (seed, client, link, position, time) (``channel.radio``): a
client's channel at a time does not depend on which other clients or blocks were evaluated,
so two scenarios that differ in bandwidth, algorithm or selection see the same channel for
the same client at the same time (common random numbers). The link evaluates it per *chunk*
of :data:`channel._sos.CHUNK_BLOCKS` fading blocks: a transferring client's chunk is
computed in one vectorised call (batched with every other transferring client that needs
the same chunk) and kept while it is current; the transfer engine then plans whole chunks
(:meth:`RadioLink.plan_blocks`). A client the driver only asks about (selection, capacity
prediction, serving cell) is evaluated for that block alone. Idle clients and idle blocks
cost nothing.

SINR: uplink interference comes from the clients of other cells with an active uplink flow,
downlink interference from the cells with an active downlink flow, with their gains in the
block; the set is the one when the link is asked (for a planned transfer, when its rows were
made: see :meth:`sim.network.Network._link_rows`). Power concentration: a client given a fraction b/B of its cell's uplink band
puts its whole power there, so its SINR on that sub-band is the full-band SINR + 10·log10(B/b)
(noise and average interference scale with the band); downlink power is spread over the
band, so the downlink SINR does not depend on the share.

Association (serving cell, handover with hysteresis and time-to-trigger) is evaluated on
the large-scale gain (RSRP is layer-3 filtered: no ping-pong on fades) at every fading block
in which a client has a transfer, and at the blocks in which the driver asks about it; the
engine learns the block of a transferring client's next handover from the plan, and a
client that hands over while idle has its handover traced at its next evaluation.

The models are built from the scenario's validated configs (:mod:`sim.radio_config`: one
registry per plug-in point, configs whose fields are the builders' keyword arguments).
:func:`check_radio` runs the same build steps at load time, with the run's random streams,
and reports every problem with its YAML key path, so that a scenario that validates
builds.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from channel import link as L
from channel._sos import CHUNK_BLOCKS
from sim.links import DOWN, UP, LinkBlocks, LinkModel
from sim.radio_config import DROPS, LAYOUTS, MAX_COORD_M, MOBILITY, PATHLOSS, RATES

__all__ = ["RadioLink", "build_radio", "check_radio", "build_layout", "build_drop",
           "build_mobility", "build_pathloss", "build_rate_mapper", "fading_options"]


class _ChunkCache:
    """Linear gains and large-scale gains (dB) of clients, per chunk of fading blocks:
    [slot, n_bs, CHUNK_BLOCKS] arrays, a slot per (client, chunk), two chunks per client at
    most (by the chunk's parity). A pure function of the seed: not written to checkpoints
    (:meth:`__getstate__`), recomputed to the same bits after a resume."""

    def __init__(self, n_bs: int, n_clients: int) -> None:
        self.n_bs, self.n_clients = int(n_bs), int(n_clients)

    def __getstate__(self) -> dict:
        return {"n_bs": self.n_bs, "n_clients": self.n_clients}

    def ready(self) -> "_ChunkCache":
        if "lin" not in self.__dict__:
            self.lin = np.empty((0, self.n_bs, CHUNK_BLOCKS))
            self.ls = np.empty((0, self.n_bs, CHUNK_BLOCKS))
            self.ls_max = np.empty((0, CHUNK_BLOCKS))  # the strongest cell's, per block
            # the client's serving cell when the chunk was computed, and the first block of
            # the chunk where another cell beat it by the hysteresis (CHUNK_BLOCKS: none)
            self.ref = np.empty(0, dtype=np.int64)
            self.first_better = np.empty(0, dtype=np.int64)
            self.chunk = np.empty(0, dtype=np.int64)  # chunk of each slot
            self.owner = np.empty(0, dtype=np.int64)  # client of each slot (−1: free)
            self.held = np.full((self.n_clients, 2), -1, dtype=np.int64)  # chunk held, by parity
            self.slot = np.zeros((self.n_clients, 2), dtype=np.int64)
        return self

    def lookup(self, clients: np.ndarray, j: int) -> np.ndarray:
        """(m,) slots of ``clients`` for chunk ``j`` (−1: not cached)."""
        p = j & 1
        return np.where(self.held[clients, p] == j, self.slot[clients, p], -1)

    def store(self, clients: np.ndarray, j: int, lin: np.ndarray, ls: np.ndarray, j_min: int,
              serving: np.ndarray, hysteresis_db: float) -> None:
        """Keep chunk ``j`` of ``clients`` ([m, n_bs, C] each; ``serving`` (m,) their serving
        cells, −1 for none yet); slots of chunks before ``j_min`` are reused first."""
        free = np.flatnonzero((self.owner < 0) | (self.chunk < j_min))
        if free.size < clients.size:  # grow
            cap = max(2 * self.chunk.size, self.chunk.size + clients.size - free.size, 64)
            grow = cap - self.chunk.size
            self.lin = np.concatenate([self.lin, np.empty((grow, self.n_bs, CHUNK_BLOCKS))])
            self.ls = np.concatenate([self.ls, np.empty((grow, self.n_bs, CHUNK_BLOCKS))])
            self.ls_max = np.concatenate([self.ls_max, np.empty((grow, CHUNK_BLOCKS))])
            self.ref = np.concatenate([self.ref, np.full(grow, -1, dtype=np.int64)])
            self.first_better = np.concatenate([self.first_better, np.zeros(grow, dtype=np.int64)])
            self.chunk = np.concatenate([self.chunk, np.zeros(grow, dtype=np.int64)])
            self.owner = np.concatenate([self.owner, np.full(grow, -1, dtype=np.int64)])
            free = np.flatnonzero((self.owner < 0) | (self.chunk < j_min))
        s = free[: clients.size]
        old = self.owner[s]
        was = old >= 0
        if was.any():  # the previous owners lose these slots
            o, oc = old[was], self.chunk[s[was]]
            gone = self.held[o, oc & 1] == oc
            self.held[o[gone], oc[gone] & 1] = -1
        self.lin[s] = lin
        self.ls[s] = ls
        ls_max = self.ls_max[s] = ls.max(axis=1)  # [m, C]
        rows = np.arange(clients.size)
        better = ls_max > ls[rows, np.maximum(serving, 0), :] + hysteresis_db  # [m, C]
        self.ref[s] = serving
        self.first_better[s] = np.where(better.any(axis=1), np.argmax(better, axis=1), CHUNK_BLOCKS)
        self.chunk[s] = j
        self.owner[s] = clients
        self.held[clients, j & 1] = j
        self.slot[clients, j & 1] = s


class RadioLink(LinkModel):
    """Link state of the clients that matter, from the channel models (see the module
    docstring).

    Args:
        channel: a ``channel.radio.RadioChannel``.
        positions_at: ``(times (W,), ids (m,)) -> [W, m, 2]`` positions (m) of clients ``ids``.
        tx_power_dbm: (n_clients,) UE power, dBm; bs_tx_power_dbm: BS power, dBm.
        noise_up_dbm, noise_down_dbm: noise over the whole cell band (uplink at the BS,
            downlink at the UE), dBm.
        association: ``channel.link.Association`` (built with ``n_ue``);
            rate_mapper: ``channel.link.RateMapper``.
    """

    def __init__(self, channel, positions_at, tx_power_dbm, bs_tx_power_dbm: float,
                 noise_up_dbm: float, noise_down_dbm: float, association, rate_mapper,
                 n_cells: int) -> None:
        self.channel = channel
        self.block_s = float(channel.block_s)
        self._positions_at = positions_at
        self.tx_power_dbm = np.asarray(tx_power_dbm, dtype=np.float64)
        self.n_clients = n = len(self.tx_power_dbm)
        self.n_cells = n_cells
        self.bs_tx_power_dbm = bs_tx_power_dbm
        self.noise_up_dbm = noise_up_dbm
        self.noise_down_dbm = noise_down_dbm
        self._p_ue_mw = 10.0 ** (self.tx_power_dbm / 10.0)  # (n,)
        self._p_bs_mw = 10.0 ** (bs_tx_power_dbm / 10.0)
        self._n_up_mw = 10.0 ** (noise_up_dbm / 10.0)
        self._n_down_mw = 10.0 ** (noise_down_dbm / 10.0)
        self.association = association
        self.mapper = rate_mapper
        m = rate_mapper
        self._shannon = m.kind == "shannon"  # fast path: no dB round trip, no checks
        self._inv_gap = 10.0 ** (-m.gap_db / 10.0)
        self._cap = math.inf if m.max_se_bps_hz is None else m.max_se_bps_hz
        self._eff = 1.0 - m.overhead
        self.serving = np.zeros(n, dtype=np.int64)
        self._sinr = {UP: np.zeros(n), DOWN: np.zeros(n)}  # linear, at each client's block
        self._sinr_f = {UP: [0.0] * n, DOWN: [0.0] * n}  # the same as Python floats
        self._at = [-1] * n  # block each client's SINR belongs to
        self._assoc_at = np.full(n, -1, dtype=np.int64)  # last block association was applied at
        # the handover rule looked ahead (not committed): from which update, to which block,
        # and the first block where a cell is better by the hysteresis / a handover fires
        self._la_from = np.full(n, -2, dtype=np.int64)
        self._la_to = np.full(n, -1, dtype=np.int64)
        self._la_better = np.full(n, -1, dtype=np.int64)
        self._la_first = np.full(n, -1, dtype=np.int64)
        self._active = np.zeros(n, dtype=bool)  # clients with a transfer (evaluated every block)
        self._active_until = np.full(n, -1, dtype=np.int64)  # last block of its last transfer
        self._held = np.zeros(n, dtype=bool)  # round participants: chunks computed in the batch
        self._cache = _ChunkCache(channel.n_bs, n)
        self.n_evaluated = 0  # client-blocks the channel computed (a cost counter for benchmarks)
        self._t_last = -1.0
        self._k_last = -1

    def block_index(self, t_s: float) -> int:
        """The fading block containing ``t_s`` (the channel's own rule)."""
        if t_s != self._t_last:
            self._t_last = t_s
            self._k_last = self.channel.block_index(t_s)
        return self._k_last

    # -- the channel, per chunk ------------------------------------------------------------
    def _chunk_slots(self, clients: np.ndarray, j: int) -> np.ndarray:
        """Cache slots of ``clients`` for chunk ``j``, computing the missing ones in one
        call — together with every transferring client and round participant that lacks it."""
        cache = self._cache.ready()
        slots = cache.lookup(clients, j)
        miss = slots < 0
        if miss.any():
            want = clients[miss]
            if j >= self._k_last // CHUNK_BLOCKS:  # the current chunk or later: batch them all
                want = np.union1d(want, np.flatnonzero(self._active | self._held))
                want = want[cache.lookup(want, j) < 0]
            self._compute_chunk(want, j)
            slots = cache.lookup(clients, j)
        return slots

    def _compute_chunk(self, clients: np.ndarray, j: int) -> None:
        c = CHUNK_BLOCKS
        blocks = np.arange(j * c, (j + 1) * c)
        xy = self._positions_at(blocks * self.block_s, clients)  # [C, m, 2] at the block starts
        lin, ls = self.channel.gains_over(blocks, xy, clients)  # [m, n_bs, C] each
        j_now = self._k_last // c if self._k_last >= 0 else j
        serving = np.where(self._assoc_at[clients] >= 0, self.serving[clients], -1)
        self._cache.store(clients, j, lin, ls, min(j, j_now) - 2, serving, self.association.hysteresis_db)
        self.n_evaluated += clients.size * c

    def _gains(self, clients: np.ndarray, k0: int, k1: int, cell: int | None = None):
        """(linear gains, large-scale dB), each [m, n_bs, k1 − k0], of clients over blocks
        [k0, k1), from their chunks; with ``cell``, the linear gains to that cell only
        ([m, k1 − k0])."""
        c = CHUNK_BLOCKS
        j0, j1 = k0 // c, (k1 - 1) // c
        cache = self._cache
        if j0 == j1:  # one chunk: plain slices
            s = self._chunk_slots(clients, j0)
            a, b = k0 - j0 * c, k1 - j0 * c
            if cell is not None:
                return cache.lin[s, cell, a:b]
            return cache.lin[s, :, a:b], cache.ls[s, :, a:b]
        m = clients.size
        lin = np.empty((m, k1 - k0) if cell is not None else (m, self.channel.n_bs, k1 - k0))
        ls = None if cell is not None else np.empty(lin.shape)
        for j in range(j0, j1 + 1):
            a, b = max(k0, j * c), min(k1, (j + 1) * c)
            s = self._chunk_slots(clients, j)
            if cell is not None:
                lin[:, a - k0:b - k0] = cache.lin[s, cell, a - j * c:b - j * c]
            else:
                lin[:, :, a - k0:b - k0] = cache.lin[s, :, a - j * c:b - j * c]
                ls[:, :, a - k0:b - k0] = cache.ls[s, :, a - j * c:b - j * c]
        return lin if cell is not None else (lin, ls)

    def _block(self, clients: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(linear gains, large-scale dB), each [m, n_bs], at block ``k``: from the cache
        (transferring clients and round participants: their chunk), else computed for this
        block alone."""
        j = k // CHUNK_BLOCKS
        col = k - j * CHUNK_BLOCKS
        cache = self._cache.ready()
        slots = cache.lookup(clients, j)
        have = slots >= 0
        if have.all():
            return cache.lin[slots, :, col], cache.ls[slots, :, col]
        need = ~have & (self._active[clients] | self._held[clients])
        if need.any():
            slots = self._chunk_slots(clients, j) if need.all() else slots
            if not need.all():
                slots[need] = self._chunk_slots(clients[need], j)
            have = slots >= 0
            if have.all():
                return cache.lin[slots, :, col], cache.ls[slots, :, col]
        lin = np.empty((clients.size, self.channel.n_bs))
        ls = np.empty(lin.shape)
        if have.any():
            lin[have] = cache.lin[slots[have], :, col]
            ls[have] = cache.ls[slots[have], :, col]
        ids = clients[~have]  # asked about, not transferring: this block only
        xy = self._positions_at(np.array([k * self.block_s]), ids)
        g, l_db = self.channel.gains_over([k], xy, ids)
        lin[~have] = g[:, :, 0]
        ls[~have] = l_db[:, :, 0]
        self.n_evaluated += ids.size
        return lin, ls

    # -- association ------------------------------------------------------------------------
    def _first_better(self, ids: np.ndarray, start: np.ndarray, k_to: int) -> np.ndarray:
        """(m,) the first block in [start, k_to) at which some cell beats the client's
        serving cell by the hysteresis (the handover rule can only act there), −1 for none:
        from what each chunk noted when it was computed, where the serving cell is still
        the one it was computed for; else from the gains."""
        c = CHUNK_BLOCKS
        cache = self._cache
        if ids.size == 1:  # the usual case (a flow joins): plain Python on the chunks' notes
            i, k = int(ids[0]), int(start[0])
            s_i = int(self.serving[i])
            for j in range(k // c, (k_to - 1) // c + 1):
                p = j & 1
                if cache.ready().held[i, p] != j:
                    self._chunk_slots(ids, j)
                slot = int(cache.slot[i, p])
                lo = max(k, j * c) - j * c
                if cache.ref[slot] != s_i:
                    break  # the note does not apply: the general path below
                fb = int(cache.first_better[slot])
                if fb < c:
                    if fb >= lo:
                        return np.array([j * c + fb if j * c + fb < k_to else -1])
                    break  # a candidate before lo: look at the gains
            else:
                return np.array([-1])
        out = np.full(ids.size, -1, dtype=np.int64)
        todo = np.ones(ids.size, dtype=bool)
        serving = self.serving[ids]
        hyst = self.association.hysteresis_db
        for j in range(int(start.min()) // c, (k_to - 1) // c + 1):
            if not todo.any():
                break
            s = self._chunk_slots(ids, j)
            lo = np.maximum(start, j * c) - j * c  # (m,) first column to look at
            fb = cache.first_better[s]
            same = cache.ref[s] == serving
            hit = todo & same & (fb < c) & (fb >= lo)
            out[hit] = j * c + fb[hit]
            todo &= ~hit
            clear = same & ((fb >= c) | (fb >= lo))  # nothing from lo on in this chunk
            look = todo & ~clear & (lo < c)
            if look.any():  # the chunk's note does not apply: look at its gains
                i = np.flatnonzero(look)
                cols = np.arange(c)[None, :]
                sl = s[i][:, None]
                better = cache.ls_max[sl, cols] > cache.ls[sl, serving[i][:, None], cols] + hyst
                better &= cols >= lo[i][:, None]
                any_b = better.any(axis=1)
                out[i[any_b]] = j * c + np.argmax(better[any_b], axis=1)
                todo[i[any_b]] = False
        out[out >= k_to] = -1
        return out

    def _lookahead(self, ids: np.ndarray, k_to: int) -> None:
        """Look ahead the handover rule of clients ``ids`` from their last update to block
        ``k_to`` (exclusive), without committing: the first block at which some cell beats
        the serving one by the hysteresis (``_la_better``) and the first at which a
        handover fires (``_la_first``), −1 for none. Kept per client while valid."""
        if ids.size == 1 and self._lookahead_one(ids, k_to):
            return
        valid = self._la_from[ids] == self._assoc_at[ids]
        short = self._la_to[ids] < k_to
        if valid.all() and not short.any():
            return
        quiet = valid & short & (self._la_better[ids] < 0)
        if quiet.any():  # nothing in the way so far: look at the extra blocks only
            q = ids[quiet]
            still = self._first_better(q, self._la_to[q], k_to) < 0
            self._la_to[q[still]] = k_to
        stale = (self._la_from[ids] != self._assoc_at[ids]) | (self._la_to[ids] < k_to)
        if not stale.any():
            return
        ids = ids[stale]
        start = self._assoc_at[ids] + 1
        first_b = self._first_better(ids, start, k_to)
        self._la_better[ids] = first_b
        self._la_first[ids] = -1
        any_b = first_b >= 0
        if any_b.any():  # the rule itself, for the few that have a candidate
            sub = ids[any_b]
            k0 = int(start[any_b].min())
            _, ls = self._gains(sub, k0, k_to)
            t = np.arange(k0, k_to) * self.block_s
            _, fired = self.association.scan(t, ls.transpose(2, 1, 0) + self.bs_tx_power_dbm,
                                             sub, start=start[any_b] - k0, commit=False)
            hit = fired.any(axis=0)
            self._la_first[sub] = np.where(hit, np.argmax(fired, axis=0) + k0, -1)
        self._la_from[ids] = self._assoc_at[ids]
        self._la_to[ids] = k_to

    def _lookahead_one(self, ids: np.ndarray, k_to: int) -> bool:
        """:meth:`_lookahead` of one client (a flow joins) on Python ints, where no cell beats
        the serving one (the usual case); False, with nothing changed, where one does (the
        general path then applies the rule)."""
        i = int(ids[0])
        at, la_to = int(self._assoc_at[i]), int(self._la_to[i])
        if int(self._la_from[i]) == at:
            if la_to >= k_to:
                return True
            if int(self._la_better[i]) < 0 and self._first_better(ids, np.array([la_to]), k_to)[0] < 0:
                self._la_to[i] = k_to  # nothing in the way in the extra blocks either
                return True
        if self._first_better(ids, np.array([at + 1]), k_to)[0] >= 0:
            return False
        self._la_better[i] = -1
        self._la_first[i] = -1
        self._la_from[i] = at
        self._la_to[i] = k_to
        return True

    def _walk(self, ids: np.ndarray, k_end: int) -> None:
        """Apply the handover rule to clients ``ids`` at every block from their last update
        to ``k_end`` (they transferred through those blocks)."""
        assoc = self.association
        self._lookahead(ids, k_end + 1)
        if ids.size == 1 and not 0 <= int(self._la_better[ids[0]]) <= k_end:
            # one client, quiet: what the masks below do for it
            assoc.forget_candidates(ids, k_end * self.block_s)
            self._la_from[ids] = k_end
            self._assoc_at[ids] = k_end
            return
        quiet = (self._la_better[ids] < 0) | (self._la_better[ids] > k_end)
        if quiet.any():  # no cell beat the serving one: what the rule gives is no candidate
            q = ids[quiet]
            assoc.forget_candidates(q, k_end * self.block_s)
            self._la_from[q] = k_end  # the look-ahead from here on still holds
        busy = ids[~quiet]
        if busy.size:
            k0 = int(self._assoc_at[busy].min()) + 1
            _, ls = self._gains(busy, k0, k_end + 1)  # [m, n_bs, K]
            serv, _ = assoc.scan(np.arange(k0, k_end + 1) * self.block_s,
                                 ls.transpose(2, 1, 0) + self.bs_tx_power_dbm, busy,
                                 start=self._assoc_at[busy] + 1 - k0)
            self.serving[busy] = serv[-1]
        self._assoc_at[ids] = k_end

    def _associate(self, clients: np.ndarray, k: int, ls_k: np.ndarray) -> list[tuple[int, int, int]]:
        """Apply the handover rule to ``clients`` (ascending) up to block ``k``: at every
        block in which they transferred since their last update, then at ``k`` (``ls_k``
        [m, n_bs]: their large-scale gains at ``k``). Returns the handovers."""
        if clients.size == 1:  # the usual case (a flow starts, a rate is asked for)
            return self._associate_one(clients, k, ls_k)
        old = self.serving[clients].copy()
        at = self._assoc_at[clients]
        seen = at >= 0  # a first attachment is not a handover
        active = self._active[clients]
        walk = active & seen & (at < k - 1)
        if walk.any():  # transferring since before this block: every block in between
            self._walk(clients[walk], k)
        lazy = ~active & seen & (self._active_until[clients] > at)
        if lazy.any():  # transferred until a block since its last update: those blocks
            ids = clients[lazy]
            ends = self._active_until[ids]
            for e in np.unique(ends).tolist():
                self._walk(ids[ends == e], min(e, k))
        rest = self._assoc_at[clients] < k
        if rest.any():
            ids = clients[rest]
            before = self.serving[ids].copy()
            serving, _ = self.association.update(k * self.block_s, (ls_k[rest] + self.bs_tx_power_dbm).T,
                                                 cols=ids)
            self.serving[ids] = serving
            # a look-ahead that saw no candidate up to past k still holds from k on
            keep = ((self._la_from[ids] == self._assoc_at[ids]) & (self._la_to[ids] > k)
                    & ((self._la_better[ids] < 0) | (self._la_better[ids] > k)) & (serving == before))
            self._la_from[ids[keep]] = k
            self._assoc_at[ids] = k
        moved = np.flatnonzero((self.serving[clients] != old) & seen)
        return [(int(clients[i]), int(old[i]), int(self.serving[clients[i]])) for i in moved.tolist()]

    def _associate_one(self, clients: np.ndarray, k: int, ls_k: np.ndarray) -> list[tuple[int, int, int]]:
        """:meth:`_associate` of one client: its conditions on Python scalars, the rule
        applied by the same calls on the same arrays."""
        c = int(clients[0])
        old = int(self.serving[c])
        at = int(self._assoc_at[c])
        seen = at >= 0  # a first attachment is not a handover
        if seen and self._active[c]:
            if at < k - 1:  # transferring since before this block: every block in between
                self._walk(clients, k)
        elif seen and int(self._active_until[c]) > at:  # transferred until a block since
            self._walk(clients, min(int(self._active_until[c]), k))
        if int(self._assoc_at[c]) < k:
            before = int(self.serving[c])
            serving, _ = self.association.update(k * self.block_s, (ls_k + self.bs_tx_power_dbm).T,
                                                 cols=clients)
            s = int(serving[0])
            self.serving[c] = s
            # a look-ahead that saw no candidate up to past k still holds from k on
            better = int(self._la_better[c])
            if (self._la_from[c] == self._assoc_at[c] and self._la_to[c] > k
                    and (better < 0 or better > k) and s == before):
                self._la_from[c] = k
            self._assoc_at[c] = k
        new = int(self.serving[c])
        return [(c, old, new)] if seen and new != old else []

    def set_held(self, client, held):
        self._held[client] = held

    def set_active(self, client, active, t_s):
        k = self.block_index(t_s)
        if active:
            self._active[client] = True
            return []
        # it transferred through this block: the rule is applied to those blocks at its next
        # evaluation (a handover then is traced then)
        self._active_until[client] = k
        self._active[client] = False
        return []

    # -- refresh: the current block ----------------------------------------------------------
    def refresh(self, t_s, clients, transmitting_up, transmitting_down):
        k = self.block_index(t_s)
        at = self._at
        if isinstance(clients, np.ndarray):
            clients = clients.tolist()
        need = sorted({c for c in clients if at[c] != k})
        if not need:
            return []
        need = np.array(need, dtype=np.int64)
        g, ls = self._block(need, k)  # [m, n_bs]
        handovers = self._associate(need, k, ls)
        serving = self.serving[need]
        rows = np.arange(need.size)
        g_serv = g[rows, serving]  # (m,)
        tx = np.flatnonzero(transmitting_up)
        if tx.size:  # uplink interference at the cells these clients are served by
            if need.size == 1:  # (what np.unique gives for one cell)
                cells, inv = serving, np.zeros(1, dtype=np.int64)
            else:
                cells, inv = np.unique(serving, return_inverse=True)
            j = k // CHUNK_BLOCKS
            s_tx = self._chunk_slots(tx, j)  # (first: it may grow the cache's arrays)
            g_tx = self._cache.lin[s_tx[:, None], cells[None, :], k - j * CHUNK_BLOCKS]
            other = self.serving[tx][:, None] != cells[None, :]  # [n_tx, u]
            i_serv = (self._p_ue_mw[tx] @ np.where(other, g_tx, 0.0))[inv]
        else:
            i_serv = 0.0
        sinr_up = self._p_ue_mw[need] * g_serv / (i_serv + self._n_up_mw)
        mask = np.asarray(transmitting_down, dtype=bool)
        signal = self._p_bs_mw * g_serv
        total = self._p_bs_mw * (g @ mask) if np.count_nonzero(mask) else np.zeros(need.size)
        interference = np.maximum(total - signal * mask[serving], 0.0)
        sinr_down = signal / (interference + self._n_down_mw)
        self._sinr[UP][need] = sinr_up
        self._sinr[DOWN][need] = sinr_down
        fu, fd = self._sinr_f[UP], self._sinr_f[DOWN]
        for c, su, sd in zip(need.tolist(), sinr_up.tolist(), sinr_down.tolist()):
            fu[c] = su
            fd[c] = sd
            at[c] = k
        return handovers

    # -- planning: many blocks at once --------------------------------------------------------
    def plan_blocks(self, t_s, clients, direction, cell, cell_bandwidth_hz, transmitting_up,
                    transmitting_down):
        """The rest of the current chunk of blocks (and the next chunk when at most two
        blocks are left), for clients served by ``cell``: their full-band rates with the
        interferers of now, and the first handover the look-ahead of their association
        finds."""
        c_ids = np.asarray(clients, dtype=np.int64)
        k0 = self.block_index(t_s)
        c = CHUNK_BLOCKS
        k1 = (k0 // c + 1) * c
        if k1 - k0 <= 2:
            k1 += c
        n_h = k1 - k0
        self._lookahead(c_ids, k1)
        # the block of each client's first handover from k0 on (n_h: none before k1)
        handover = np.array([max(f - k0, 0) if 0 <= f < k1 else n_h
                             for f in self._la_first[c_ids].tolist()], dtype=np.int64)
        if direction == UP:
            g = self._gains(c_ids, k0, k1, cell)  # [m, H] gain to the serving cell
            tx = np.flatnonzero(transmitting_up)
            tx = tx[self.serving[tx] != cell]
            interference = 0.0
            if tx.size:
                interference = self._p_ue_mw[tx] @ self._gains(tx, k0, k1, cell)  # (H,)
            sinr = self._p_ue_mw[c_ids][:, None] * g / (interference + self._n_up_mw)
        else:
            mask = np.asarray(transmitting_down, dtype=bool)
            if np.count_nonzero(mask):
                lin, _ = self._gains(c_ids, k0, k1)  # [m, n_bs, H]
                signal = self._p_bs_mw * lin[:, cell, :]
                total = self._p_bs_mw * np.einsum("mbh,b->mh", lin, mask.astype(float))
                interference = np.maximum(total - signal * mask[cell], 0.0)
            else:
                signal = self._p_bs_mw * self._gains(c_ids, k0, k1, cell)
                interference = 0.0
            sinr = signal / (interference + self._n_down_mw)
        full = self._rate(sinr, float(cell_bandwidth_hz))
        edges = np.arange(k0, k1 + 1) * self.block_s  # block starts (as block_start_s)
        edges[0] = t_s
        if sinr.all():  # (no zero: the same log10 without the cost of an errstate context)
            sinr_db = 10.0 * np.log10(sinr)
        else:
            with np.errstate(divide="ignore"):
                sinr_db = 10.0 * np.log10(sinr)
        return LinkBlocks(c_ids, edges, full, sinr_db, handover, sinr)

    def sub_rates(self, blocks, direction, fractions, cell_bandwidth_hz):
        s = blocks.data
        bw = fractions * float(cell_bandwidth_hz)
        if direction == UP:  # the UE's power concentrates on its sub-band
            s = s / fractions
        return self._rate(s, bw)

    # -- vectorised queries (selection, predictions) --------------------------------------
    def sinr_db(self, clients, direction):
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(self._sinr[direction][np.asarray(clients, dtype=np.int64)])

    def full_rate_bps(self, clients, direction, cell_bandwidth_hz):
        s = self._sinr[direction][np.asarray(clients, dtype=np.int64)]
        return self._rate(s, np.asarray(cell_bandwidth_hz, dtype=np.float64))

    def _rate(self, sinr_lin, bw):
        if self._shannon:
            se = np.minimum(np.log2(1.0 + sinr_lin * self._inv_gap), self._cap)
            return bw * self._eff * se
        with np.errstate(divide="ignore"):
            return self.mapper.rate_bps(10.0 * np.log10(sinr_lin), bw)

    def rate_bps(self, clients, direction, bandwidth_hz, cell_bandwidth_hz):
        s = self._sinr[direction][np.asarray(clients, dtype=np.int64)]
        bw = np.asarray(bandwidth_hz, dtype=np.float64)
        if direction == UP:  # the UE's power concentrates on its sub-band
            s = s * (np.asarray(cell_bandwidth_hz, dtype=np.float64) / bw)
        return self._rate(s, bw)

    # -- scalar queries (the transfer engine's per-event path) ------------------------------
    def rate_of(self, client, direction, bandwidth_hz, cell_bandwidth_hz):
        s = self._sinr_f[direction][client]
        if direction == UP and bandwidth_hz != cell_bandwidth_hz:
            s = s * (cell_bandwidth_hz / bandwidth_hz)
        if self._shannon:  # the same operations as _rate, on floats
            se = math.log2(1.0 + s * self._inv_gap)
            cap = self._cap
            return bandwidth_hz * self._eff * (cap if cap < se else se)  # min(se, cap)
        return float(self._rate(np.array([s]), np.array([bandwidth_hz]))[0])

    def rates_of(self, clients, direction, fractions, cell_bandwidth_hz):
        if not self._shannon:
            return super().rates_of(clients, direction, fractions, cell_bandwidth_hz)
        sinr = self._sinr_f[direction]
        inv_gap, cap, log2 = self._inv_gap, self._cap, math.log2
        b = cell_bandwidth_hz
        # (cap if cap < se else se) is min(se, cap) without the call; b * eff * se groups as
        # (b * eff) * se, so that product is taken once per call
        if fractions is None:
            be = b * self._eff
            return [be * (cap if cap < (se := log2(1.0 + sinr[c] * inv_gap)) else se)
                    for c in clients]
        eff = self._eff
        out = []
        up = direction == UP
        for c, f in zip(clients, fractions):
            bw = f * b
            s = sinr[c]
            if up and bw != b:
                s = s * (b / bw)
            se = log2(1.0 + s * inv_gap)
            out.append(bw * eff * (cap if cap < se else se))
        return out

    def sinr_db_of(self, client, direction):
        s = self._sinr_f[direction][client]
        return 10.0 * math.log10(s) if s > 0.0 else -math.inf


class Radio:
    """What :func:`build_radio` returns: the link model plus geometry for plots."""

    def __init__(self, link: RadioLink, layout, cell_site: np.ndarray, mobilities) -> None:
        self.link = link
        self.layout = layout
        self.cell_site = cell_site
        self._mobilities = mobilities  # [(slice, Mobility)], contiguous, in client order

    def state(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions (n, 2) m, speeds (n,) m/s) of all clients at ``t_s``."""
        parts = [m.state(t_s) for _, m in self._mobilities]
        xy = np.concatenate([p[0] for p in parts], axis=0)
        v = np.concatenate([p[1] for p in parts], axis=0)
        return xy, np.hypot(v[:, 0], v[:, 1])

    def state_of(self, t_s: float, clients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions (m, 2) m, speeds (m,) m/s) of ``clients`` at ``t_s`` (only theirs)."""
        clients = np.asarray(clients, dtype=np.int64)
        if len(self._mobilities) == 1:
            (sl, mob), = self._mobilities
            xy, v = mob.state_of(t_s, clients - sl.start if sl.start else clients)
            return xy, np.hypot(v[:, 0], v[:, 1])
        xy = np.empty((clients.size, 2))
        v = np.empty((clients.size, 2))
        for sl, mob in self._mobilities:
            mine = np.flatnonzero((clients >= sl.start) & (clients < sl.stop))
            if mine.size:
                xy[mine], v[mine] = mob.state_of(t_s, clients[mine] - sl.start)
        return xy, np.hypot(v[:, 0], v[:, 1])

    def positions_at(self, times_s, clients: np.ndarray) -> np.ndarray:
        """[W, m, 2] positions (m) of ``clients`` at each of ``times_s`` (W,)."""
        clients = np.asarray(clients, dtype=np.int64)
        times = np.atleast_1d(np.asarray(times_s, dtype=float))
        if len(self._mobilities) == 1:
            (sl, mob), = self._mobilities
            return mob.positions_at(times, clients - sl.start if sl.start else clients)
        out = np.empty((times.size, clients.size, 2))
        for sl, mob in self._mobilities:
            mine = np.flatnonzero((clients >= sl.start) & (clients < sl.stop))
            if mine.size:
                out[:, mine] = mob.positions_at(times, clients[mine] - sl.start)
        return out

    def positions_m(self, t_s: float, clients=None) -> np.ndarray:
        """(n, 2) positions at ``t_s`` (of ``clients`` only, (m, 2), when given), m."""
        return self.state(t_s)[0] if clients is None else self.state_of(t_s, clients)[0]

    def forget_before(self, t_s: float) -> None:
        """Let the mobility models drop trajectory history before ``t_s`` (memory of long
        runs); later queries must not go before it."""
        for _, mob in self._mobilities:
            forget = getattr(mob, "forget_before", None)
            if forget is not None:
                forget(t_s)

    def replay_positions_m(self, times_s, clients) -> np.ndarray:
        """(n_t, m, 2) positions of ``clients`` at ascending ``times_s``, replayed from the
        start of the trajectories (they are functions of the seed only); call it after the
        run: it rewinds the mobility models."""
        for _, mob in self._mobilities:
            mob.reset()
        out = []
        for i, t in enumerate(times_s):
            out.append(self.positions_m(float(t), clients))
            if i % 16 == 15:  # bounded memory, at a fraction of the (per-client) cost
                self.forget_before(float(t))
        return np.stack(out)


# ----------------------------------------------------------------------------- builders
def _fields(spec) -> dict[str, Any]:
    """Every option of a validated spec (defaults included), without its ``kind`` tag."""
    return {k: getattr(spec, k) for k in type(spec).model_fields if k != "kind"}


def _call(fn, provided: dict[str, Any], options: dict[str, Any]):
    """``fn(**provided, **options)``, passing only the provided arguments ``fn`` takes."""
    params = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in provided.items() if k in params}, **options)


def build_layout(spec):
    """The :class:`channel.geometry.Layout` of a ``network.layout`` spec."""
    return LAYOUTS.get(spec.kind)(**_fields(spec))


def explicit_layout(sites_xy_m, height_m, n_sectors, bounds_m):
    """``layout: {kind: explicit}``: sites at the given positions."""
    from channel import geometry as g

    return g.explicit_sites(np.asarray(sites_xy_m, dtype=float), height_m, n_sectors, bounds_m)


def build_drop(spec, layout, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) initial client positions, m, from a ``clients.drop`` spec."""
    return _call(DROPS.get(spec.kind), {"rng": rng, "n": n, "layout": layout}, _fields(spec))


def drop_uniform_disc(rng, n, layout, center_xy_m, radius_m, min_distance_m):
    """``drop: {kind: uniform_disc}``: centre default the first site, radius default the
    layout's cell radius (else half the area's smaller side)."""
    from channel import geometry as g

    center = layout.site_xy_m[0] if center_xy_m is None else center_xy_m
    radius = _radius(layout) if radius_m is None else radius_m
    return g.drop_uniform_disc(rng, n, np.asarray(center, dtype=float).reshape(1, 2), radius,
                               min_distance_m)


def drop_uniform_rectangle(rng, n, layout, bounds_m):
    """``drop: {kind: uniform_rectangle}``: default the layout's area."""
    from channel import geometry as g

    return g.drop_uniform_rectangle(rng, n, layout.bounds_m if bounds_m is None else bounds_m)


def drop_explicit(n, xy_m):
    """``drop: {kind: explicit}``: one position per client."""
    from channel import geometry as g

    if len(xy_m) != n:
        raise ValueError(f"The 'xy_m' parameter of drop_explicit must hold one position per "
                         f"client ({n}). Got {len(xy_m)} positions instead. Fix: give one [x, y] "
                         "per client, or change clients.n_clients.")
    return g.explicit_positions(xy_m)


def _radius(layout) -> float:
    r = layout.cell_radius_m
    if math.isfinite(r):
        return r
    x0, x1, y0, y1 = layout.bounds_m
    return 0.5 * min(x1 - x0, y1 - y0)


def _position_param(kind: str) -> str | None:
    """Name of the constructor parameter that takes the drop positions (None: YAML gives
    the trajectory itself, e.g. a road segment or a trace)."""
    return {"static": "xy_m", "constant_velocity": None, "trace": None}.get(kind, "start_xy_m")


def trace_mobility(path, bounds_m):
    """``mobility: {kind: trace}``: :meth:`channel.mobility.TraceReplay.from_csv`."""
    from channel.mobility import TraceReplay

    return TraceReplay.from_csv(path, bounds_m)


def build_mobility(spec, xy0: np.ndarray, layout, rng: np.random.Generator):
    """The mobility model of one group (``clients.groups[i].mobility``) of ``len(xy0)``
    clients dropped at ``xy0``; the simulator provides positions, count, stream and, for the
    models that move in an area, the layout's area when ``bounds_m`` is not given."""
    kw = _fields(spec)
    if spec.kind == "trace":
        mob = trace_mobility(**kw)
        if mob.n_ue != len(xy0):
            raise ValueError(f"The 'path' parameter of trace must hold one trajectory per client of "
                             f"its group. Got {spec.path!r}, which has {mob.n_ue} clients; its group "
                             f"has {len(xy0)} instead. Fix: record one trajectory per client, or "
                             "change the group's fraction or clients.n_clients.")
        return mob
    if kw.get("bounds_m", ...) is None:
        kw["bounds_m"] = layout.bounds_m
    provided: dict[str, Any] = {"rng": rng, "n_ue": len(xy0)}
    pos = _position_param(spec.kind)
    if pos is not None:
        provided[pos] = xy0
    return _call(MOBILITY.get(spec.kind), provided, kw)


def build_pathloss(spec):
    """The :class:`channel.pathloss.PathlossModel` of a ``network.pathloss`` spec."""
    return PATHLOSS.get(spec.kind)(**_fields(spec))


def build_rate_mapper(spec):
    """The :class:`channel.link.RateMapper` of a ``network.rate`` spec."""
    return RATES.get(spec.kind)(kind=spec.kind, **_fields(spec))


def fading_options(spec) -> dict | None:
    """The ``fading`` argument of :class:`channel.radio.RadioChannel` for a
    ``network.fading`` spec (None: no small-scale fading)."""
    if spec.kind == "none":
        return None
    out: dict[str, Any] = {"kind": spec.kind, "iid": not spec.time_correlated}
    if getattr(spec, "k_factor_db", None) is not None:
        out["k_factor_db"] = spec.k_factor_db
    return out


def build_radio(scn, rng) -> Radio:
    """The radio models of ``scn`` with streams from ``rng`` (:class:`sim.rng.RngStreams`)."""
    from channel.radio import RadioChannel

    net = scn.network
    layout = build_layout(net.layout)
    n = scn.clients.n_clients
    xy0 = build_drop(scn.clients.drop, layout, n, rng.get("drops"))
    groups = scn.clients.group_names()  # group blocks are contiguous, in group order
    mobilities = []
    for g, sl in _group_slices(scn, groups):
        mob = build_mobility(g.mobility, xy0[sl], layout, rng.get(f"mobility/{g.name}"))
        mobilities.append((sl, mob))
    pathloss = build_pathloss(net.pathloss)
    channel = _make_channel(RadioChannel, scn, layout, pathloss, n, rng)
    tx = {g.name: (g.tx_power_dbm if g.tx_power_dbm is not None else scn.clients.tx_power_dbm)
          for g in scn.clients.groups}
    tx_power = np.array([tx[name] for name in groups])
    mapper = build_rate_mapper(net.rate)
    radio = Radio(None, layout, np.asarray(layout.site_of_bs, dtype=np.int64), mobilities)
    radio.link = RadioLink(
        channel, radio.positions_at, tx_power, net.bs_tx_power_dbm,
        float(L.thermal_noise_dbm(net.uplink_bandwidth_hz, net.noise_figure_db)),
        float(L.thermal_noise_dbm(net.downlink_bandwidth_hz, net.ue_noise_figure_db)),
        L.Association(net.association.hysteresis_db, net.association.time_to_trigger_s, n_ue=n),
        mapper, layout.n_bs)
    return radio


def _group_slices(scn, groups: list[str]):
    """(group spec, slice of its clients) of the non-empty groups, in order."""
    start = 0
    for g in scn.clients.groups:
        m = groups.count(g.name)
        if m:
            yield g, slice(start, start + m)
            start += m


def _make_channel(RadioChannel, scn, layout, pathloss, n, rng):
    net = scn.network
    return RadioChannel(
        layout, pathloss, net.carrier_hz, net.ue_height_m, n, fading=fading_options(net.fading),
        shadowing=net.shadowing.enabled, block_s=net.fading.block_s,
        rngs={"los": rng.get("los"), "shadowing": rng.get("shadowing"),
              "fading": rng.get("fading")},
    )


# ----------------------------------------------------------------------------- load-time checks
_CHANNEL_ERROR = re.compile(r"^The '(?P<param>[^']+)' parameter of (?P<owner>\S+) (?P<rule>.*?)\. "
                            r"Got (?P<got>.*?) instead\.(?: (?P<fix>.*))?$", re.S)


def _line(prefix: str, exc: Exception, fields=(), rename: dict[str, str] | None = None,
          fix: str | None = None) -> str:
    """One ScenarioError line for a channel error: the key path of the parameter it names
    (``rename`` maps builder parameters to other scenario keys), rule, value and fix."""
    msg = str(exc)
    m = _CHANNEL_ERROR.match(msg)
    if m is None:
        fix = fix or f"see `fedwave schema` for what {prefix} accepts"
        return f"{prefix}: {msg.rstrip('.')}. Fix: {fix}."
    param = m["param"]
    key = (rename or {}).get(param) or (f"{prefix}.{param}" if param in fields else prefix)
    rule = m["rule"]
    if key == prefix and param not in fields:
        rule = f"{param} {rule}"
    fixed = (m["fix"] or "").strip().removeprefix("Fix:").strip().rstrip(".")
    fixed = fixed or fix or f"give {key.rsplit('.', 1)[-1]} a value that {_holds(rule)}"
    return f"{key}: {rule}; got {m['got']}. Fix: {fixed}."


def _holds(rule: str) -> str:
    """``must be in [0, 1]`` -> ``is in [0, 1]`` (a rule as a property of the fixed value)."""
    return re.sub(r"^must (\w+)", lambda m: {"be": "is", "have": "has"}.get(m[1], m[1] + "s"), rule)


def check_radio(scn) -> list[str]:
    """Build the radio side of ``scn`` the way a run does (layout, path-loss validity for the
    carrier and the heights, rate mapping, the client drop with the run's stream, each
    group's mobility, trace files) and return one line per problem, key path first."""
    from sim.rng import RngStreams

    net, cl = scn.network, scn.clients
    lines: list[str] = []
    try:
        layout = build_layout(net.layout)
    except ValueError as exc:
        return [_line("network.layout", exc, type(net.layout).model_fields)]
    try:
        pathloss = build_pathloss(net.pathloss)
        pathloss.validate(net.carrier_hz, layout.site_height_m[:, None], net.ue_height_m)
    except ValueError as exc:
        lines.append(_line("network.pathloss", exc, type(net.pathloss).model_fields, rename={
            "carrier_hz": "network.carrier_hz", "h_bs_m": "network.layout.height_m",
            "h_ut_m": "network.ue_height_m"}, fix=f"use values inside the validity range of "
                                                   f"path loss {net.pathloss.kind!r}, or another model"))
    try:
        build_rate_mapper(net.rate)
    except ValueError as exc:
        lines.append(_line("network.rate", exc, type(net.rate).model_fields))
    problem = _drop_region_problem(cl.drop, layout)
    if problem:
        return lines + [problem]
    try:
        xy0 = build_drop(cl.drop, layout, cl.n_clients, RngStreams(scn.seed).get("drops"))
    except ValueError as exc:
        return lines + [_line("clients.drop", exc, type(cl.drop).model_fields, rename={
            "n": "clients.n_clients"})]
    rng = RngStreams(scn.seed)
    groups = cl.group_names()
    for i, g in enumerate(cl.groups):
        if g.mobility.kind == "trace":
            lines.extend(_trace_problems(f"clients.groups.{i}.mobility.path", g.mobility.path))
    if lines:
        return lines
    index = {g.name: i for i, g in enumerate(cl.groups)}
    for g, sl in _group_slices(scn, groups):
        prefix = f"clients.groups.{index[g.name]}.mobility"
        per_client = _per_client_problems(prefix, g.mobility, sl.stop - sl.start, g.name)
        if per_client:
            lines.extend(per_client)
            continue
        xy = xy0[sl]
        outside = _first_outside(xy, g.mobility, layout)
        if outside is not None:
            lines.append(_outside_line(prefix, g, cl.drop.kind, outside, xy[outside]))
            continue
        if _position_param(g.mobility.kind) is not None:
            # the models check parameters and that the start positions lie in their area
            # (done above, for every client): the clients at the extremes stand in for all,
            # so a million-client scenario validates without a million trajectories
            xy = xy[np.unique([xy[:, 0].argmin(), xy[:, 0].argmax(), xy[:, 1].argmin(),
                               xy[:, 1].argmax()])]
        try:
            build_mobility(g.mobility, xy, layout, rng.get(f"mobility/{g.name}"))
        except ValueError as exc:
            lines.append(_line(prefix, exc, type(g.mobility).model_fields))
    return lines


def _drop_region_problem(drop, layout) -> str | None:
    """A drop region that lies wholly outside the layout's area (no client can be served
    from inside it), or None."""
    x0, x1, y0, y1 = layout.bounds_m
    if drop.kind == "uniform_disc" and drop.center_xy_m is not None:
        (cx, cy), r = drop.center_xy_m, drop.radius_m if drop.radius_m is not None else _radius(layout)
        dx, dy = max(x0 - cx, 0.0, cx - x1), max(y0 - cy, 0.0, cy - y1)
        if math.hypot(dx, dy) > r:
            return (f"clients.drop: the disc around {list(drop.center_xy_m)} of radius {r:g} m lies "
                    f"outside every cell (the layout's area is {list(layout.bounds_m)}); got "
                    f"center_xy_m {list(drop.center_xy_m)}. Fix: move center_xy_m into the area.")
    regions = []
    if drop.kind == "uniform_rectangle" and drop.bounds_m is not None:
        regions = [drop.bounds_m]
    elif drop.kind == "hotspots":
        rs = drop.radius_m if isinstance(drop.radius_m, list) else [drop.radius_m] * len(drop.centers_xy_m)
        regions = [(x - r, x + r, y - r, y + r) for (x, y), r in zip(drop.centers_xy_m, rs)]
    elif drop.kind == "explicit":
        regions = [(x, x, y, y) for x, y in drop.xy_m]
    for j, (a0, a1, b0, b1) in enumerate(regions):
        if a1 < x0 or a0 > x1 or b1 < y0 or b0 > y1:
            what = {"uniform_rectangle": "the rectangle", "hotspots": f"hotspot {j}",
                    "explicit": f"position {j}"}[drop.kind]
            return (f"clients.drop: {what} lies outside every cell (the layout's area is "
                    f"{list(layout.bounds_m)}); got {[round(v, 6) for v in (a0, a1, b0, b1)]}. "
                    "Fix: move it into the area, or widen network.layout.")
    return None


def _per_client_problems(prefix: str, spec, n: int, group: str) -> list[str]:
    """Per-client lists of a mobility spec must have one entry per client of its group."""
    out = []
    for name in ("start_xy_m", "end_xy_m", "speed_mps", "offset_m", "mean_direction_rad"):
        v = getattr(spec, name, None)  # a list: per client (one [x, y] pair is a tuple)
        if isinstance(v, list) and len(v) not in (1, n):
            out.append(f"{prefix}.{name}: must have one entry per client of group {group!r} "
                       f"({n}); got {len(v)} entries. Fix: give {n} entries, or one value for all.")
    return out


def _first_outside(xy: np.ndarray, spec, layout) -> int | None:
    """The first client dropped outside the area its mobility model moves in (models that
    start from the drop), or None."""
    if _position_param(spec.kind) is None or not len(xy):
        return None
    x0, x1, y0, y1 = spec.bounds_m if spec.bounds_m is not None else layout.bounds_m
    bad = (xy[:, 0] < x0) | (xy[:, 0] > x1) | (xy[:, 1] < y0) | (xy[:, 1] > y1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _outside_line(prefix: str, group, drop_kind: str, i: int, xy: np.ndarray) -> str:
    return (f"clients.drop: the drop ({drop_kind}) puts clients of group {group.name!r} outside "
            f"the area they move in ({prefix}.bounds_m, default the layout's area); got "
            f"({xy[0]:g}, {xy[1]:g}) for the group's client {i}. Fix: shrink the drop region, "
            f"or give {prefix}.bounds_m an area that contains it.")


def _trace_problems(key: str, path) -> list[str]:
    """A trace file must exist, parse (the run's parser: file and line of the first problem)
    and stay within ±MAX_COORD_M; relative paths are read from the working directory, as
    the run reads them."""
    from channel.mobility import TraceFormatError, read_trace_csv

    out = []
    for p in [path] if isinstance(path, str) else path:
        f = Path(p).expanduser()
        if not f.is_file():
            out.append(f"{key}: no such trace file; got {str(p)!r} (looked for {f.absolute()}). "
                       "Fix: give the path of an existing CSV file (relative paths start at the "
                       "working directory).")
            continue
        try:
            rows, _ = read_trace_csv(f)
        except TraceFormatError as exc:
            out.append(f"{key}: the trace is malformed: {exc} Fix: correct that line of the file.")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            out.append(f"{key}: cannot read the trace file {str(p)!r} ({exc}). Fix: check the "
                       "file and its permissions.")
            continue
        for line_no, _t, _c, x, y in rows:
            if abs(x) > MAX_COORD_M or abs(y) > MAX_COORD_M:
                out.append(f"{key}: {f}, line {line_no}: positions must lie within ±{MAX_COORD_M:g} m; "
                           f"got ({x:g}, {y:g}). Fix: give positions in metres.")
                break
    if not out:  # the whole trace, as the run reads it (columns of per-client files, ...)
        try:
            trace_mobility(path, None)
        except ValueError as exc:
            out.append(f"{key}: the trace is malformed: {exc} Fix: correct the file.")
    return out

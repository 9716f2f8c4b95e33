"""Link models: what the transfer engine asks of a radio link.

The network (:mod:`sim.network`) never talks to radio models directly; it asks a
:class:`LinkModel` for the serving cell, the SINR and the rate a client would get on a given
bandwidth. Rates are piecewise constant: a link model may change them only at multiples of
``block_s`` (its fading block). For the transfers it plans, the network asks for many blocks
at once (:meth:`LinkModel.plan_blocks`: full-band rates of a pool's clients over the next
blocks, and where a handover cuts them short); a link model that can only answer for the
current block says so by returning one block, and is then asked again at the next.

Two forms of every query: vectorised over clients (``rate_bps``, ``sinr_db``: selection,
predictions for many clients) and scalar (``rate_of``, ``sinr_db_of``: the transfer
engine's per-event path, where a MAC share touches 1–10 flows and numpy's per-call cost
exceeds the arithmetic). Both must agree; the defaults derive the scalar form from the
vectorised one.

Two implementations live here, small and deterministic, for kernel tests and teaching:

- :class:`TableLink`: rates (and serving cells) given per block by a table — a constant
  link, a two-rate link, a handover at a known block, an outage (rate 0); it plans every
  row of its table at once.

The radio-backed implementation is :class:`sim.radio.RadioLink` (channel/ models).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LinkModel", "LinkBlocks", "TableLink", "UP", "DOWN"]

UP = "up"
DOWN = "down"


@dataclass
class LinkBlocks:
    """What a link will do for some clients, in one direction, over the next H fading blocks.

    Attributes:
        clients: (m,) int64 client ids, in the order asked.
        edges_s: (H + 1,) float64 times, s: the plan's start (now), the starts of its
            later blocks, and the end of the last one (``inf``: the rates hold forever).
        full_bps: [m, H] float64 rate of each client alone on its cell's whole band.
        sinr_db: [m, H] float64 full-band SINR, dB.
        handover: (m,) int64 index h of the first block at whose start the client's
            serving cell changes (0: it is due now), H when none within the plan.
        data: what the link needs to answer :meth:`LinkModel.sub_rates` (private to it).
    """

    clients: np.ndarray
    edges_s: np.ndarray
    full_bps: np.ndarray
    sinr_db: np.ndarray
    handover: np.ndarray
    data: Any = None


class LinkModel(ABC):
    """The radio side as seen by the transfer engine.

    Attributes:
        n_cells: number of cells (base stations or sectors).
        n_clients: number of clients (UEs).
        block_s: rates change only at multiples of this time (s); ``math.inf`` if never.
        serving: (n_clients,) int64, current serving cell of every client (as of the last
            :meth:`refresh` that included it).
    """

    n_cells: int
    n_clients: int
    block_s: float = math.inf
    serving: np.ndarray

    @abstractmethod
    def refresh(
        self, t_s: float, clients, transmitting_up: np.ndarray,
        transmitting_down: np.ndarray,
    ) -> list[tuple[int, int, int]]:
        """Bring ``clients`` to the block containing ``t_s``; return handovers.

        Args:
            t_s: simulated time, s (non-decreasing across calls).
            clients: (m,) int64 array or list of ints, client ids that matter now.
            transmitting_up: (n_clients,) bool, clients with an active uplink flow
                (co-channel uplink interferers).
            transmitting_down: (n_cells,) bool, cells with an active downlink flow.

        Returns:
            ``[(client, old_cell, new_cell), ...]`` for the clients whose serving cell
            changed, in ascending client order.
        """

    @abstractmethod
    def sinr_db(self, clients: np.ndarray, direction: str) -> np.ndarray:
        """(m,) float64 full-band SINR (dB) of ``clients`` in ``direction`` ('up'/'down')."""

    @abstractmethod
    def rate_bps(
        self, clients: np.ndarray, direction: str, bandwidth_hz: np.ndarray,
        cell_bandwidth_hz: np.ndarray,
    ) -> np.ndarray:
        """(m,) float64 rate (bit/s) of each client using ``bandwidth_hz`` of its cell's band.

        ``cell_bandwidth_hz`` is the whole band of each client's cell (the SINR above is
        measured over it). 0 means outage.
        """


    def full_rate_bps(self, clients: np.ndarray, direction: str, cell_bandwidth_hz) -> np.ndarray:
        """(m,) rate (bit/s) of ``clients`` alone on the whole band ``cell_bandwidth_hz``
        (scalar or (m,), Hz). The default calls :meth:`rate_bps`."""
        bw = np.broadcast_to(np.asarray(cell_bandwidth_hz, dtype=np.float64), (len(clients),))
        return self.rate_bps(clients, direction, bw, bw)

    def block_index(self, t_s: float) -> int:
        """The block containing ``t_s`` (0 for a link that never changes)."""
        if math.isinf(self.block_s):
            return 0
        return int(math.floor(t_s / self.block_s + 1e-9))

    def rate_of(self, client: int, direction: str, bandwidth_hz: float,
                cell_bandwidth_hz: float) -> float:
        """Scalar :meth:`rate_bps` of one client (bit/s), for the per-event path."""
        return float(self.rate_bps(np.array([client]), direction, np.array([bandwidth_hz]),
                                   np.array([cell_bandwidth_hz]))[0])

    def rates_of(self, clients: list[int], direction: str, fractions: list[float] | None,
                 cell_bandwidth_hz: float) -> list[float]:
        """:meth:`rate_of` of each client using ``fraction · cell_bandwidth_hz`` of its
        cell's band (``fractions`` None: the whole band), as Python floats."""
        b = cell_bandwidth_hz
        if fractions is None:
            return [self.rate_of(c, direction, b, b) for c in clients]
        return [self.rate_of(c, direction, f * b, b) for c, f in zip(clients, fractions)]

    def sinr_db_of(self, client: int, direction: str) -> float:
        """Scalar :meth:`sinr_db` of one client (dB)."""
        return float(self.sinr_db(np.array([client]), direction)[0])

    # -- planning (the transfer engine asks for many blocks at once) ----------------------
    def plan_blocks(self, t_s: float, clients, direction: str, cell: int, cell_bandwidth_hz: float,
                    transmitting_up: np.ndarray, transmitting_down: np.ndarray) -> LinkBlocks:
        """The next blocks of ``clients`` (all served by ``cell``), from ``t_s`` on.

        The default answers for the current block only, from the state of the last
        :meth:`refresh` of these clients (the network refreshes a pool's clients at each
        block it wakes up in): one block, ending at the next multiple of ``block_s``.
        """
        c = np.asarray(clients, dtype=np.int64)
        bw = np.full(c.size, float(cell_bandwidth_hz))
        full = np.asarray(self.full_rate_bps(c, direction, bw), dtype=np.float64)[:, None]
        sinr = np.asarray(self.sinr_db(c, direction), dtype=np.float64)[:, None]
        end = math.inf if math.isinf(self.block_s) else (self.block_index(t_s) + 1) * self.block_s
        return LinkBlocks(c, np.array([float(t_s), end]), full, sinr, np.ones(c.size, dtype=np.int64))

    def sub_rates(self, blocks: LinkBlocks, direction: str, fractions: np.ndarray,
                  cell_bandwidth_hz: float) -> np.ndarray:
        """[m, H] rate (bit/s) of each client of ``blocks`` using ``fractions`` [m, H] (in
        (0, 1]) of its cell's band in each block. The default asks :meth:`rate_bps` per block."""
        b = float(cell_bandwidth_hz)
        out = np.empty(fractions.shape)
        for h in range(fractions.shape[1]):
            out[:, h] = self.rate_bps(blocks.clients, direction, fractions[:, h] * b,
                                      np.full(blocks.clients.size, b))
        return out

    def set_held(self, client: int, held: bool) -> None:
        """The network's note that ``client`` takes part in the current round (``held``) or
        no longer does: a link may evaluate such clients together with the transferring
        ones, so that their transfers find their channel ready. The default ignores it."""

    def set_active(self, client: int, active: bool, t_s: float) -> list[tuple[int, int, int]]:
        """The network's note that ``client`` starts (``active``) or stops having transfers
        at ``t_s``; returns handovers found on the way, as :meth:`refresh` does. A link whose
        state depends on activity (association evaluated while a client transfers) uses it;
        the default ignores it."""
        return []


class TableLink(LinkModel):
    """Rates and serving cells given per block by tables — exact, for tests and teaching.

    Args:
        rates_bps: full-band rate per client, (n_clients,) for a constant link or
            (n_blocks, n_clients) for one row per block (the last row holds afterwards).
            The same table serves both directions unless ``rates_down_bps`` is given.
        cells: serving cell per client, (n_clients,) or (n_blocks, n_clients); default 0.
        block_s: block duration, s (``inf`` for a constant link).
        rates_down_bps: optional downlink table, same shapes as ``rates_bps``.
        sinr_db: optional SINR table (dB), same shapes; default 10·log10(rate / 1 Mbit/s).

    A client using bandwidth b of its cell's band B gets ``rate · b / B`` (linear sharing).
    """

    def __init__(self, rates_bps, cells=None, block_s: float = math.inf, rates_down_bps=None,
                 sinr_db=None) -> None:
        self._up = np.atleast_2d(np.asarray(rates_bps, dtype=np.float64))
        self._down = (self._up if rates_down_bps is None
                      else np.atleast_2d(np.asarray(rates_down_bps, dtype=np.float64)))
        self.n_clients = self._up.shape[1]
        cells = np.zeros(self.n_clients, dtype=np.int64) if cells is None else cells
        self._cells = np.atleast_2d(np.asarray(cells, dtype=np.int64))
        if sinr_db is None:
            with np.errstate(divide="ignore"):
                sinr_db = 10.0 * np.log10(np.maximum(self._up, 1e-300) / 1e6)
        self._sinr = np.atleast_2d(np.asarray(sinr_db, dtype=np.float64))
        if not block_s > 0:
            raise ValueError(f"TableLink.block_s must be > 0. Got {block_s!r} instead.")
        self.block_s = float(block_s)
        self.n_cells = int(self._cells.max()) + 1
        self.serving = self._cells[0].copy()
        self._block = np.zeros(self.n_clients, dtype=np.int64)  # block each client is at

    def _row(self, table: np.ndarray, blocks: np.ndarray, clients: np.ndarray) -> np.ndarray:
        return table[np.minimum(blocks, table.shape[0] - 1), clients]

    def refresh(self, t_s, clients, transmitting_up=None, transmitting_down=None):
        clients = np.asarray(clients, dtype=np.int64)
        b = 0 if math.isinf(self.block_s) else int(math.floor(t_s / self.block_s + 1e-9))
        self._block[clients] = b
        new = self._row(self._cells, self._block[clients], clients)
        old = self.serving[clients]
        moved = np.nonzero(new != old)[0]
        self.serving[clients] = new
        return [(int(clients[i]), int(old[i]), int(new[i])) for i in moved]

    def sinr_db(self, clients, direction):
        clients = np.asarray(clients, dtype=np.int64)
        return self._row(self._sinr, self._block[clients], clients)

    def rate_bps(self, clients, direction, bandwidth_hz, cell_bandwidth_hz):
        clients = np.asarray(clients, dtype=np.int64)
        table = self._up if direction == UP else self._down
        full = self._row(table, self._block[clients], clients)
        return full * (np.asarray(bandwidth_hz, dtype=np.float64)
                       / np.asarray(cell_bandwidth_hz, dtype=np.float64))

    def rate_of(self, client, direction, bandwidth_hz, cell_bandwidth_hz):
        table = self._up if direction == UP else self._down
        full = float(table[min(int(self._block[client]), table.shape[0] - 1), client])
        return full * (bandwidth_hz / cell_bandwidth_hz)

    def sinr_db_of(self, client, direction):
        return float(self._sinr[min(int(self._block[client]), self._sinr.shape[0] - 1), client])

    def plan_blocks(self, t_s, clients, direction, cell, cell_bandwidth_hz, transmitting_up=None,
                    transmitting_down=None):
        """Every remaining row of the tables at once (the last row holds forever)."""
        c = np.asarray(clients, dtype=np.int64)
        table = self._up if direction == UP else self._down
        if math.isinf(self.block_s):
            k0, rows = 0, 1
        else:
            k0 = int(math.floor(t_s / self.block_s + 1e-9))
            last = max(table.shape[0], self._cells.shape[0], self._sinr.shape[0]) - 1
            rows = max(last - k0, 0) + 1  # blocks k0 .. last; the last one lasts forever
        k = np.arange(k0, k0 + rows)
        edges = np.empty(rows + 1)
        edges[0] = float(t_s)
        edges[1:rows] = k[1:] * self.block_s
        edges[rows] = math.inf
        full = self._row(table, k[None, :], c[:, None])  # [m, H]
        sinr = self._row(self._sinr, k[None, :], c[:, None])
        moved = self._row(self._cells, k[None, :], c[:, None]) != self.serving[c][:, None]
        handover = np.where(moved.any(axis=1), np.argmax(moved, axis=1), rows)
        return LinkBlocks(c, edges, full, sinr, handover.astype(np.int64))

    def sub_rates(self, blocks, direction, fractions, cell_bandwidth_hz):
        return blocks.full_bps * fractions  # linear sharing

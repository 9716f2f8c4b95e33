"""The event trace: a collector kept out of the model code.

Model code calls :meth:`Tracer.record`; nothing else. The tracer stores rows as tuples and
builds the ``events.parquet`` table once, at the end.

``events.parquet`` columns (null where not applicable):

============== ======= ===========================================================
column         type    meaning
============== ======= ===========================================================
t_s            float64 simulated time of the event, seconds
event          string  event kind (table below)
round          int64   round (sync) or global-model version at dispatch (async)
client         int64   client (UE) id
cell           int64   serving cell (base station / sector) id
direction      string  ``up`` (client -> server) or ``down`` (server -> client)
bits           int64   payload size of the transfer, bits
bits_delivered float64 bits that crossed the radio link (partial on failure)
snr_db         float64 full-band SINR of the client's link at the event, dB
rate_bps       float64 ``send_start``: initial rate; ``send_end``/``send_failed``:
                       mean rate over the transfer; otherwise the link rate, bit/s
capacity_bits  float64 capacity estimate handed to the payload sizer, bits
k              int64   top-k (or other size knob) the sizer chose
energy_j       float64 energy of this step (tx, rx or compute), joules
detail         string  free text: failure reason, action label, handover origin
============== ======= ===========================================================

``event`` values:

==================== ==============================================================
event                when
==================== ==============================================================
round_start          a round (sync) or aggregation period (async) begins
selected             a client is selected (one row per client)
send_start           a radio transfer starts (``direction`` up or down)
send_end             a radio transfer completes
send_failed          a radio transfer is interrupted (``detail``: deadline, outage,
                     dropout); ``bits_delivered`` holds the partial bits
wired_end            a message finished its wired (backhaul) path; for uplink this
                     is the arrival at the aggregator
compute_start        local computation starts on the device
compute_end          local computation ends (``energy_j``: compute energy)
compute_cut          a computation is cut short by a deadline, a drop-out or the end of the
                     run (``duration_s``); ``energy_j``: the energy spent until then
server_compute_start server-side computation starts (queued service excluded)
server_compute_end   server-side computation ends
handover             the client's serving cell changed (``cell``: new cell,
                     ``detail``: ``from <old cell>``); seen when the client's link is
                     evaluated: every fading block while it takes part in a round,
                     otherwise when the driver asks about it (selection, a transfer)
outage_start         a transfer's link rate dropped to zero (SINR below the lowest
                     rate-mapping threshold)
outage_end           the link left outage
dropout              a client dropped out of its round
client_done          a client's round generator returned (update delivered)
client_failed        a client failed (``detail``: reason, stage)
stale_discarded      async: an update older than ``max_staleness`` was discarded
edge_sync            hierarchical: an edge server got the global model (``detail``:
                     edge node) or delivered its partial aggregate to the cloud
aggregate            the server aggregated (``bits``: total update bits used)
round_failed         fewer than ``min_updates`` updates arrived; no aggregation
evaluate             the global model was evaluated
round_end            the round ends
==================== ==============================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["Tracer", "EVENT_COLUMNS", "EVENT_KINDS"]

EVENT_COLUMNS: tuple[str, ...] = (
    "t_s", "event", "round", "client", "cell", "direction", "bits", "bits_delivered",
    "snr_db", "rate_bps", "capacity_bits", "k", "energy_j", "detail",
)

EVENT_KINDS: tuple[str, ...] = (
    "round_start", "selected", "send_start", "send_end", "send_failed", "wired_end",
    "compute_start", "compute_end", "compute_cut", "server_compute_start", "server_compute_end",
    "handover", "outage_start", "outage_end", "dropout", "client_done", "client_failed",
    "stale_discarded", "edge_sync", "aggregate", "round_failed", "evaluate", "round_end",
)

_TYPES = {
    "t_s": "float64", "event": "string", "round": "int64", "client": "int64", "cell": "int64",
    "direction": "string", "bits": "int64", "bits_delivered": "float64", "snr_db": "float64",
    "rate_bps": "float64", "capacity_bits": "float64", "k": "int64", "energy_j": "float64",
    "detail": "string",
}


class Tracer:
    """Collects event rows; ``enabled=False`` makes :meth:`record` a no-op."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows: list[tuple] = []

    def record(
        self,
        t_s: float,
        event: str,
        round: int | None = None,  # noqa: A002  (the column's name)
        client: int | None = None,
        cell: int | None = None,
        direction: str | None = None,
        bits: int | None = None,
        bits_delivered: float | None = None,
        snr_db: float | None = None,
        rate_bps: float | None = None,
        capacity_bits: float | None = None,
        k: int | None = None,
        energy_j: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Append one row (see the module docstring for the meaning of each column)."""
        if self.enabled:
            self.rows.append((t_s, event, round, client, cell, direction, bits, bits_delivered,
                              snr_db, rate_bps, capacity_bits, k, energy_j, detail))

    def __len__(self) -> int:
        return len(self.rows)

    def events(self) -> list[tuple[str, float]]:
        """``(event, t_s)`` pairs in order (for trace tests)."""
        return [(r[1], r[0]) for r in self.rows]

    def to_arrow(self) -> Any:
        """The trace as a ``pyarrow.Table`` with the documented schema."""
        import pyarrow as pa

        cols = list(zip(*self.rows)) if self.rows else [()] * len(EVENT_COLUMNS)
        arrays = []
        for name, values in zip(EVENT_COLUMNS, cols):
            typ = _TYPES[name]
            pa_type = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}[typ]
            if typ == "float64":
                values = [None if v is None else float(v) for v in values]
            elif typ == "int64":
                values = [None if v is None else int(v) for v in values]
            arrays.append(pa.array(values, type=pa_type))
        return pa.Table.from_arrays(arrays, names=list(EVENT_COLUMNS))

    def to_frame(self) -> Any:
        """The trace as a pandas DataFrame (nullable dtypes)."""
        return self.to_arrow().to_pandas(types_mapper=None)

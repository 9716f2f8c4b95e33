"""Resource sense: what a scenario will need in memory, known before anything is allocated.

The kernel keeps per-client state (position, mobility, fading, shadowing, association, energy
account, ...) and per client-cell link state; a checkpoint holds a copy of it while being
written. The figures below were measured (tracemalloc, surrogate scenarios, 2,000-200,000
clients, 1 and 21 cells: about 3.2 kB per client and 60 B per client-cell link over a whole
run) and rounded up, so the estimate errs on the generous side.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["n_cells_of", "estimate_memory_bytes", "available_memory_bytes", "memory_problems"]

BYTES_PER_CLIENT = 4_000
BYTES_PER_LINK = 80  # per client and cell
CHECKPOINT_FACTOR = 2.0  # the state plus its encoded copy while a checkpoint is written
BASE_BYTES = 300 << 20  # the interpreter, numpy, pandas, simpy and friends


def n_cells_of(layout: Any) -> int:
    """Cells of a layout spec (sites × sectors), without building it."""
    sectors = int(getattr(layout, "n_sectors", 1) or 1)
    kind = getattr(layout, "kind", "single_cell")
    if kind == "hex_grid":
        n = int(getattr(layout, "n_rings", 1))
        return (1 + 3 * n * (n + 1)) * sectors
    if kind == "explicit":
        return len(getattr(layout, "sites_xy_m", ()) or ()) * sectors
    return sectors


def estimate_memory_bytes(n_clients: int, n_cells: int, checkpoint: bool) -> int:
    """Bytes a run of ``n_clients`` clients over ``n_cells`` cells needs (generous)."""
    state = n_clients * (BYTES_PER_CLIENT + BYTES_PER_LINK * n_cells)
    return int(BASE_BYTES + state * (CHECKPOINT_FACTOR if checkpoint else 1.0))


def available_memory_bytes() -> int | None:
    """Memory this process can still use: MemAvailable (Linux), else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def memory_problems(scn: Any, available: int | None = None) -> list[str]:
    """Error lines (key path, estimate, fix) if the scenario cannot fit in memory here."""
    available = available_memory_bytes() if available is None else available
    if available is None:
        return []
    n, cells = int(scn.clients.n_clients), n_cells_of(scn.network.layout)
    checkpoint = scn.fl.driver == "sync"
    need = estimate_memory_bytes(n, cells, checkpoint)
    if need <= available:
        return []
    return [f"clients.n_clients: {n:,} clients over {cells} cells need about {need / 2**30:.1f} GiB "
            f"of memory ({BYTES_PER_CLIENT} B per client + {BYTES_PER_LINK} B per client-cell link"
            + (", twice while a checkpoint is written" if checkpoint else "")
            + f"); this machine has {available / 2**30:.1f} GiB available. Fix: fewer clients or "
            "cells, or a machine with more memory."]

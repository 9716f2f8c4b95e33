"""Audit of the history-free channel at scale: every gain the simulator reads equals the
gain a pristine channel computes for that client alone.

The channel is meant to be a function of (seed, client, link, position, time): whatever the
simulator evaluated before, in whatever batch, a client's gains at a block are the same bits.
The tests check it on small scenarios; this script checks it where caches fill and wrap —
bench/sim_throughput.py's 21-cell scenario at many clients and rounds. During the run it
samples the link's reads of its chunk cache (``RadioLink._gains``: the rows a plan, an
interference sum or an association look-ahead uses) and of single blocks
(``RadioLink._block``), and recomputes each sampled read with a fresh copy of the channel
as it was before the run (``gains_over`` for those clients and blocks only, nothing asked
before). Exact equality (``np.array_equal``) is required.

Prints ``history-free audit: N reads checked, M differ`` and exits 1 if M > 0.

Run: ``python bench/crn_audit.py`` (default 10,000 clients, 7 rounds: about 7,000 distinct
clients, more than the 4,096 the channel's parameter rings hold; ~30 s).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sim.simulation import Simulation  # noqa: E402
from sim_throughput import scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sample", type=float, default=0.02, help="fraction of reads recomputed")
    ap.add_argument("--seed", type=int, default=0, help="which reads are sampled")
    args = ap.parse_args()

    sim = Simulation(scenario(args.clients, max(1, args.clients // 10), args.rounds), trace=False)
    link = sim.link
    pristine = copy.deepcopy(link.channel)  # its caches are not copied: nothing asked yet
    rng = np.random.default_rng(args.seed)
    counts = {"reads": 0, "checked": 0, "differ": 0}
    first_bad: list[str] = []

    def fresh(clients, k0, k1):
        blocks = np.arange(k0, k1)
        xy = link._positions_at(blocks * link.block_s, clients)
        return copy.deepcopy(pristine).gains_over(blocks, xy, clients)

    def verdict(ok: bool, what: str) -> None:
        counts["checked"] += 1
        if not ok:
            counts["differ"] += 1
            if not first_bad:
                first_bad.append(what)

    gains, block = link._gains, link._block

    def audited_gains(clients, k0, k1, cell=None):
        out = gains(clients, k0, k1, cell)
        counts["reads"] += 1
        if rng.random() < args.sample:
            lin, ls = fresh(clients, k0, k1)
            ok = np.array_equal(lin[:, cell, :], out) if cell is not None else (
                np.array_equal(lin, out[0]) and np.array_equal(ls, out[1]))
            verdict(ok, f"_gains of {clients.size} clients, blocks [{k0}, {k1}), cell {cell}")
        return out

    def audited_block(clients, k):
        lin, ls = block(clients, k)
        counts["reads"] += 1
        if rng.random() < args.sample:
            g, l_db = fresh(clients, k, k + 1)
            verdict(np.array_equal(g[:, :, 0], lin) and np.array_equal(l_db[:, :, 0], ls),
                    f"_block of {clients.size} clients at block {k}")
        return lin, ls

    link._gains, link._block = audited_gains, audited_block
    sim.run()
    print(f"scenario: {args.clients} clients, {max(1, args.clients // 10)} per round, {args.rounds} rounds, "
          f"21 cells; {link.n_evaluated} client-blocks evaluated")
    if first_bad:
        print(f"first read that differs: {first_bad[0]}")
    print(f"history-free audit: {counts['checked']} reads checked, {counts['differ']} differ "
          f"(of {counts['reads']} reads)")
    return 1 if counts["differ"] else 0


if __name__ == "__main__":
    sys.exit(main())

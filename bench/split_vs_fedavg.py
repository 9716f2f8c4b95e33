"""split_lora against fedavg_lora on the same scenario: bits, client FLOPs, time per step.

Runs ``scenarios/split_lora.yaml`` (or ``--scenario``) twice through the simulator, once
with ``split_lora`` and once with ``fedavg_lora`` (same model, data, LoRA, local steps,
batch size, seed and radio; the split-only options are dropped for fedavg), then prints::

    algorithm  bits up/round  bits down/round  client FLOPs/round  server FLOPs/round
               time/local step (s)  round time (s)  accuracy

and writes a figure with two panels: (a) split_lora's time per local step against the
SNR of that step's activation upload (from events.parquet: each step is a round trip on
the client's link, so a fade stretches it); (b) bits per round, uplink and downlink, of
both algorithms.

Client FLOPs are counted from the ``Compute`` actions that completed (``ServerCompute``
for the server), through a thin proxy around the algorithm. Time per local step: for
split_lora, from a step's ``client_fwd`` compute start to its ``client_bwd`` compute end
(airtime and server time included); for fedavg_lora, the local training compute time
divided by ``local_steps`` (its transfers happen once per round, not per step).

Usage::

    python bench/split_vs_fedavg.py --quick   # tiny 4-layer model, 2 rounds (a minute)
    python bench/split_vs_fedavg.py           # the scenario as written: SmolLM2 (minutes)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fl.core.actions import Compute, ServerCompute  # noqa: E402
from fl.core.algorithm import Algorithm, AlgorithmContext, get_algorithm  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402
from sim.simulation import Simulation  # noqa: E402

SPLIT_ONLY = ("cut_layer", "activation_dtype", "gradient_dtype", "client_weighting", "partial")
QUICK = [
    "fl.options.model={kind: tiny, n_layers: 4}",
    "fl.rounds=2",
    "fl.options.data={dataset: fortunes, max_per_class: 40, max_len: 96, n_test: 12}",
]


class Tally(Algorithm):
    """A proxy that counts the FLOPs of the compute actions that completed, per round."""

    def __init__(self, inner: Algorithm) -> None:
        super().__init__(inner.config, inner.context)
        self.inner = inner
        self.name = inner.name
        self.client_flops: dict[int, float] = defaultdict(float)
        self.server_flops: dict[int, float] = defaultdict(float)

    def n_samples(self, client):
        return self.inner.n_samples(client)

    def client_round(self, rnd, client):
        gen = self.inner.client_round(rnd, client)
        value = None
        try:
            while True:
                try:
                    action = gen.send(value)
                except StopIteration as stop:
                    return stop.value
                value = yield action
                if isinstance(action, Compute):  # counted once the computation completed
                    self.client_flops[rnd] += action.flops
                elif isinstance(action, ServerCompute):
                    self.server_flops[rnd] += action.flops
        finally:
            gen.close()

    def server_round(self, rnd, results, failures):
        return self.inner.server_round(rnd, results, failures)

    def aggregate(self, rnd, results, failures):
        return self.inner.aggregate(rnd, results, failures)

    def evaluate(self, rnd):
        return self.inner.evaluate(rnd)

    def close(self):
        self.inner.close()


def run(scenario, algorithm: str):
    """Simulate ``scenario`` with ``algorithm``; returns (rounds, events, tally, algorithm)."""
    options = scenario.fl.options.model_dump(exclude_unset=True)  # the options given
    if algorithm != "split_lora":
        options = {k: v for k, v in options.items() if k not in SPLIT_ONLY}
    cls = get_algorithm(algorithm)
    inner = cls(cls.Config(**options), AlgorithmContext(n_clients=scenario.clients.n_clients, seed=scenario.seed))
    tally = Tally(inner)
    res = Simulation(scenario, algorithm=tally).run()
    return res.rounds, res.tracer.to_frame(), tally, inner


def split_steps(events):
    """One row per completed split step: client, round, duration (s), SNR of its activation
    upload (dB)."""
    rows = []
    for (rnd, client), ev in events[events["client"].notna()].groupby(["round", "client"], sort=True):
        fwd = ev[(ev["event"] == "compute_start") & (ev["detail"] == "client_fwd")]["t_s"].to_numpy()
        bwd = ev[(ev["event"] == "compute_end") & (ev["detail"] == "client_bwd")]["t_s"].to_numpy()
        snr = ev[(ev["event"] == "send_start") & (ev["detail"] == "activations")]["snr_db"].to_numpy()
        for i in range(len(bwd)):
            rows.append((int(rnd), int(client), float(bwd[i] - fwd[i]), float(snr[i])))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def fedavg_step_time(events, local_steps: int) -> float:
    start = events[(events["event"] == "compute_start") & (events["detail"] == "train")]
    end = events[(events["event"] == "compute_end") & (events["detail"] == "train")]
    a = start.sort_values(["round", "client"])["t_s"].to_numpy()
    b = end.sort_values(["round", "client"])["t_s"].to_numpy()
    n = min(len(a), len(b))
    return float(np.mean(b[:n] - a[:n]) / local_steps) if n else math.nan


def summarise(name, rounds, events, tally, local_steps):
    n_rounds = len(rounds)
    n_done = max(float(rounds["n_completed"].sum() + rounds.get("n_partial", 0 * rounds["n_completed"]).sum()), 1.0)
    if name == "split_lora":
        steps = split_steps(events)
        step_time = float(steps[:, 2].mean()) if len(steps) else math.nan
    else:
        step_time = fedavg_step_time(events, local_steps)
    acc = rounds["accuracy"].dropna()
    return {
        "algorithm": name,
        "bits_up": float(rounds["bits_up"].mean()),
        "bits_down": float(rounds["bits_down"].mean()),
        "client_flops": sum(tally.client_flops.values()) / n_rounds,
        "client_flops_per_client": sum(tally.client_flops.values()) / n_done,
        "server_flops": sum(tally.server_flops.values()) / n_rounds,
        "step_time_s": step_time,
        "round_time_s": float((rounds["t_end_s"] - rounds["t_start_s"]).mean()),
        "accuracy": float(acc.iloc[-1]) if len(acc) else math.nan,
    }


def print_table(rows) -> None:
    cols = [("algorithm", "algorithm", "{:<12}"), ("bits_up", "bits up/round", "{:>15.4g}"),
            ("bits_down", "bits down/round", "{:>15.4g}"),
            ("client_flops_per_client", "client FLOPs/client", "{:>19.4g}"),
            ("server_flops", "server FLOPs/round", "{:>18.4g}"), ("step_time_s", "s/local step", "{:>12.4g}"),
            ("round_time_s", "s/round", "{:>9.4g}"), ("accuracy", "accuracy", "{:>8.3f}")]
    widths = [len(f.format("" if c == "algorithm" else 0.0)) for c, _, f in cols]
    print("  ".join(h.ljust(w) if c == "algorithm" else h.rjust(w) for (c, h, _), w in zip(cols, widths)))
    for r in rows:
        print("  ".join(f.format(r[c]) for c, _, f in cols))


def figure(path: Path, steps, rows, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k, client in enumerate(np.unique(steps[:, 1]) if len(steps) else []):
        mine = steps[steps[:, 1] == client]
        a.scatter(mine[:, 3], mine[:, 2], s=22, color=f"C{k % 10}", label=f"client {int(client)}")
    if len(steps):
        a.legend(fontsize=8)
    a.set_xlabel("SNR of the step's activation upload (dB)")
    a.set_ylabel("time per local step (s)")
    a.set_title("split_lora: every step is a round trip on the link")
    a.grid(alpha=0.3)
    x = np.arange(len(rows))
    up = [r["bits_up"] / 1e6 for r in rows]
    down = [r["bits_down"] / 1e6 for r in rows]
    b.bar(x - 0.2, up, 0.4, label="uplink")
    b.bar(x + 0.2, down, 0.4, label="downlink")
    b.set_xticks(x, [r["algorithm"] for r in rows])
    b.set_ylabel("Mbit per round")
    b.set_title("communication per round")
    b.legend()
    b.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "split_lora.yaml"))
    ap.add_argument("--quick", action="store_true", help="tiny 4-layer model, 2 rounds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value")
    ap.add_argument("--figure", default=str(ROOT / "bench" / "figures" / "split_vs_fedavg.png"))
    args = ap.parse_args(argv)

    # no deadline by default: fedavg's local training alone outlasts split_lora's round
    # deadline (a fedavg round would never aggregate); --set fl.deadline_s=... restores one
    scenario = load_scenario(args.scenario, ["fl.deadline_s=null"] + (QUICK if args.quick else []) + args.overrides)
    opts = scenario.fl.options.model_dump(exclude_unset=True)
    local_steps = int(opts.get("local_steps", 5))
    rows, steps = [], None
    for name in ("split_lora", "fedavg_lora"):
        rounds, events, tally, _ = run(scenario, name)
        rows.append(summarise(name, rounds, events, tally, local_steps))
        if name == "split_lora":
            steps = split_steps(events)
    model = opts.get("model", "smollm2")
    title = (f"{scenario.name}: model {model if isinstance(model, str) else model.get('kind', 'pretrained')}, "
             f"cut_layer {opts.get('cut_layer', 2)}, {local_steps} local steps of {opts.get('batch_size', 8)}")
    print(title)
    print_table(rows)
    if len(steps):
        print(f"split_lora steps: {len(steps)}, time per step {steps[:, 2].min():.3g} .. {steps[:, 2].max():.3g} s, "
              f"SNR {steps[:, 3].min():.1f} .. {steps[:, 3].max():.1f} dB, "
              f"corr(time, SNR) = {np.corrcoef(steps[:, 2], steps[:, 3])[0, 1]:+.2f}")
    figure(Path(args.figure), steps, rows, title)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()

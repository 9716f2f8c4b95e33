"""fedsoda against fedavg_lora (full model) on the same scenario: bits, storage, accuracy, time.

Runs ``scenarios/fedsoda.yaml`` (or ``--scenario``) twice through the simulator, once with
``fedsoda`` and once with ``fedavg_lora`` on the full model (same model, data, LoRA, local
steps, batch size, seed and radio; the fedsoda-only options are dropped for fedavg), and
prints one row per algorithm::

    algorithm  kept layers  up Mbit/round  down Mbit/round  adapter Mbit/client  sub-model Mbit (once)
               client storage MB  vs full fp16  accuracy  accuracy (full model)  t to target (s)

- communication: mean bits per round as the simulator moved them (uplink, downlink; the
  downlink includes the one-time model downloads: fedsoda's 4-bit sub-model, and for
  fedavg_lora the full fp16 base model, ``model_download: true``) and the adapter payload per
  client and direction (what travels every round after the first participation);
- client storage: fedsoda's 4-bit sub-model + 16-bit embeddings/norms + fp32 adapters;
  fedavg_lora's full model at 16 bits + fp32 adapters (the fp16 baseline);
- accuracy after the last round (fedsoda: adapters in the sub-model; and in the full model);
- simulated time (``t_end_s`` of the first round) at which accuracy reaches ``--target``
  (default: the lower of the two algorithms' best accuracies, so both reach it), or nan.

Usage::

    python bench/fedsoda_vs_fedavg.py --quick   # tiny 6-layer model, 2 rounds
    python bench/fedsoda_vs_fedavg.py           # the scenario as written: SmolLM2 (minutes)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fl.algorithm import AlgorithmContext, get_algorithm  # noqa: E402
from fl.fedsoda import FedSODAConfig  # noqa: E402
from fl.fedavg_lora import FedAvgLoRAConfig  # noqa: E402
from fl.models import count_parameters, count_trainable  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402
from sim.simulation import Simulation  # noqa: E402

SODA_ONLY = tuple(sorted(set(FedSODAConfig.model_fields) - set(FedAvgLoRAConfig.model_fields)))
QUICK = [
    "fl.options.model={kind: tiny, n_layers: 6}",
    "fl.options.sgp_keep=4",
    "fl.rounds=2",
    "fl.options.data={dataset: fortunes, max_per_class: 40, max_len: 96, n_test: 12, n_public: 16}",
]


def run(scenario, algorithm: str):
    """Simulate ``scenario`` with ``algorithm``; returns (rounds DataFrame, algorithm)."""
    options = scenario.fl.options.model_dump(exclude_unset=True)  # the options given
    if algorithm != "fedsoda":
        options = {k: v for k, v in options.items() if k not in SODA_ONLY}
        # symmetric with fedsoda's one-time sub-model download: the full fp16 base, once
        options.setdefault("model_download", True)
    cls = get_algorithm(algorithm)
    alg = cls(cls.Config(**options), AlgorithmContext(n_clients=scenario.clients.n_clients, seed=scenario.seed))
    res = Simulation(scenario, algorithm=alg).run()
    return res.rounds, alg


def summarise(name, rounds, alg):
    acc = rounds["accuracy"].dropna()
    row = {
        "algorithm": name,
        "kept": "all",
        "bits_up": float(rounds["bits_up"].mean()),
        "bits_down": float(rounds["bits_down"].mean()),
        "adapter_bits": float(alg.upload_bits),
        "submodel_bits": math.nan,
        "accuracy": float(acc.iloc[-1]) if len(acc) else math.nan,
        "accuracy_full": math.nan,
        "rounds": rounds,
    }
    if name == "fedsoda":
        st = alg.storage()
        row.update(kept=len(alg.kept), submodel_bits=float(alg.submodel_payload.bits),
                   storage=st["client_storage_bytes"], full_storage=st["full_fp16_storage_bytes"])
        if "accuracy_full" in rounds:
            full = rounds["accuracy_full"].dropna()
            row["accuracy_full"] = float(full.iloc[-1]) if len(full) else math.nan
    else:
        base = count_parameters(alg.model) - count_trainable(alg.model)
        row["storage"] = row["full_storage"] = 2 * base + 4 * count_trainable(alg.model)
        row["accuracy_full"] = row["accuracy"]
    return row


def time_to(rounds, target: float) -> float:
    hit = rounds[rounds["accuracy"] >= target - 1e-12]
    return float(hit["t_end_s"].iloc[0]) if len(hit) else math.nan


def print_table(rows, target: float) -> None:
    cols = [("algorithm", "algorithm", "{:<12}"), ("kept", "layers", "{:>6}"),
            ("up", "up Mbit/rnd", "{:>11.4g}"), ("down", "down Mbit/rnd", "{:>13.4g}"),
            ("adapter", "adapter Mbit", "{:>12.4g}"), ("sub", "sub-model Mbit", "{:>14.4g}"),
            ("storage_mb", "storage MB", "{:>10.4g}"), ("vs_full", "vs fp16 full", "{:>12.1%}"),
            ("accuracy", "accuracy", "{:>8.3f}"), ("accuracy_full", "acc (full)", "{:>10.3f}"),
            ("t_target", f"t to acc>={target:.3f} (s)", "{:>20.4g}")]
    for r in rows:
        r.update(up=r["bits_up"] / 1e6, down=r["bits_down"] / 1e6, adapter=r["adapter_bits"] / 1e6,
                 sub=r["submodel_bits"] / 1e6, storage_mb=r["storage"] / 1e6,
                 vs_full=r["storage"] / r["full_storage"] - 1.0, t_target=time_to(r["rounds"], target))
    widths = [max(len(h), len(f.format("" if c in ("algorithm", "kept") else 0.0))) for c, h, f in cols]
    print("  ".join(h.ljust(w) if c == "algorithm" else h.rjust(w) for (c, h, _), w in zip(cols, widths)))
    for r in rows:
        print("  ".join(f.format(r[c]).rjust(w) if c != "algorithm" else f.format(r[c]).ljust(w)
                        for (c, _, f), w in zip(cols, widths)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "fedsoda.yaml"))
    ap.add_argument("--quick", action="store_true", help="tiny 6-layer model (4 kept), 2 rounds")
    ap.add_argument("--target", type=float, default=None, help="accuracy target (default: see the docstring)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value")
    args = ap.parse_args(argv)

    scenario = load_scenario(args.scenario, (QUICK if args.quick else []) + args.overrides)
    rows = []
    for name in ("fedsoda", "fedavg_lora"):
        rounds, alg = run(scenario, name)
        rows.append(summarise(name, rounds, alg))
    target = args.target
    if target is None:
        target = min(float(r["rounds"]["accuracy"].max()) for r in rows)
    opts = scenario.fl.options.model_dump(exclude_unset=True)
    model = opts.get("model", "smollm2")
    print(f"{scenario.name}: model {model if isinstance(model, str) else model.get('kind', 'pretrained')}, "
          f"{scenario.fl.rounds} rounds x {scenario.fl.clients_per_round} clients, "
          f"{opts.get('local_steps', 5)} local steps of {opts.get('batch_size', 8)}")
    print_table(rows, target)
    soda, avg = rows
    def change(a, b):
        return f"{a / b - 1:+.1%}" if b else "nan"

    print(f"fedsoda relative to fedavg_lora: uplink/round {change(soda['bits_up'], avg['bits_up'])}, "
          f"downlink/round {change(soda['bits_down'], avg['bits_down'])} (incl. one-time sub-model), "
          f"adapter payload {change(soda['adapter_bits'], avg['adapter_bits'])}, "
          f"client storage {change(soda['storage'], avg['storage'])}, "
          f"accuracy {soda['accuracy'] - avg['accuracy']:+.3f} (sub-model), "
          f"{soda['accuracy_full'] - avg['accuracy']:+.3f} (full model)")
    for r in rows:
        cols = [c for c in ("round", "t_end_s", "bits_up", "bits_down", "divergence", "oda", "accuracy",
                            "accuracy_full") if c in r["rounds"]]
        print(f"\n{r['algorithm']} rounds:")
        print(r["rounds"][cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))


if __name__ == "__main__":
    main()

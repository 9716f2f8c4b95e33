"""The three frameworks of the comparison paper [P3] and fedsoda [P2] on one network: do they learn?

Runs ``scenarios/frameworks.yaml`` (or ``--scenario``) with fedavg_lora (FedLLM: parameter
sharing), kd_topk (KD-FedLLM: logit sharing; its accuracy is the server model's), split_lora
(Split-FedLLM) and fedsoda through ``fedwave compare``'s machinery
(:func:`sim.compare.run_compare`: the same network, seed, model, data split and LoRA; each
algorithm's own options from the scenario's ``fl.algorithm_options``), one run directory per
algorithm under ``--out`` with ``compare.csv``, ``compare_pairs.csv`` and
``latency_accuracy.png``, and prints per algorithm: final accuracy with its 95 % Wilson
interval, uplink and downlink bits per round, client compute (FLOPs per round, and per
client and round), simulated latency per round and wall time; the paired differences of
final accuracy between the algorithms (Newcombe's 95 % interval, the same test prompts);
then one line per learner::

    <algorithm>: final accuracy A [lo, hi] vs untrained U [lo, hi]: learns|does not learn

"learns" iff the lower bound of its final accuracy's interval lies above the upper bound of
the untrained model's. The untrained model is the full model before any training — the same
for all four (fedavg_lora's, split_lora's and kd_topk's first evaluations score it on the
same prompts); fedsoda's own first evaluation scores its pruned sub-model, printed beside it.
The last line::

    learners above the untrained model: N/4 in W min of wall time

W: the wall time of this invocation plus that of the variants ``--resume`` kept from an
earlier one (the issue's budget: ≤ 30 min at the default size on 2 CPU cores).

The test split is the largest balanced one the scenario's data allows (bench/benchlib.py;
``--n-test`` sets it): 137 prompts on frameworks.yaml, ±8 points at 50 % accuracy.

``--quick``: a tiny random 4-layer Llama with LoRA on its top 2 layers (split_lora cut after
layer 2, so that each side holds an adapted layer; fedsoda keeps 3 of the 4 layers), 2
rounds, a handful of steps: every path in well under a minute; its accuracies are those of
an untrained random model and mean nothing.

    python bench/frameworks.py                 # the default size (SmolLM2; see the budget above)
    python bench/frameworks.py --quick         # smoke run
    python bench/frameworks.py --resume        # keep the variants finished in --out
    python bench/frameworks.py --algorithms fedavg_lora,split_lora --set fl.rounds=4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import acc_text, default_n_test, n_test_note  # noqa: E402

SCENARIO = ROOT / "scenarios" / "frameworks.yaml"
ALGORITHMS = ("fedavg_lora", "kd_topk", "split_lora", "fedsoda")
#: the learners that start from the full model (their untrained evaluations are the same)
FULL_MODEL = ("fedavg_lora", "split_lora", "kd_topk")

QUICK = [
    "fl.options.model={kind: tiny, n_layers: 4}",
    "fl.options.lora.layers={top: 2}",
    "fl.rounds=2",
    "fl.options.data={dataset: fortunes, max_per_class: 40, max_chars: 160, max_len: 96, n_test: 12, "
    "n_public: 16}",
    "fl.options.local_steps=2",
    "fl.algorithm_options.split_lora.cut_layer=3",
    "fl.algorithm_options.fedsoda.sgp_keep=3",
    "fl.algorithm_options.fedsoda.oda_initial_steps=1",
    "fl.algorithm_options.kd_topk.warmup_steps=2",
    "fl.algorithm_options.kd_topk.server_steps=2",
    "fl.algorithm_options.kd_topk.public_batch_size=8",
]


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def summarise(row: dict, out: Path) -> dict:
    """One algorithm's numbers from its ``compare.csv`` row and its run directory."""
    from sim.outputs import read_rounds, read_summary

    run_dir = out / row["run_dir"]
    s = read_summary(run_dir)
    rounds = read_rounds(run_dir)
    tot = s.get("totals") or {}
    ini = s.get("initial") or {}
    n_rounds = max(len(rounds), 1)
    participations = max(int(rounds["n_selected"].sum()), 1)
    return {
        "algorithm": row["algorithm"], "run_dir": str(run_dir),
        "accuracy": row["final_accuracy"], "lo": row["final_accuracy_lo"], "hi": row["final_accuracy_hi"],
        "n_eval": row["n_eval"],
        "initial": ini.get("accuracy"), "initial_lo": ini.get("accuracy_lo"), "initial_hi": ini.get("accuracy_hi"),
        "bits_up": float(rounds["bits_up"].mean()), "bits_down": float(rounds["bits_down"].mean()),
        "client_flops_round": float(tot.get("client_flops", math.nan)) / n_rounds,
        "client_flops_client": float(tot.get("client_flops", math.nan)) / participations,
        "latency_s": _mean(rounds["t_end_s"] - rounds["t_start_s"]),
        "sim_time_s": row["simulated_time_s"], "t_target_s": row["time_to_target_s"],
        "wall_s": row["wall_time_s"], "storage": row["client_storage_bytes"],
    }


def untrained(rows: list[dict]) -> tuple[float, float, float, str]:
    """(accuracy, lo, hi, where from) of the untrained full model: the first evaluation of a
    learner that starts from it (see the module docstring); fedsoda's own when it ran alone."""
    for name in FULL_MODEL:
        r = next((r for r in rows if r["algorithm"] == name and r["initial"] is not None), None)
        if r is not None:
            return r["initial"], r["initial_lo"], r["initial_hi"], f"{name}'s first evaluation"
    r = next((r for r in rows if r["initial"] is not None), None)
    if r is None:
        return math.nan, math.nan, math.nan, "not evaluated"
    return r["initial"], r["initial_lo"], r["initial_hi"], f"{r['algorithm']}'s first evaluation"


def learns(r: dict, u_hi: float) -> bool:
    """The final interval's lower bound lies above the untrained model's upper bound."""
    return r["lo"] is not None and not math.isnan(u_hi) and r["lo"] > u_hi


def _num(v, scale: float = 1.0, fmt: str = "{:.4g}") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v / scale)


def print_table(rows: list[dict]) -> None:
    head = ["algorithm", "accuracy [95 % Wilson]", "Mbit up/round", "Mbit down/round",
            "client GFLOP/round", "GFLOP/client/round", "latency s/round", "sim time s", "storage MB",
            "wall s"]
    lines = [[r["algorithm"], acc_text(r["accuracy"], r["lo"], r["hi"]), _num(r["bits_up"], 1e6),
              _num(r["bits_down"], 1e6), _num(r["client_flops_round"], 1e9),
              _num(r["client_flops_client"], 1e9), _num(r["latency_s"]), _num(r["sim_time_s"]),
              _num(r["storage"], 1e6), _num(r["wall_s"], fmt="{:.0f}")] for r in rows]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for l in lines:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(l, widths))))


def print_pairs(pairs: list[dict]) -> None:
    print("paired differences of final accuracy, A − B, points on the same test prompts "
          "(Newcombe 95 %; McNemar p):")
    for p in pairs:
        if p["status"] != "paired":
            print(f"  {p['algorithm_a']} − {p['algorithm_b']}: not paired ({p['note']})")
            continue
        print(f"  {p['algorithm_a']} − {p['algorithm_b']}: {100 * p['difference']:+.1f} "
              f"[{100 * p['difference_lo']:+.1f}, {100 * p['difference_hi']:+.1f}] on {p['n_prompts']} "
              f"prompts; p = {p['mcnemar_p']:.3g}")


def main(argv: list[str] | None = None) -> int:
    from sim.compare import CompareSpec, run_compare
    from sim.outputs import RunDirError
    from sim.scenario import ScenarioError, load_scenario

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", type=Path, default=SCENARIO)
    ap.add_argument("--quick", action="store_true", help="tiny random model, 2 rounds (smoke run)")
    ap.add_argument("--out", type=Path, default=None,
                    help="comparison directory (default: runs/frameworks[-quick])")
    ap.add_argument("--resume", action="store_true", help="keep the variants that finished in --out "
                    "with the same scenario; go on with interrupted ones")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS),
                    help=f"comma-separated (default: {','.join(ALGORITHMS)})")
    ap.add_argument("--n-test", type=int, default=None,
                    help="test prompts (default: the most the scenario's data allows)")
    ap.add_argument("--backend", default="inline", choices=("inline", "process", "ray"),
                    help="fedwave compare's backends (default inline: one variant after another)")
    ap.add_argument("--workers", type=int, default=1, help="parallel variants (process/ray)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key.path=value, every variant")
    args = ap.parse_args(argv)
    if args.n_test is not None and args.n_test < 1:
        ap.error(f"--n-test must be >= 1; got {args.n_test}. Fix: a number of test prompts, or leave "
                 "it out (the most the data allows).")
    t0 = time.perf_counter()
    out = args.out or ROOT / "runs" / ("frameworks-quick" if args.quick else "frameworks")
    algorithms = tuple(a.strip() for a in args.algorithms.split(","))
    sets = (QUICK if args.quick else []) + list(args.sets)
    try:
        scn = load_scenario(args.scenario, sets)
        if args.n_test is None:
            n_test, note = default_n_test(scn)
        else:
            n_test, note = args.n_test, n_test_note(args.n_test)
        # no override when the scenario already has it (runs made without one stay reusable)
        split = [] if n_test == scn.fl.options.data.n_test else [f"fl.options.data.n_test={n_test}"]
        # the test split before the user's --set: a --set of the data has the last word
        spec = CompareSpec(base=args.scenario, algorithms=algorithms,
                           sets=tuple((QUICK if args.quick else []) + split
                                      + list(args.sets)))
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[frameworks] {note}", file=sys.stderr, flush=True)
    kept_wall = 0.0

    def done(i: int, row: dict, kept: bool = False) -> None:
        nonlocal kept_wall
        if kept:
            kept_wall += row.get("wall_time_s") or 0.0
        status = "kept (finished before)" if kept else row["status"]
        tail = (f", accuracy {acc_text(row['final_accuracy'], row['final_accuracy_lo'], row['final_accuracy_hi'])}, "
                f"{row['wall_time_s']:.0f} s wall" if row["status"] == "ok" else f": {row['error']}")
        print(f"[frameworks] {row['algorithm']}: {status}{tail}", file=sys.stderr, flush=True)

    try:
        result = run_compare(spec, out, backend=args.backend, workers=args.workers, on_done=done,
                             on_kept=lambda i, row: done(i, row, kept=True),
                             overwrite=not args.resume, resume=args.resume)
    except (ScenarioError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = [r for r in result.rows if r["status"] == "ok"]
    for r in result.rows:
        if r["status"] != "ok":
            print(f"{r['algorithm']}: FAILED: {r['error']} (see {out / r['run_dir']}/error.txt)")
    rows = [summarise(r, out) for r in ok]
    scn = load_scenario(out / ok[0]["run_dir"] / "scenario.resolved.yaml") if ok else None
    if scn is not None:
        print(f"{scn.name}: {scn.fl.rounds} rounds x {scn.fl.clients_per_round} of {scn.clients.n_clients} "
              f"clients, {scn.network.uplink_bandwidth_hz / 1e6:g}/{scn.network.downlink_bandwidth_hz / 1e6:g} MHz "
              f"up/down" + (" — QUICK (tiny random model; accuracies mean nothing)" if args.quick else ""))
    if rows:
        print_table(rows)
    print(note)
    if result.pairs:
        print_pairs(result.pairs)
    u, u_lo, u_hi, where = untrained(rows)
    soda = next((r for r in rows if r["algorithm"] == "fedsoda"), None)
    print(f"untrained model: {acc_text(u, u_lo, u_hi)} ({where})"
          + (f"; fedsoda's pruned sub-model before training: {acc_text(soda['initial'], soda['initial_lo'], soda['initial_hi'])}"
             if soda is not None and soda["initial"] is not None else ""))
    n_learn = 0
    for name in algorithms:
        r = next((r for r in rows if r["algorithm"] == name), None)
        if r is None:
            print(f"{name}: final accuracy n/a vs untrained {acc_text(u, u_lo, u_hi)}: does not learn")
            continue
        yes = learns(r, u_hi)
        n_learn += yes
        print(f"{name}: final accuracy {acc_text(r['accuracy'], r['lo'], r['hi'])} vs untrained "
              f"{acc_text(u, u_lo, u_hi)}: {'learns' if yes else 'does not learn'}")
    wall_min = (time.perf_counter() - t0 + kept_wall) / 60
    (out / "bench.json").write_text(json.dumps({"test_split": note, "rows": rows, "untrained": [u, u_lo, u_hi],
                                                "learners": n_learn, "wall_min": wall_min}, indent=2,
                                               default=str))
    print(f"comparison directory: {out} (compare.csv, compare_pairs.csv, latency_accuracy.png)")
    print(f"learners above the untrained model: {n_learn}/{len(algorithms)} in {wall_min:.1f} min of wall time")
    return 0 if not [r for r in result.rows if r["status"] != "ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

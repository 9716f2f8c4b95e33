"""What the models of a kd_topk run know: every client and the server, scored on the test prompts.

    python bench/kd_diagnose.py runs/kd_comm/full            # a finished or interrupted run
    python bench/kd_diagnose.py runs/kd_comm/fixed --server-only

Loads the run's ``checkpoint.zip`` (the state at its last round boundary; the scenario is the
checkpoint's own), rank-classifies the run's test prompts with the server model and with
each client model that has trained so far, and prints per model: its accuracy, how many
training examples of each label it holds, and how often it answered each label; then the
same for the clients' ensemble (mean of their per-label log-likelihoods) — the best the
server could learn from them if it matched them exactly. A model that answers one label for
every prompt shows up at once (this is how the 140-character data filter that starved two
labels of kd_adaptive.yaml was found: README).

Costs one evaluation per model (about 30 s each for SmolLM2 on 96 prompts, 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def diagnose(run_dir: str | Path, batch_size: int = 16, clients: bool = True) -> dict:
    """Score the server and (``clients``) every trained client of the run in ``run_dir`` on its
    test split. With mutual distillation off every variant of a benchmark trains the same
    clients, so ``clients=False`` is enough for all but one of them.

    Returns ``{"round": rounds completed, "labels": [...], "n_test": int, "server": model,
    "clients": [model + "client", "train_counts"], "ensemble": model}`` where a model is
    ``{"accuracy": float, "answers": {label: count}}``.
    """
    import numpy as np
    import torch

    from fl.lm.models import set_lora_state
    from fl.lm.train import score_labels
    from fl.core.statefile import read_state_head
    from sim.runner import CHECKPOINT
    from sim.scenario import Scenario
    from sim.checkpoint import CHECKPOINT_KIND
    from sim.simulation import Simulation

    ckpt = Path(run_dir) / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"No {CHECKPOINT} in {run_dir}: give the directory of a kd_topk run "
                                "with the sync driver (it writes one every round).")
    head = read_state_head(ckpt, CHECKPOINT_KIND)
    scenario = Scenario.model_validate(head["scenario"])
    if scenario.fl.algorithm != "kd_topk":
        raise ValueError(f"{run_dir} is a run of {scenario.fl.algorithm!r}; kd_diagnose reads kd_topk runs "
                         "(their clients keep their own models).")
    alg = Simulation.resume(scenario, ckpt, keep_checkpointing=False).algorithm
    names = list(alg.dataset.label_names)
    test = [int(i) for i in alg.test_idx]
    truth = torch.as_tensor(alg.task.labels[test])

    def scored(scores: torch.Tensor) -> dict:
        pred = scores.argmax(1)
        counts = np.bincount(pred.numpy(), minlength=len(names))
        return {"accuracy": float((pred == truth).float().mean()),
                "answers": {n: int(c) for n, c in zip(names, counts)}}

    out = {"round": int(head["next_round"]), "labels": names, "n_test": len(test),
           "server": scored(score_labels(alg.server_model, alg.task, test, batch_size)), "clients": []}
    per_client = []
    for c in sorted(alg.client_states) if clients else []:
        set_lora_state(alg.client_model, alg.client_states[c])
        alg.client_model.eval()
        scores = score_labels(alg.client_model, alg.task, test, batch_size)
        per_client.append(scores.log_softmax(1))
        held = np.bincount(alg.task.labels[alg.client_idx[c]], minlength=len(names))
        out["clients"].append({"client": int(c), **scored(scores),
                               "train_counts": {n: int(k) for n, k in zip(names, held)}})
    out["ensemble"] = scored(torch.stack(per_client).mean(0)) if per_client else None
    return out


def format_report(report: dict) -> str:
    names = report["labels"]
    width = max(8, *(len(n) for n in names))
    head = f"{'model':<10} {'acc':>6}  answers ({' '.join(f'{n:>{width}}' for n in names)})"
    lines = [f"after {report['round']} rounds; {report['n_test']} test prompts "
             f"(chance {1 / len(names):.3f})", head, "-" * len(head)]

    def row(name: str, m: dict, extra: str = "") -> None:
        answers = " ".join(f"{m['answers'][n]:>{width}}" for n in names)
        lines.append(f"{name:<10} {m['accuracy']:>6.3f}           {answers}{extra}")

    row("server", report["server"])
    for c in report["clients"]:
        held = "/".join(str(c["train_counts"][n]) for n in names)
        row(f"client {c['client']}", c, f"   holds {held}")
    if report["ensemble"] is not None:
        row("ensemble", report["ensemble"], "   (mean of the clients' label log-likelihoods)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a kd_topk run directory with checkpoint.zip")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    ap.add_argument("--server-only", action="store_true",
                    help="score the server model only (one evaluation instead of one per client)")
    args = ap.parse_args(argv)
    try:
        report = diagnose(args.run_dir, clients=not args.server_only)
    except (FileNotFoundError, ValueError) as exc:
        print(f"kd_diagnose: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

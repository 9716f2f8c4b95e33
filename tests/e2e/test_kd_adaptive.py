"""scenarios/kd_adaptive.yaml end to end through the CLI, with the tiny model standing in for
SmolLM2 (the real run is bench/kd_comm.py's): real distillation, k chosen per upload from the
capacity, recorded next to the SNR; the per-round k columns in rounds.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from sim.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "kd_adaptive.yaml"
TINY = [
    "--set", "fl.options.model={kind: tiny}", "--set", "fl.options.client_keep_layers=[0]",
    "--set", "fl.rounds=1", "--set", "fl.clients_per_round=3",
    "--set", "fl.options.data={max_per_class: 30, max_len: 96, n_test: 6, n_public: 8}",
    "--set", "fl.options.local_steps=1", "--set", "fl.options.server_steps=1",
    "--set", "fl.options.public_batch_size=2", "--set", "fl.options.lora.layers={top: 1}",
]


def test_kd_adaptive_runs_with_real_distillation_and_adaptive_k(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(SCENARIO)]).exit_code == 0
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", str(SCENARIO), "--out", str(out), "--quiet", "--no-plots", *TINY])
    assert r.exit_code == 0, r.output + repr(r.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["learner"] == "real" and summary["algorithm"] == "kd_topk"
    rounds = pd.read_csv(out / "rounds.csv")
    assert len(rounds) == 1 and rounds["accuracy"].notna().all()
    for col in ("k_mean", "k_min", "k_max", "bits_up_mean", "teacher_support", "teacher_accuracy", "server_kd_loss"):
        assert col in rounds.columns and rounds[col].notna().all(), col
    assert (rounds["bits_down"] == 0).all()  # mutual distillation is off in this scenario
    ev = pd.read_parquet(out / "events.parquet")
    up = ev[(ev.event == "send_start") & (ev.direction == "up")]
    assert len(up) == 3 and up[["k", "capacity_bits", "snr_db"]].notna().all().all()
    assert ((up.k >= 8) & (up.k <= 256)).all()  # k_min, k_max of the scenario
    assert rounds["bits_up"].sum() == ev[(ev.event == "send_end") & (ev.direction == "up")].bits.sum()


def test_kd_diagnose_scores_the_server_every_trained_client_and_their_ensemble(tmp_path):
    import sys

    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    from kd_diagnose import diagnose, format_report, main

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", str(SCENARIO), "--out", str(out), "--quiet", "--no-plots", *TINY,
                                 "--set", "fl.rounds=2"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    report = diagnose(out)
    rounds = pd.read_csv(out / "rounds.csv")
    assert report["round"] == 2 and report["n_test"] == 6 and len(report["labels"]) == 6
    assert report["server"]["accuracy"] == pytest.approx(rounds["accuracy"].iloc[-1])  # the same model, same prompts
    trained = {c for c in pd.read_parquet(out / "events.parquet").query("event == 'send_end'").client.dropna()}
    assert {c["client"] for c in report["clients"]} == {int(c) for c in trained} and report["clients"]
    for m in [report["server"], report["ensemble"], *report["clients"]]:
        assert sum(m["answers"].values()) == 6 and 0.0 <= m["accuracy"] <= 1.0
    assert all(sum(c["train_counts"].values()) > 0 for c in report["clients"])
    text = format_report(report)
    assert "server" in text and "ensemble" in text and "client" in text
    assert main([str(tmp_path / "nowhere")]) == 2  # a clear error, not a traceback
    alone = diagnose(out, clients=False)
    assert alone["server"] == report["server"] and alone["clients"] == [] and alone["ensemble"] is None
    assert "client" not in format_report(alone)


def test_kd_comm_verdict_pairs_teacher_accuracy_by_round_only_when_clients_are_shared():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from kd_comm import paired_teacher, verdict

    def row(acc: float, bits: float, teacher: dict[int, float]) -> dict:
        return {"final_acc": acc, "best_acc": acc, "initial_acc": 0.3, "final_loss": 1.0, "up_bits_per_round": bits,
                "teacher_by_round": teacher, "k_mean": 40.0, "run_dir": str(ROOT / "no-such-run")}

    a = row(0.40, 1e5, {1: 0.5, 2: 0.4, 3: 0.6})
    z = row(0.35, 1e5, {1: 0.4, 2: 0.4, 3: 0.4, 4: 0.9})  # round 4: not in a, left out of the pairing
    full = row(0.42, 4e7, {1: 0.5, 2: 0.4, 3: 0.6})
    # differences 10, 0, 20 points: mean 10, sd 10, two standard errors 2·10/√3 = 11.5
    assert paired_teacher(a, z) == "teacher acc +10.0 points (paired over 3 rounds, ±11.5)"
    assert paired_teacher(a, row(0.4, 1e5, {1: 0.5})) is None  # one common round: no spread to judge
    rows = {"adaptive_adaptive": a, "adaptive_zero_pad": z, "full": full}
    lines, last = verdict(rows, teacher_paired=True)
    assert any("vs full" in l and "99.8 % less (aim ≥ 50 %: met)" in l and "teacher acc +0.0 points" in l
               for l in lines), lines
    assert any("vs zero_pad" in l and "teacher acc +10.0 points" in l for l in lines), lines
    assert not any("teacher acc" in l for l in verdict(rows, teacher_paired=False)[0])  # mutual on: not paired
    # no eval.parquet to pair the final accuracies on: the verdict says so instead of a number
    assert last.startswith("P1 verdict: uplink n/a vs fixed k, -99.8 % vs full; accuracy difference n/a vs "
                           "fixed k; vs zero_pad n/a (")

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
    "--set", "fl.options.public_batch_size=2",
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

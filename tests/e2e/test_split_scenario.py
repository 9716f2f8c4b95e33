"""scenarios/split_lora.yaml through the CLI: real split training, the documented outputs,
and the per-client step accounting (split_steps.csv). The fast test swaps in a tiny model;
the slow one runs the scenario as written (embedded SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.simulation import ROUND_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "split_lora.yaml"
SPLIT_COLUMNS = ["n_aggregated", "n_partial", "steps_planned", "steps_completed", "server_steps",
                 "partial_adapter_bits", "train_loss", "accuracy_lo", "accuracy_hi", "n_eval"]
TINY = ["fl.options.model={kind: tiny, n_layers: 3, hidden: 32, intermediate: 64}",
        "fl.options.data={dataset: fortunes, max_per_class: 12, max_len: 80, n_test: 6}",
        "fl.options.local_steps=2", "fl.options.batch_size=2", "fl.rounds=2", "fl.clients_per_round=2"]
runner = CliRunner()


def _run(out: Path, *overrides: str) -> Path:
    args = ["run", str(SCENARIO), "--out", str(out), "--quiet", "--no-plots"]
    for o in overrides:
        args += ["--set", o]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out


def _check(out: Path, rounds_expected: int, steps: int, per_round: int) -> None:
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns[: len(ROUND_COLUMNS)]) == list(ROUND_COLUMNS)
    assert list(rounds.columns[len(ROUND_COLUMNS):]) == SPLIT_COLUMNS
    assert len(rounds) == rounds_expected and rounds["accuracy"].notna().all()
    done = rounds["n_completed"] + rounds["n_partial"]
    assert (rounds["steps_completed"] <= rounds["steps_planned"]).all()
    assert (rounds["server_steps"] >= rounds["steps_completed"]).all()
    steps_csv = pd.read_csv(out / "split_steps.csv")
    assert list(steps_csv.columns) == ["round", "client", "status", "reason", "steps_planned",
                                       "steps_completed", "server_steps", "weight"]
    assert len(steps_csv) == rounds["n_selected"].sum()
    by_round = steps_csv.groupby("round")["steps_completed"].sum()
    assert by_round.tolist() == rounds["steps_completed"].astype(int).tolist()
    events = pd.read_parquet(out / "events.parquet")
    ups = events[(events["event"] == "send_end") & (events["detail"] == "activations")]
    downs = events[(events["event"] == "send_end") & (events["detail"] == "gradients")]
    bwd = events[(events["event"] == "compute_end") & (events["detail"] == "client_bwd")]
    assert len(bwd) == rounds["steps_completed"].sum() and len(ups) >= len(bwd) and len(downs) >= len(bwd)
    assert int(done.sum()) >= 1 and steps * per_round * rounds_expected >= len(bwd)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["learner"] == "real" and summary["algorithm"] == "split_lora"


def test_scenario_validates():
    r = runner.invoke(app, ["validate", str(SCENARIO)])
    assert r.exit_code == 0, r.output
    assert "split_lora" in r.output


def test_scenario_runs_with_a_tiny_model(tmp_path):
    out = _run(tmp_path / "run", *TINY)
    _check(out, rounds_expected=2, steps=2, per_round=2)
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds["steps_completed"] == 4).all() and (rounds["n_partial"] == 0).all()


def test_a_tight_deadline_cuts_clients_off_and_the_accounting_says_so(tmp_path):
    """With this scenario's seed, a 20 ms deadline cuts one client off after its first step."""
    out = _run(tmp_path / "run", *TINY, "fl.deadline_s=0.02", "fl.min_updates=0")
    rounds = pd.read_csv(out / "rounds.csv")
    steps_csv = pd.read_csv(out / "split_steps.csv")
    assert (steps_csv["status"] != "completed").any()
    cut = steps_csv[steps_csv["status"] != "completed"]
    assert (cut["reason"] == "deadline").all() and (cut["steps_completed"] < cut["steps_planned"]).all()
    assert (cut["status"] == "partial").any() and (cut[cut["status"] == "partial"]["weight"] > 0).all()
    assert rounds["n_failed"].sum() == len(cut)
    assert rounds["steps_completed"].sum() == steps_csv["steps_completed"].sum()


@pytest.mark.slow
@pytest.mark.long  # ~1 min of SmolLM2 split training: `make test-long`
def test_scenario_as_written_runs(tmp_path):
    """The embedded SmolLM2, real training (minutes on 2 cores)."""
    out = _run(tmp_path / "run")
    _check(out, rounds_expected=3, steps=3, per_round=3)

"""Every scenario in scenarios/ validates and runs end to end through the CLI, writing the
documented files; same seed → identical outputs, different seed → different ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.simulation import ROUND_COLUMNS
from sim.trace import EVENT_COLUMNS, EVENT_KINDS

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SURROGATE = [p for p in SCENARIOS if yaml.safe_load(p.read_text())["fl"]["algorithm"] == "surrogate"]
REAL = [p for p in SCENARIOS if p not in SURROGATE]
# Overrides that shrink a real-learning scenario to the tiny random model (seconds, not minutes).
TINY = {
    "quickstart": ["fl.options.model={kind: tiny}", "fl.options.lora.layers={top: 1}", "fl.rounds=2"],
    "kd_adaptive": ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.client_keep_layers=[0, 2]",
                    "fl.options.lora.layers={top: 1}", "fl.options.data={max_per_class: 30, max_len: 96, n_test: 12, n_public: 8}", "fl.options.public_batch_size=4", "fl.options.server_steps=2",
                    "fl.rounds=2"],
    "split_lora": ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.cut_layer=1", "fl.rounds=2"],
    "fedsoda": ["fl.options.model={kind: tiny, n_layers: 6}", "fl.options.sgp_keep=4", "fl.rounds=2"],
    # fedavg_lora, with every fl.algorithm_options entry still valid on the tiny model
    "frameworks": ["fl.options.model={kind: tiny, n_layers: 4}", "fl.options.lora.layers={top: 2}",
                   "fl.algorithm_options.split_lora.cut_layer=3", "fl.algorithm_options.fedsoda.sgp_keep=3",
                   "fl.rounds=2"],
}
runner = CliRunner()


def _run(path, out, *extra):
    r = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet", *extra])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out


def test_scenario_library_is_complete():
    names = {p.stem for p in SCENARIOS}
    assert {"quickstart", "surrogate_quickstart", "single_cell_pedestrians", "hex7_uma_mixed", "umi_street_canyon",
            "indoor_office"} <= names


@pytest.mark.parametrize("path", SURROGATE, ids=lambda p: p.stem)
def test_scenario_runs_end_to_end(path, tmp_path):
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 0, r.output
    out = _run(path, tmp_path / "run", *([] if path.stem == "surrogate_quickstart" else ["--no-plots"]))
    for f in ("scenario.resolved.yaml", "versions.json", "rounds.csv", "events.parquet",
              "summary.json"):
        assert (out / f).is_file(), f
    assert not (out / "error.txt").exists()
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns[: len(ROUND_COLUMNS)]) == list(ROUND_COLUMNS)
    assert len(rounds) >= 1 and rounds["accuracy"].notna().any()
    events = pd.read_parquet(out / "events.parquet")
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert set(events["event"]) <= set(EVENT_KINDS)
    assert {"round_start", "selected", "send_start", "send_end", "round_end"} <= set(events["event"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["learner"] == "surrogate"
    assert summary["scenario"] == path.stem and "SURROGATE" in summary["note"]
    tot = summary["totals"]
    assert tot["bits_offered"] >= tot["bits_over_the_air"] + tot["bits_lost"] - 1e-3
    versions = json.loads((out / "versions.json").read_text())
    assert {"python", "numpy", "simpy"} <= set(versions)
    if path.stem == "surrogate_quickstart":
        for png in ("snr_rate", "cell_map", "rounds", "accuracy"):
            assert (out / "plots" / f"{png}.png").stat().st_size > 1000
        r = runner.invoke(app, ["report", str(out)])
        assert r.exit_code == 0 and "surrogate" in r.output


def test_same_seed_identical_outputs_different_seed_differs(tmp_path):
    q = ROOT / "scenarios" / "surrogate_quickstart.yaml"
    a = _run(q, tmp_path / "a", "--no-plots", "--set", "fl.rounds=3")
    b = _run(q, tmp_path / "b", "--no-plots", "--set", "fl.rounds=3")
    c = _run(q, tmp_path / "c", "--no-plots", "--set", "fl.rounds=3", "--set", "seed=8")
    assert (a / "rounds.csv").read_bytes() == (b / "rounds.csv").read_bytes()
    ea, eb, ec = (pd.read_parquet(x / "events.parquet") for x in (a, b, c))
    assert ea.equals(eb)
    assert not ea.equals(ec)
    assert (a / "rounds.csv").read_bytes() != (c / "rounds.csv").read_bytes()


def test_failed_run_leaves_error_and_summary(tmp_path, monkeypatch):
    import sim.radio

    q = ROOT / "scenarios" / "surrogate_quickstart.yaml"
    out = tmp_path / "bad"
    bad_drop = "clients.drop={kind: explicit, xy_m: [[0, 0]]}"
    r = runner.invoke(app, ["run", str(q), "--out", str(out), "--quiet", "--set", bad_drop])
    assert r.exit_code == 2 and not out.exists()  # validation finds what the run would refuse
    assert "clients.drop.xy_m: must hold one position per client (10); got 1 positions" in \
        r.output.replace("\n", " ")

    def fail(scn, rng):  # a failure only the run meets
        raise ValueError("the radio cannot be built: 1 positions for 10 clients")

    monkeypatch.setattr(sim.radio, "build_radio", fail)
    r = runner.invoke(app, ["run", str(q), "--out", str(out), "--quiet"])
    assert r.exit_code == 1
    assert "Run failed" in r.output
    assert "1 positions for 10 clients" in (out / "error.txt").read_text()
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "failed" and "ValueError" in s["error"]


def test_compare_prints_one_table(tmp_path):
    q = ROOT / "scenarios" / "surrogate_quickstart.yaml"
    r = runner.invoke(app, ["compare", str(q), "--algorithms", "surrogate", "--out",
                            str(tmp_path), "--set", "fl.rounds=2"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "surrogate" in r.output and "compare" in r.output


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_scenario_runs_with_tiny_model(path, tmp_path):
    """Each real-learning scenario runs end to end through the CLI on the tiny model."""
    assert path.stem in TINY, f"add tiny-model overrides for {path.name} to TINY"
    sets = [a for kv in TINY[path.stem] for a in ("--set", kv)]
    out = _run(path, tmp_path / "run", "--no-plots", *sets)
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds.columns[: len(ROUND_COLUMNS)]) == list(ROUND_COLUMNS)
    assert rounds["n_completed"].sum() >= 1 and rounds["accuracy"].notna().any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["learner"] == "real"

"""Where a run is: summary.json's progress record after every round, the CLI's round lines,
and the watcher that follows the variants of a comparison or a sweep from their run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from sim.cli import app
from sim.progress import Watcher, eta_s, progress_text, read_progress, round_record
from sim.runner import run_scenario

SCN = Path(__file__).resolve().parents[2] / "scenarios" / "surrogate_quickstart.yaml"


def test_summary_json_says_where_a_running_run_is(tmp_path):
    seen = []

    def look(done: int, total: int, row: dict) -> None:  # called after summary.json is written
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        seen.append((summary["status"], summary["progress"], row["round"]))

    run_scenario(SCN, ["fl.rounds=3"], out=tmp_path / "run", plots=False, progress=look)
    assert [s for s, _, _ in seen] == ["running"] * 3
    recs = [p for _, p, _ in seen]
    assert [r["rounds_done"] for r in recs] == [1, 2, 3] and {r["rounds"] for r in recs} == {3}
    assert [r for _, _, r in seen] == [0, 1, 2]
    assert recs[0]["t_s"] < recs[1]["t_s"] < recs[2]["t_s"]
    assert all(0 <= r["accuracy"] <= 1 for r in recs)
    assert recs[-1]["eta_s"] == 0.0 and recs[0]["eta_s"] > 0
    final = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert final["status"] == "ok" and "progress" not in final  # a finished run has its results


def test_the_eta_counts_only_the_rounds_this_process_ran():
    row = {"round": 5, "t_s": 10.0, "accuracy": 0.5, "accuracy_lo": 0.4, "accuracy_hi": 0.6}
    rec = round_record(6, 10, row, wall_s=20.0, done_at_start=4)  # resumed after 4 rounds
    assert rec["rounds_this_process"] == 2 and eta_s(rec) == 20.0 / 2 * 4
    assert round_record(1, 10, row, wall_s=0.0)["eta_s"] is None  # nothing measured yet


def test_a_round_without_evaluation_shows_the_last_accuracy_and_its_round():
    last = {"round": 1, "accuracy": 0.41, "accuracy_lo": 0.31, "accuracy_hi": 0.51}
    rec = round_record(3, 8, {"round": 2, "t_s": 412.5, "accuracy": math.nan}, 61.0, 0, last)
    text = progress_text(rec)
    assert text.startswith("round 3/8 · t = 412.5 s simulated · accuracy 0.410 [0.31, 0.51] (round 1)")
    assert "1:01 wall, ETA 1:42" in text


def test_run_into_a_log_prints_one_line_per_round(tmp_path):
    r = CliRunner().invoke(app, ["run", str(SCN), "--set", "fl.rounds=2", "--out", str(tmp_path / "r"),
                                 "--no-plots"])
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if l.startswith("surrogate_quickstart: round ")]
    assert [l.split(" · ")[0] for l in lines] == ["surrogate_quickstart: round 1/2",
                                                    "surrogate_quickstart: round 2/2"]
    assert all("s simulated" in l and "accuracy" in l and "ETA" in l for l in lines)


def test_the_watcher_reports_each_variant_once_per_round(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "summary.json").write_text("{half-writ")  # being replaced: skipped until the next poll
    got = []
    w = Watcher([("a", a), ("b", b), ("c", tmp_path / "not-yet")], lambda label, rec: got.append((label, rec["rounds_done"])))

    def put(d, done):
        rec = round_record(done, 4, {"round": done - 1, "t_s": 1.0 * done, "accuracy": 0.5}, 1.0)
        (d / "summary.json").write_text(json.dumps({"status": "running", "progress": rec}))

    put(a, 1)
    w.poll()
    w.poll()  # nothing new
    put(a, 2)
    put(b, 1)
    w.poll()
    assert got == [("a", 1), ("a", 2), ("b", 1)]
    assert read_progress(tmp_path / "not-yet") is None

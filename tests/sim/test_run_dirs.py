"""Run directories are never silently destroyed; interrupted and damaged ones say so."""

from __future__ import annotations

import json
import os
import pickle
import platform
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.outputs import RunDirError, run_status
from sim.runner import CHECKPOINT, run_scenario

SCN = Path(__file__).resolve().parents[2] / "scenarios" / "surrogate_quickstart.yaml"
SETS = ["fl.rounds=3"]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    run_scenario(SCN, SETS, out=out, plots=True)
    return out


def test_a_used_directory_is_refused_and_left_untouched(done):
    before = _snapshot(done)
    with pytest.raises(RunDirError, match=r"not empty.*Fix: choose a new --out, or pass --overwrite"):
        run_scenario(SCN, SETS, out=done, plots=False)
    r = _cli("run", str(SCN), "--set", "fl.rounds=3", "--out", str(done), "--quiet")
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert _snapshot(done) == before


def test_overwrite_empties_first_so_nothing_stale_remains(tmp_path):
    out = tmp_path / "run"
    run_scenario(SCN, SETS, out=out, plots=True)
    (out / "plots" / "stale.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    run_scenario(SCN, SETS, out=out, plots=False, overwrite=True)
    assert not (out / "plots").exists() and not (out / "notes.txt").exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"


def test_overwrite_refuses_a_directory_that_is_not_fedwaves(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match="not a fedwave output directory"):
        run_scenario(SCN, SETS, out=tmp_path, plots=False, overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_refused_resume_leaves_every_file_untouched(tmp_path):
    out = tmp_path / "run"
    run_scenario(SCN, SETS, out=out, plots=False, stop_after_rounds=1)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"fl\.rounds is 3 in the checkpoint and 4"):
        run_scenario(SCN, ["fl.rounds=4"], out=out, plots=False, resume=True)
    assert _snapshot(out) == before
    ckpt = out / CHECKPOINT  # a damaged checkpoint: refused, nothing else touched
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    before = _snapshot(out)
    r = _cli("run", str(SCN), "--set", "fl.rounds=3", "--out", str(out), "--quiet", "--resume")
    assert r.exit_code == 1 and "checkpoint.zip" in r.output and "Fix:" in r.output
    assert "Traceback" not in r.output
    assert _snapshot(out) == before


def test_an_old_pickle_checkpoint_is_never_loaded(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "MARKER"
    (out / "checkpoint.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(FileNotFoundError, match="old pickle format"):
        run_scenario(SCN, SETS, out=out, plots=False, resume=True)
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_interrupted_run_is_marked_and_resumes(tmp_path):
    out = tmp_path / "run"

    def stop(done: int, total: int, _row: dict) -> None:
        if done == 2:  # Ctrl-C as round 1 ends, before its checkpoint: round 0's is the last
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(SCN, SETS, out=out, plots=False, progress=stop)
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    for cmd in ("report", "plot"):
        r = _cli(cmd, str(out))
        assert r.exit_code == 1
        assert "interrupted after round 0" in r.output and "--resume" in r.output
    run_scenario(SCN, SETS, out=out, plots=False, resume=True)
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [0, 1, 2]
    assert run_status(out)[0] == "ok"


def test_a_killed_run_reads_as_interrupted(tmp_path):
    out = tmp_path / "run"
    run_scenario(SCN, SETS, out=out, plots=False, stop_after_rounds=2)
    summary = json.loads((out / "summary.json").read_text())
    dead = os.fork()
    if dead == 0:  # a pid that is surely gone
        os._exit(0)
    os.waitpid(dead, 0)
    summary.update(status="running", pid=dead, host=platform.node())  # what a kill -9 leaves
    (out / "summary.json").write_text(json.dumps(summary))
    status, why = run_status(out)
    assert status == "interrupted" and "after round 1" in why
    summary["pid"] = os.getpid()  # alive: still running
    (out / "summary.json").write_text(json.dumps(summary))
    assert run_status(out)[0] == "running"


@pytest.mark.parametrize("name, cut", [("summary.json", 30), ("rounds.csv", 5)])
def test_truncated_outputs_get_a_message_not_a_traceback(tmp_path, done, name, cut):
    out = tmp_path / "copy"
    out.mkdir()
    for f in ("summary.json", "rounds.csv", "events.parquet", "scenario.resolved.yaml"):
        (out / f).write_bytes((done / f).read_bytes())
    (out / name).write_bytes((done / name).read_bytes()[:cut])
    r = _cli("report", str(out))
    assert r.exit_code != 0 and r.exception is None or isinstance(r.exception, SystemExit)
    assert name in r.output and "truncated" in r.output and "Traceback" not in r.output


def test_sweep_and_compare_refuse_used_directories(tmp_path, done):
    sweep_out = tmp_path / "sweep"
    sweep_out.mkdir()
    (sweep_out / "sweep.csv").write_text("old")
    r = _cli("sweep", str(SCN), "--set", "fl.rounds=1", "--seeds", "0", "--out", str(sweep_out),
             "--backend", "inline", "--quiet")
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert (sweep_out / "sweep.csv").read_text() == "old"
    r = _cli("sweep", str(SCN), "--set", "fl.rounds=1", "--seeds", "0", "--out", str(sweep_out),
             "--backend", "inline", "--quiet", "--overwrite")
    assert r.exit_code == 0, r.output
    assert (sweep_out / "sweep.csv").read_text() != "old"
    parent = done.parent
    (parent / "surrogate_quickstart-surrogate").mkdir(exist_ok=True)
    (parent / "surrogate_quickstart-surrogate" / "summary.json").write_text("{}")
    r = _cli("compare", str(SCN), "--algorithms", "surrogate", "--set", "fl.rounds=1",
             "--out", str(parent))
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        run_scenario(SCN, ["fl.rounds=1"], out=tmp_path / "run", plots=False)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o600}, modes
    run_scenario(SCN, ["fl.rounds=1"], out=tmp_path / "run2", plots=False)  # umask 022 here
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "run2").iterdir() if p.is_file()}
    assert modes == {0o666 & ~mask}


def test_sigterm_marks_a_cli_run_interrupted_and_the_handler_is_restored(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    before = signal.getsignal(signal.SIGTERM)
    _cli("run", str(SCN), "--set", "fl.rounds=1", "--out", str(tmp_path / "quick"), "--quiet", "--no-plots")
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI inside another program
    out = tmp_path / "long"
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", str(SCN), "--set", "fl.rounds=5000",
                             "--out", str(out), "--quiet", "--no-plots"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / CHECKPOINT).exists(), "the run never wrote a checkpoint"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "Interrupted. Resume with" in output
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"

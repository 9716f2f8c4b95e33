"""execution.batch_clients: the clients whose uploads are in flight train as one batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sim.runner import run_scenario
from sim.scenario import ScenarioError, load_scenario
from sim.simulation import Simulation

QUICK = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"
TINY = ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.lora.layers={top: 1}",
        "fl.options.data={max_per_class: 20, n_test: 6, max_len: 128}", "fl.rounds=2",
        "fl.clients_per_round=4", "execution.batch_clients=true"]


def test_batched_runs_are_reproducible_batch_and_resume_identically(tmp_path):
    sim = Simulation(load_scenario(QUICK, TINY))
    result = sim.run()
    assert max(sim._batcher.batches) > 1  # some clients really trained together
    part, _ = run_scenario(QUICK, TINY, out=tmp_path / "part", plots=False, stop_after_rounds=1)
    run_scenario(QUICK, TINY, out=part, plots=False, resume=True)  # a second run, resumed
    assert pd.read_parquet(part / "events.parquet").equals(result.tracer.to_frame())
    assert pd.read_csv(part / "rounds.csv").equals(pd.read_csv(_csv(result.rounds)))


def test_batching_is_inline_only():
    with pytest.raises(ScenarioError, match="execution.batch_clients: batches the clients inline only"):
        load_scenario(QUICK, TINY + ["execution.backend=process"])


def _csv(df):
    import io

    return io.StringIO(df.to_csv(index=False))


def test_every_real_accuracy_carries_its_interval(tmp_path):
    import json

    from fl.core.metrics import wilson_interval

    run_dir, _ = run_scenario(QUICK, TINY[:-1] + ["fl.rounds=1"], out=tmp_path / "r", plots=False)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    row = rounds.iloc[-1]
    n = int(row["n_eval"])
    assert (row["accuracy_lo"], row["accuracy_hi"]) == pytest.approx(
        wilson_interval(round(row["accuracy"] * n), n))
    summary = json.loads((run_dir / "summary.json").read_text())
    for part in ("initial", "final"):
        m = summary[part]
        assert m["accuracy_lo"] <= m["accuracy"] <= m["accuracy_hi"] and m["n_eval"] == n


def test_the_summary_reports_the_prefix_cache(tmp_path):
    """The run summary says how much memory the prefix cache took and how often a cached
    state was used again (a process diagnostic, not part of the per-round numerics)."""
    import json

    run_dir, _ = run_scenario(QUICK, TINY, out=tmp_path / "run", plots=False)
    pc = json.loads((run_dir / "summary.json").read_text())["prefix_cache"]
    assert pc["prefix_cache_mib"] > 0 and 0 < pc["prefix_hit_rate"] <= 1
    off, _ = run_scenario(QUICK, TINY + ["execution.prefix_cache=false"], out=tmp_path / "off", plots=False)
    assert json.loads((off / "summary.json").read_text())["prefix_cache"] == {}

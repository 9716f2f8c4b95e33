"""Accounting holds in every run: the events add up to the totals, whatever cut the work short."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.runner import run_scenario

SCN = Path(__file__).resolve().parents[2] / "scenarios"


def _check(run_dir: Path, summary: dict):
    import pandas as pd

    ev = pd.read_parquet(run_dir / "events.parquet")
    tot = summary["totals"]
    assert ev["energy_j"].sum() == pytest.approx(tot["energy_j"], rel=1e-9, abs=1e-9)
    radio = ev[ev.event.isin(["send_end", "send_failed"])]
    for direction, key in (("up", "bits_up"), ("down", "bits_down")):
        sent = radio[radio.direction == direction]["bits_delivered"].sum()
        assert sent == pytest.approx(tot[key], rel=1e-9, abs=1e-6)
    assert tot["bits_offered"] == pytest.approx(tot["bits_over_the_air"] + tot["bits_lost"], rel=1e-9)
    return ev


@pytest.mark.parametrize("name, sets", [
    ("single_cell_pedestrians", ["fl.rounds=6", "clients.dropout_prob=0.4"]),  # drop-outs
    ("surrogate_quickstart", ["fl.rounds=4", "fl.deadline_s=1.0"]),             # deadlines
    ("umi_street_canyon", ["fl.rounds=4"]),                                     # async driver
])
def test_events_sum_to_the_totals(tmp_path, name, sets):
    run_dir, summary = run_scenario(SCN / f"{name}.yaml", sets, out=tmp_path / "r", plots=False)
    ev = _check(run_dir, summary)
    if "clients.dropout_prob=0.4" in sets or "fl.deadline_s=1.0" in sets:
        cut = ev[ev.event == "compute_cut"]
        assert len(cut) and (cut["energy_j"] > 0).all()  # cut computations cost energy, shown


def test_a_run_stopped_mid_transfer_accounts_its_bits(tmp_path):
    base = ["fl.rounds=3", "fl.deadline_s=null"]
    _, full = run_scenario(SCN / "surrogate_quickstart.yaml", base, out=tmp_path / "full", plots=False)
    import pandas as pd

    ev = pd.read_parquet(tmp_path / "full" / "events.parquet")
    ups = ev[(ev.event == "send_start") & (ev.direction == "up")]
    t_mid = float(ups["t_s"].iloc[0]) + 1e-3  # just after the first upload started
    run_dir, summary = run_scenario(SCN / "surrogate_quickstart.yaml",
                                    base + [f"duration_s={t_mid!r}"], out=tmp_path / "cut", plots=False)
    ev = _check(run_dir, summary)
    cut = ev[(ev.event == "send_failed") & (ev.detail == "duration_end")]
    assert len(cut) >= 1 and (cut["bits_delivered"] > 0).all()
    assert summary["totals"]["bits_lost"] > 0 and summary["simulated_time_s"] == t_mid
    assert summary["n_rounds"] == 0 and summary["totals"]["bits_up"] > 0  # no row, but counted


def test_a_scenario_that_cannot_fit_in_memory_is_refused_up_front(tmp_path):
    from sim.resources import estimate_memory_bytes, memory_problems
    from sim.scenario import ScenarioError, load_scenario

    small = load_scenario(SCN / "hex7_uma_mixed.yaml")
    scn = small.model_copy(update={"clients": small.clients.model_copy(update={"n_clients": 1_000_000})})
    need = estimate_memory_bytes(1_000_000, 21, checkpoint=True)
    assert need > 5 * 2 ** 30  # the state of 1e6 clients over 21 cells, twice while checkpointing
    lines = memory_problems(scn, available=need - 1)
    assert len(lines) == 1 and lines[0].startswith("clients.n_clients: 1,000,000 clients over 21 cells")
    assert "GiB" in lines[0] and "Fix:" in lines[0]
    assert memory_problems(scn, available=need) == []
    with pytest.raises(ScenarioError, match=r"clients\.n_clients: 9,000,000 clients .* need about .* GiB"):
        load_scenario(SCN / "surrogate_quickstart.yaml", ["clients.n_clients=9000000"])  # validate
    q = load_scenario(SCN / "surrogate_quickstart.yaml")
    huge = q.model_copy(update={"clients": q.clients.model_copy(update={"n_clients": 9_000_000})})
    with pytest.raises(ScenarioError, match="need about .* GiB"):  # and the run, before allocating
        run_scenario(huge, out=tmp_path / "r", plots=False)

"""fedwave sweep: grid expansion and naming, validation before anything runs, failed
variants recorded, identical results whatever the backend, the sweep.csv contract."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.scenario import ScenarioError
from sim.sweep import (FIXED_COLUMNS, SweepError, SweepSpec, expand, format_value,
                       load_sweep_file, parse_grid, parse_seeds, run_sweep, validate)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "scenarios" / "surrogate_quickstart.yaml"
FAST = ("fl.rounds=2", "fl.clients_per_round=2")  # each variant: a fraction of a second
runner = CliRunner()


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _without_wall(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


# ----------------------------------------------------------------------------- spec
def test_parse_grid_values_are_yaml_and_numbers():
    assert parse_grid("fl.clients_per_round=2,4,8") == ("fl.clients_per_round", (2, 4, 8))
    key, vals = parse_grid("network.uplink_bandwidth_hz=5e6, 20e6")
    assert key == "network.uplink_bandwidth_hz" and vals == (5e6, 20e6)
    assert all(isinstance(v, float) for v in vals)  # YAML alone would read '5e6' as text
    assert parse_grid("network.mac.kind=equal_share,round_robin")[1] == ("equal_share",
                                                                        "round_robin")
    assert parse_grid("a.speed_mps=[[0.8, 1.6], [5, 10]]")[1] == ([0.8, 1.6], [5, 10])


@pytest.mark.parametrize("item, match", [
    ("fl.rounds", "expected key.path=value1,value2"),
    ("seed=1,2", "swept with --seeds"),
    ("fl.rounds=2,2.0", "repeated value"),
])
def test_parse_grid_errors(item, match):
    with pytest.raises(SweepError, match=match):
        parse_grid(item)


def test_parse_seeds():
    assert parse_seeds("0,1,2") == (0, 1, 2)
    assert parse_seeds("0-2,7") == (0, 1, 2, 7)
    for bad in ("3-1", "a", "1,1"):
        with pytest.raises(SweepError, match="--seeds"):
            parse_seeds(bad)


def test_format_value_is_short_and_file_safe():
    assert [format_value(v) for v in (5e6, 20e6, 0.05, 1e-5, 3, 2.5, True, "a/b")] == \
        ["5e6", "2e7", "0.05", "1e-5", "3", "2.5", "true", "a_b"]


def test_expand_order_names_and_overrides():
    spec = SweepSpec(base=BASE, grid=(("fl.clients_per_round", (2, 4)),
                                      ("network.uplink_bandwidth_hz", (5e6, 20e6))),
                     seeds=(0, 1), sets=FAST)
    vs = expand(spec)
    assert [v.name for v in vs] == [
        f"clients_per_round={k},uplink_bandwidth_hz={b},seed={s}"
        for k in (2, 4) for b in ("5e6", "2e7") for s in (0, 1)]
    v = vs[5]  # clients_per_round=4, 5e6, seed 1
    assert v.params == (("fl.clients_per_round", 4), ("network.uplink_bandwidth_hz", 5e6))
    assert v.seed == 1
    # the fixed --set items first, the grid values after them (the grid wins), the seed last
    assert v.overrides == FAST + ("fl.clients_per_round=4",
                                  "network.uplink_bandwidth_hz=5000000.0", "seed=1")
    scn = dict(validate(spec))[v]
    assert (scn.fl.clients_per_round, scn.network.uplink_bandwidth_hz, scn.seed) == (4, 5e6, 1)


def test_expand_disambiguates_keys_with_the_same_leaf():
    spec = SweepSpec(base=BASE, grid=(("network.noise_figure_db", (5,)),
                                      ("clients.devices.0.power_w", (3.0,)),
                                      ("clients.devices.0.weight", (1,)),
                                      ("fl.options.n_samples", (100,))))
    assert [v.name for v in expand(spec)] == [
        "noise_figure_db=5,power_w=3,weight=1,n_samples=100"]
    spec = SweepSpec(base=BASE, grid=(("network.noise_figure_db", (5,)),
                                      ("network.ue_noise_figure_db", (9,)),
                                      ("fl.deadline_s", (10,)), ("fl.options.deadline_s", (1,))))
    assert expand(spec)[0].name == ("noise_figure_db=5,ue_noise_figure_db=9,"
                                    "fl.deadline_s=10,fl.options.deadline_s=1")


def test_sweep_file(tmp_path):
    (tmp_path / "scn").mkdir()
    (tmp_path / "scn" / "base.yaml").write_text(BASE.read_text())
    f = tmp_path / "s.yaml"
    f.write_text("base: scn/base.yaml\nset: {fl.rounds: 2}\n"
                 "grid: {fl.clients_per_round: [2, 4], network.uplink_bandwidth_hz: [5e6]}\n"
                 "seeds: 0-1\n")
    spec = load_sweep_file(f)
    assert spec.base == tmp_path / "scn" / "base.yaml"  # relative to the sweep file
    assert spec.grid == (("fl.clients_per_round", (2, 4)),
                         ("network.uplink_bandwidth_hz", (5e6,)))
    assert spec.seeds == (0, 1) and spec.sets == ("fl.rounds=2",)
    assert len(validate(spec)) == 4
    f.write_text("grid: {fl.rounds: 3}\nseed: [1]\n")
    with pytest.raises(SweepError) as exc:
        load_sweep_file(f)
    lines = exc.value.lines
    assert any(ln.startswith("base: the base scenario file is required") for ln in lines)
    assert any(ln.startswith("grid.fl.rounds: must be a list") for ln in lines)
    assert any(ln.startswith("seed: unknown key") and "seeds" in ln for ln in lines)


def test_validate_names_every_bad_variant_and_its_key():
    spec = SweepSpec(base=BASE, grid=(("fl.clients_per_round", (2, 40)),
                                      ("network.uplink_bandwidth_hz", (-5, 5e6))))
    with pytest.raises(ScenarioError) as exc:
        validate(spec)
    lines = exc.value.lines
    assert any(ln.startswith("network.uplink_bandwidth_hz:") and "-5" in ln and "Fix:" in ln
               and "uplink_bandwidth_hz=-5" in ln for ln in lines)
    assert any(ln.startswith("fl.clients_per_round:") and "40" in ln and "Fix:" in ln
               for ln in lines)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("grid, match", [
    ("fl.clients_per_rnd=2,4", "--grid fl.clients_per_rnd: no key 'clients_per_rnd' under fl"),
    ("network.uplink_bandwidth_hz=5e6,-1", "network.uplink_bandwidth_hz: .*greater than or equal to 1000"),
])
def test_cli_bad_grid_writes_nothing(tmp_path, grid, match):
    out = tmp_path / "sweep"
    r = runner.invoke(app, ["sweep", str(BASE), "--grid", grid, "--seeds", "0,1",
                            "--out", str(out), "--workers", "2", "--backend", "inline"])
    assert r.exit_code == 2, r.output
    assert "Fix:" in r.output
    assert re.search(match, r.output.replace("\n", " ")), r.output
    assert not out.exists()


def test_cli_dry_run_lists_variants_and_writes_nothing(tmp_path):
    out = tmp_path / "sweep"
    r = runner.invoke(app, ["sweep", str(BASE), "--grid", "fl.clients_per_round=2,4",
                            "--seeds", "3-4", "--dry-run", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.split("\n")[:4] == [f"clients_per_round={k},seed={s}"
                                        for k in (2, 4) for s in (3, 4)]
    assert not out.exists()


def test_cli_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sim.sweep

    monkeypatch.setattr(sim.sweep, "_ray_available", lambda: False)
    r = runner.invoke(app, ["sweep", str(BASE), "--grid", "fl.rounds=1,2", "--backend", "ray",
                            "--out", str(tmp_path / "s")])
    assert r.exit_code == 2
    assert "pip install 'fedwave[ray]'" in r.output
    assert not (tmp_path / "s").exists()


def test_cli_nested_worker_pools_are_refused(tmp_path):
    """A parallel sweep of variants that each start a worker pool: a clear error, nothing run."""
    out = tmp_path / "s"
    r = runner.invoke(app, ["sweep", str(BASE), "--grid", "fl.rounds=1,2", "--backend", "process",
                            "--set", "execution.backend=process", "--out", str(out)])
    assert r.exit_code == 2, r.output
    text = r.output.replace("\n", " ")
    assert "execution.backend" in text and "Fix: --backend inline" in text
    assert not out.exists()


def test_variant_the_run_would_refuse_is_refused_before_anything_runs(tmp_path):
    """A trace of 10 clients fits n_clients=10, not 12: validation finds it (key path, variant)."""
    trace = tmp_path / "trace10.csv"
    trace.write_text("t,client,x,y\n" + "".join(
        f"0,{c},{20 + 10 * c},0\n100,{c},{20 + 10 * c},50\n" for c in range(10)))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        f"base: {BASE}\n"
        f"set: {{fl.rounds: 2, fl.clients_per_round: 2, "
        f"clients.groups.0.mobility: {{kind: trace, path: {trace}}}}}\n"
        "grid: {clients.n_clients: [10, 12]}\nseeds: [0]\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(out)])
    assert r.exit_code == 2, r.output
    text = r.output.replace("\n", " ")
    assert "clients.groups.0.mobility" in text and "has 10 clients; its group has 12" in text
    assert "(variant n_clients=12,seed=0)" in text and not out.exists()


def test_failing_variant_is_recorded_and_others_run(tmp_path, monkeypatch):
    """A variant that fails at run time (here: its radio cannot be built) is recorded."""
    import sim.radio

    build = sim.radio.build_radio

    def fail_for_12(scn, rng):
        if scn.clients.n_clients == 12:
            raise ValueError("The trace has 10 clients; its group has 12.")
        return build(scn, rng)

    monkeypatch.setattr(sim.radio, "build_radio", fail_for_12)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"base: {BASE}\nset: {{fl.rounds: 2, fl.clients_per_round: 2}}\n"
                          "grid: {clients.n_clients: [10, 12]}\nseeds: [0]\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sweep", str(sweep_file), "--seeds", "0,1", "--out", str(out),
                            "--backend", "inline"])
    assert r.exit_code == 1, r.output
    rows = _read(out / "sweep.csv")
    assert [(r["clients.n_clients"], r["seed"], r["status"]) for r in rows] == [
        ("10", "0", "ok"), ("10", "1", "ok"), ("12", "0", "failed"), ("12", "1", "failed")]
    for row in rows[2:]:
        assert "has 10 clients; its group has 12" in row["error"]
        assert row["simulated_time_s"] == "" and row["final_accuracy"] == ""
        run_dir = out / row["run_dir"]
        assert "has 10 clients" in (run_dir / "error.txt").read_text()
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    for row in rows[:2]:
        assert row["error"] == "" and float(row["simulated_time_s"]) > 0
        assert (out / row["run_dir"] / "rounds.csv").exists()
    assert "2 of 4 variants failed" in r.output


# ----------------------------------------------------------------------------- outputs
def _spec() -> SweepSpec:
    return SweepSpec(base=BASE, grid=(("fl.clients_per_round", (2, 3)),
                                      ("network.uplink_bandwidth_hz", (5e6, 20e6))),
                     seeds=(0, 1), sets=("fl.rounds=2",))


def test_sweep_csv_columns_match_each_run(tmp_path):
    out = tmp_path / "s"
    r = runner.invoke(app, ["sweep", str(BASE), "--grid", "fl.clients_per_round=2,3",
                            "--seeds", "5", "--set", "fl.rounds=2", "--out", str(out),
                            "--backend", "inline"])
    assert r.exit_code == 0, r.output
    assert "clients_per_round" in r.output and "2/2" not in r.output  # one seed per point
    assert "(modelled)" in r.output
    with open(out / "sweep.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["fl.clients_per_round"] + list(FIXED_COLUMNS)
    assert list(FIXED_COLUMNS) == [
        "seed", "status", "error", "learner", "n_rounds", "simulated_time_s", "bits_up",
        "bits_down", "energy_j", "updates_delivered", "failures", "events", "final_accuracy",
        "final_accuracy_lo", "final_accuracy_hi", "final_loss", "wall_time_s", "run_dir"]
    rows = _read(out / "sweep.csv")
    assert [r["run_dir"] for r in rows] == ["clients_per_round=2,seed=5",
                                            "clients_per_round=3,seed=5"]
    for row in rows:
        s = json.loads((out / row["run_dir"] / "summary.json").read_text())
        assert s["seed"] == 5 and s["learner"] == row["learner"] == "surrogate"
        assert float(row["simulated_time_s"]) == s["simulated_time_s"]
        assert float(row["final_accuracy"]) == s["final"]["accuracy"]
        assert float(row["final_loss"]) == s["final"]["loss"]
        # the surrogate's accuracy is modelled: no interval to report
        assert row["final_accuracy_lo"] == row["final_accuracy_hi"] == ""
        assert s["final"]["accuracy_lo"] is None
        for k in ("bits_up", "bits_down", "energy_j"):
            assert float(row[k]) == s["totals"][k]
        for k in ("updates_delivered", "failures", "events"):
            assert int(row[k]) == s["totals"][k]
        assert int(row["n_rounds"]) == s["n_rounds"] == 2
    assert [int(r["updates_delivered"]) for r in rows] == [4, 6]  # the grid value reached it
    assert (out / "sweep.yaml").exists()


def test_results_identical_across_backends(tmp_path):
    spec = _spec()
    inline = run_sweep(spec, tmp_path / "inline", backend="inline")
    pool = run_sweep(spec, tmp_path / "pool", backend="process", workers=2)
    assert all(r["status"] == "ok" for r in inline)
    assert (_without_wall(_read(tmp_path / "inline" / "sweep.csv"))
            == _without_wall(_read(tmp_path / "pool" / "sweep.csv")))
    for row in inline:
        for f in ("rounds.csv", "events.parquet"):
            assert ((tmp_path / "inline" / row["run_dir"] / f).read_bytes()
                    == (tmp_path / "pool" / row["run_dir"] / f).read_bytes())
    assert [r["run_dir"] for r in pool] == [v.name for v in expand(spec)]
    # the seed reaches the run: the two seeds of a grid point differ
    assert inline[0]["simulated_time_s"] != inline[1]["simulated_time_s"]


def test_ray_backend_matches_inline(tmp_path):
    pytest.importorskip("ray")
    spec = SweepSpec(base=BASE, grid=(("fl.clients_per_round", (2, 3)),), seeds=(0,),
                     sets=("fl.rounds=2",))
    run_sweep(spec, tmp_path / "inline", backend="inline")
    run_sweep(spec, tmp_path / "ray", backend="ray", workers=2)
    assert (_without_wall(_read(tmp_path / "inline" / "sweep.csv"))
            == _without_wall(_read(tmp_path / "ray" / "sweep.csv")))


def test_example_sweep_files_are_valid():
    """Every sweep file shipped in scenarios/sweeps/ validates (all its variants)."""
    files = sorted((ROOT / "scenarios" / "sweeps").glob("*.yaml"))
    assert files
    for f in files:
        r = runner.invoke(app, ["sweep", str(f), "--dry-run"])
        assert r.exit_code == 0, f"{f.name}: {r.output}"
        assert "all valid" in r.output

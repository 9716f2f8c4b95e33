"""Validation checks, at load time and with the key path, everything a run checks.

Every plug-in point's options are typed (one registry per point generates the schema),
numbers are finite, YAML numbers follow YAML 1.2, aliases are bounded, values without
physical sense are refused, files a run reads are checked, and none of it imports torch.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from fl.core.algorithm import ALGORITHMS
from fl.lm.partition import PARTITIONERS
from sim.cli import app
from simkit import GOOD_YAML as GOOD
from sim.mac import MAC
from sim.radio_config import DROPS, FADING, LAYOUTS, MOBILITY, PATHLOSS, RATES
from sim.scenario import (MAX_YAML_NODES, Scenario, ScenarioError, apply_overrides, load_scenario,
                          load_yaml, parse_scenario)
from sim.selection import SELECTION

ROOT = Path(__file__).resolve().parents[2]


REGISTRIES = {"layout": LAYOUTS, "drop": DROPS, "mobility": MOBILITY, "pathloss": PATHLOSS,
              "fading": FADING, "rate": RATES, "mac": MAC, "selection": SELECTION,
              "partitioner": PARTITIONERS, "algorithm": ALGORITHMS}


def _data() -> dict:
    return load_yaml(GOOD)


def _errors(data: dict, overrides=()) -> str:
    with pytest.raises(ScenarioError) as info:
        if overrides:
            apply_overrides(data, list(overrides))
        parse_scenario(data)
    return "\n".join(info.value.lines)


def _set(data: dict, path: str, value) -> dict:
    cur = data
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
    cur[keys[-1]] = value
    return data


# ----------------------------------------------------------------------------- every plug-in point
@pytest.mark.parametrize("where, value, pattern", [
    ("network.layout", {"kind": "hex_grid", "isd_m": "far"},
     r"^network\.layout\.isd_m: .*got 'far'\. Fix: give a number\.$"),
    ("clients.drop", {"kind": "uniform_disc", "min_distance_m": "near"},
     r"^clients\.drop\.min_distance_m: .*got 'near'\. Fix: give a number\.$"),
    ("clients.groups.0.mobility", {"kind": "gauss_markov", "alpha": "high"},
     r"^clients\.groups\.0\.mobility\.alpha: .*got 'high'\. Fix: give a number\.$"),
    ("network.pathloss", {"kind": "rma", "street_width_m": "wide"},
     r"^network\.pathloss\.street_width_m: .*got 'wide'\. Fix: give a number\.$"),
    ("network.fading", {"kind": "rician", "k_factor_db": "strong"},
     r"^network\.fading\.k_factor_db: .*got 'strong'\. Fix: give a number\.$"),
    ("network.rate", {"kind": "shannon", "gap_db": "not-a-number"},
     r"^network\.rate\.gap_db: .*got 'not-a-number'\. Fix: give a number\.$"),
    ("network.mac", {"kind": "proportional_fair", "time_constant_s": "slow"},
     r"^network\.mac\.time_constant_s: .*got 'slow'\. Fix: give a number\.$"),
    ("fl.selection", {"kind": "deadline_aware", "margin": "some"},
     r"^fl\.selection\.margin: .*got 'some'\. Fix: give a number\.$"),
    ("fl.options", {"upload_bits": "many"},
     r"^fl\.options\.upload_bits: .*got 'many'\. Fix: give an integer\.$"),
])
def test_bad_option_type_in_every_plug_in_point_names_the_key(where, value, pattern):
    msg = _errors(_set(_data(), where, value))
    assert len(msg.splitlines()) == 1, msg
    assert re.search(pattern, msg), msg


def test_bad_option_type_in_the_partitioner_and_algorithm_options():
    data = _set(_data(), "fl.algorithm", "fedavg_lora")
    _set(data, "fl.options", {"local_steps": "few", "partition": {"kind": "dirichlet", "alpha": "x"}})
    msg = _errors(data)
    assert "fl.options.local_steps: Input should be a valid integer" in msg
    assert "fl.options.partition.alpha: " in msg and "got 'x'. Fix: give a number." in msg


@pytest.mark.parametrize("where, value, point", [
    ("network.layout", {"kind": "circle"}, "layout"),
    ("clients.drop", {"kind": "rain"}, "client drop"),
    ("clients.groups.0.mobility", "teleport", "mobility model"),
    ("network.pathloss", "vacuum", "path-loss model"),
    ("network.fading", "wobbly", "fading model"),
    ("network.rate", {"kind": "magic"}, "rate mapping"),
])
def test_unknown_kind_lists_the_kinds(where, value, point):
    msg = _errors(_set(_data(), where, value))
    kind = value["kind"] if isinstance(value, dict) else value
    registry = next(r for r in REGISTRIES.values() if r.what == point)
    assert msg == (f"{where}.kind: unknown {point}; got {kind!r}. "
                   f"Fix: use one of: {', '.join(registry.names())}.")


def test_options_of_another_kind_are_unknown_keys():
    msg = _errors(_set(_data(), "network.rate", {"kind": "cqi", "max_se_bps_hz": 6}))
    assert msg.startswith("network.rate.max_se_bps_hz: unknown key; got 6. Fix: remove it")
    assert "allowed here: gap_db, kind, overhead, table" in msg


def test_shorthands_and_default_kinds_still_work():
    data = _set(_data(), "network.fading", {"block_s": 0.02})  # kind defaults to rayleigh
    _set(data, "network.mac", "round_robin")
    _set(data, "network.pathloss", "umi")
    scn = parse_scenario(data)
    assert scn.network.fading.kind == "rayleigh" and scn.network.fading.block_s == 0.02
    assert scn.network.mac.kind == "round_robin" and scn.network.pathloss.kind == "umi"
    assert scn.fl.options.upload_bits == 8_000_000  # the algorithm's config, defaults filled


def test_set_reaches_nested_plug_in_options():
    data = _data()
    apply_overrides(data, ["network.rate.gap_db=2", "network.rate.max_se_bps_hz=1e1",
                           "network.mac=proportional_fair", "network.mac.time_constant_s=0.5",
                           "fl.options.header_bits=8"])
    scn = parse_scenario(data)
    assert scn.network.rate.kind == "shannon" and scn.network.rate.gap_db == 2
    assert scn.network.rate.max_se_bps_hz == 10.0
    assert scn.network.mac.kind == "proportional_fair" and scn.network.mac.time_constant_s == 0.5
    assert scn.fl.options.header_bits == 8
    with pytest.raises(ScenarioError, match=r"--set network\.pathloss\.exponent: no key 'exponent' "
                                            r"under network\.pathloss\. Fix: use one of: h_e_m, kind"):
        apply_overrides(_data(), ["network.pathloss.exponent=3"])
    data = _data()
    apply_overrides(data, ["fl.algorithm=fedavg_lora", "fl.options.local_steps=0"])
    assert _errors(data) == ("fl.options.local_steps: Input should be greater than or equal to 1; "
                             "got 0. Fix: give a number >= 1.")


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("old, new, key", [
    ("uplink_bandwidth_hz: 10.0e6", "uplink_bandwidth_hz: .nan", "network.uplink_bandwidth_hz"),
    ("uplink_bandwidth_hz: 10.0e6", "uplink_bandwidth_hz: .inf", "network.uplink_bandwidth_hz"),
    ("radius_m: 200", "radius_m: -.inf", "network.layout.radius_m"),
    ("rounds: 2", "rounds: 2\n  options: {flops_per_round: .nan}", "fl.options.flops_per_round"),
    ("layout: {kind: single_cell, radius_m: 200}",
     "layout: {kind: explicit, sites_xy_m: [[0, 0], [.nan, 5]]}", "network.layout.sites_xy_m.1.0"),
    ("mobility: {kind: static}", "mobility: {kind: random_waypoint, speed_mps: [1, .inf]}",
     "clients.groups.0.mobility.speed_mps.1"),
])
def test_nan_and_infinities_are_refused_with_the_key(tmp_path, old, new, key):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    assert info.value.lines[0].startswith(f"{key}: Input should be a finite number; got ")
    assert info.value.lines[0].endswith("Fix: give a finite number (not .nan or .inf).")


def test_yaml_1_2_numbers():
    assert load_yaml("a: 1e1\nb: 8.0e6\nc: 1E-3\nd: -2.5e+3\ne: .5\nf: 10\ng: 1e\nh: 0.5.1") == {
        "a": 10.0, "b": 8e6, "c": 1e-3, "d": -2500.0, "e": 0.5, "f": 10, "g": "1e", "h": "0.5.1"}
    data = load_yaml(GOOD.replace("10.0e6", "1e7"))
    assert parse_scenario(data).network.uplink_bandwidth_hz == 1e7
    import yaml

    assert yaml.safe_load("a: 1e1") == {"a": "1e1"}  # a loader subclass, not a global patch


@pytest.mark.timeout(20)
def test_alias_bomb_is_refused():
    # 12 levels of 10 aliases each: 10**12 values once expanded (minutes, then out of memory)
    levels = [f"l0: &l0 [{', '.join(['lol'] * 10)}]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 13)]
    text = GOOD + "bomb:\n" + "".join(f"  {ln}\n" for ln in levels)
    with pytest.raises(ScenarioError, match=rf"bomb\.yaml: the YAML expands to more than "
                                            rf"{MAX_YAML_NODES:,} values .* alias bomb\. Fix: "):
        load_yaml(text, "bomb.yaml")


@pytest.mark.timeout(20)
def test_recursive_alias_is_refused_and_small_aliases_are_fine():
    with pytest.raises(ScenarioError, match=r"r\.yaml: an alias refers to a node that contains it"):
        load_yaml("a: &a [1, *a]\n", "r.yaml")
    assert load_yaml("a: &a {x: 1}\nb: [*a, *a]\n") == {"a": {"x": 1}, "b": [{"x": 1}, {"x": 1}]}


# ----------------------------------------------------------------------------- physical sense
@pytest.mark.parametrize("where, value, pattern", [
    ("network.uplink_bandwidth_hz", 1e-300,
     r"^network\.uplink_bandwidth_hz: Input should be greater than or equal to 1000; got 1e-300\. "
     r"Fix: give a number >= 1000\.$"),
    ("network.carrier_hz", 2e11,
     r"^network\.carrier_hz: must be in \[0\.5e9, 100e9\]; got 2e\+11\. Fix: .*path loss 'uma'"),
    ("network.carrier_hz", 1e15,
     r"^network\.carrier_hz: .*; got 1000000000000000\.0\. Fix: give a number <= 3e\+11\.$"),
    ("network.ue_height_m", 40.0, r"^network\.ue_height_m: must be in \[1\.5, 22\.5\]; got 40"),
    ("network.layout", {"kind": "explicit", "sites_xy_m": [[0, 0], [50, 0], [0, 0]]},
     r"^network\.layout\.sites_xy_m: sites 0 and 2 are both at \[0\.0, 0\.0\]; .*Fix: remove the "
     r"duplicate"),
    ("network.layout", {"kind": "explicit", "sites_xy_m": [[0, 0], [1e300, 0]]},
     r"^network\.layout\.sites_xy_m\.1\.0: .*<= 1e\+07"),
    ("clients.devices", [{"name": "phone", "flops_per_s": 0}],
     r"^clients\.devices\.0\.flops_per_s: Input should be greater than 0; got 0\. Fix: give a number > 0"),
    ("server.flops_per_s", -1.0, r"^server\.flops_per_s: Input should be greater than 0"),
    ("clients.tx_power_dbm", 300, r"^clients\.tx_power_dbm: .*<= 60"),
    ("clients.drop", {"kind": "hotspots", "centers_xy_m": [[0, 0]], "radius_m": 0},
     r"^clients\.drop\.radius_m: Input should be greater than 0; got 0\. Fix: give a number > 0\.$"),
    ("clients.drop", {"kind": "hotspots", "centers_xy_m": [[5000, 0]], "radius_m": 50},
     r"^clients\.drop: hotspot 0 lies outside every cell .*Fix: move it into the area"),
    ("clients.drop", {"kind": "uniform_disc", "center_xy_m": [0, 9000], "radius_m": 100},
     r"^clients\.drop: the disc around \[0\.0, 9000\.0\] .* lies outside every cell"),
    ("clients.drop", {"kind": "uniform_disc", "radius_m": 1000},
     r"^clients\.drop: the drop \(uniform_disc\) puts clients of group 'walkers' outside the area "
     r"they move in .*Fix: shrink the drop region"),
    ("clients.drop", {"kind": "in_cells", "min_distance_m": 500},
     r"^clients\.drop\.min_distance_m: must be in \[0, the cell inradius 173\.205 m\); got 500"),
    ("clients.drop", {"kind": "explicit", "xy_m": [[0, 0]]},
     r"^clients\.drop\.xy_m: must hold one position per client \(4\); got 1 positions"),
    ("clients.groups.0.mobility", {"kind": "constant_velocity", "start_xy_m": [0, 0],
                                   "end_xy_m": [100, 0], "speed_mps": 10, "offset_m": [0, 5]},
     r"^clients\.groups\.0\.mobility\.offset_m: must have one entry per client of group 'walkers' "
     r"\(4\); got 2 entries"),
    ("clients.groups.0.mobility", {"kind": "constant_velocity", "start_xy_m": [0, 0],
                                   "end_xy_m": [0, 0], "speed_mps": 10},
     r"^clients\.groups\.0\.mobility\.end_xy_m: must be > 0; got 0 at index 0\. Fix: Each road"),
    ("fl.options", {"n_samples": [10, 20]},
     r"^fl\.options\.n_samples: must have one entry per client \(4\)\. Got 2 entries instead\. Fix:"),
])
def test_values_without_physical_sense_are_refused_with_the_key(where, value, pattern):
    msg = _errors(_set(_data(), where, value))
    assert re.search(pattern, msg), msg


# ----------------------------------------------------------------------------- files
def _trace(tmp_path, body: str) -> Path:
    p = tmp_path / "walk.csv"
    p.write_text("t,client,x,y\n" + body)
    return p


def test_missing_trace_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: from the working directory, as the run reads them
    data = _set(_data(), "clients.groups.0.mobility", {"kind": "trace", "path": "traces/walk.csv"})
    msg = _errors(data)
    assert msg.startswith("clients.groups.0.mobility.path: no such trace file; got 'traces/walk.csv' "
                          f"(looked for {tmp_path / 'traces' / 'walk.csv'}). Fix: ")
    (tmp_path / "traces").mkdir()
    _trace(tmp_path / "traces", "".join(f"0,{c},{c},0\n9,{c},{c},9\n" for c in range(4)))
    assert parse_scenario(data).clients.groups[0].mobility.path == "traces/walk.csv"


def test_malformed_trace_row_names_file_and_line(tmp_path):
    p = _trace(tmp_path, "0,0,1,1\n0,1,2,2\n5,1,2,oops\n")
    msg = _errors(_set(_data(), "clients.groups.0.mobility", {"kind": "trace", "path": str(p)}))
    assert msg == (f"clients.groups.0.mobility.path: the trace is malformed: {p}, line 4: column 'y' "
                   "must be a number. Got 'oops' instead. Fix: correct that line of the file.")


def test_trace_far_away_and_client_count(tmp_path):
    p = _trace(tmp_path, "0,0,1,1\n0,1,2,2\n0,2,1e300,2\n0,3,1,1\n")
    msg = _errors(_set(_data(), "clients.groups.0.mobility", {"kind": "trace", "path": str(p)}))
    assert msg.startswith(f"clients.groups.0.mobility.path: {p}, line 4: positions must lie within "
                          "±1e+07 m; got (1e+300, 2).")
    p = _trace(tmp_path, "0,0,1,1\n0,1,2,2\n")
    msg = _errors(_set(_data(), "clients.groups.0.mobility", {"kind": "trace", "path": str(p)}))
    assert "which has 2 clients; its group has 4. Fix: record one trajectory per client" in msg


def test_model_and_dataset_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _set(_data(), "fl.algorithm", "fedavg_lora")
    _set(data, "fl.options", {"model": "models/tiny.gguf", "data": {"dataset": "data/train.jsonl"}})
    lines = _errors(copy.deepcopy(data)).splitlines()
    assert lines[0].startswith("fl.options.model.name_or_path: no such GGUF file; got "
                               "'models/tiny.gguf' (looked for")
    assert lines[1].startswith("fl.options.data.dataset: no such file or directory; got "
                               "'data/train.jsonl' (looked for")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    with pytest.raises(ScenarioError, match=r"fl\.options\.data\.dataset: data/train\.jsonl: all 1 rows "
                                            r"have the label 'x'"):  # the rows are checked too
        parse_scenario(copy.deepcopy(data))
    rows = [f'{{"text": "quotation number {i} about {k}s and more", "label": "{k}"}}'
            for i in range(20) for k in ("x", "y")]
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    parse_scenario(data)  # a Hugging Face id is not a file: looked up when the model loads
    parse_scenario(_set(data, "fl.options.model", "HuggingFaceTB/SmolLM2-135M"))


# ----------------------------------------------------------------------------- schema
def test_schema_lists_the_options_of_every_kind():
    r = CliRunner().invoke(app, ["schema"])
    assert r.exit_code == 0
    schema = json.loads(r.output)
    defs = schema["$defs"]
    assert defs["RateShannon"]["properties"]["gap_db"]["type"] == "number"
    assert "description" in defs["RateShannon"]["properties"]["gap_db"]
    assert defs["FlFedavgLora"]["properties"]["options"] == {
        "$ref": "#/$defs/FedAvgLoRAConfig",
        "description": "Options of fedavg_lora, checked by its config (FedAvgLoRAConfig)."}
    assert defs["FedAvgLoRAConfig"]["properties"]["local_steps"]["minimum"] == 1
    text = json.dumps(schema)
    for point, registry in REGISTRIES.items():
        for name, config in registry.items():
            for field in config.model_fields:
                assert f'"{field}"' in text, (point, name, field)
            assert f'"{name}"' in text, (point, name)


@pytest.mark.parametrize("point", sorted(REGISTRIES))
def test_every_plug_in_config_is_small_frozen_typed_and_described(point):
    for name, config in REGISTRIES[point].items():
        cfg = config.model_config
        assert cfg.get("extra") == "forbid" and cfg.get("frozen") and cfg.get("allow_inf_nan") is False
        for field_name, field in config.model_fields.items():
            assert field.annotation is not None, (name, field_name)
            assert field.description, f"{point} {name}: option {field_name!r} has no description"


def _channel_params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


# scenario defaults that differ from the library's on purpose
SCENARIO_DEFAULTS = {("hex_grid", "n_sectors"): 3}  # 38.901's three-sector sites
PROVIDED = {"layout": set(), "drop": {"rng", "n", "layout"},
            "mobility": {"rng", "n_ue", "xy_m", "start_xy_m"}, "pathloss": set(), "rate": {"kind"}}


@pytest.mark.parametrize("point", sorted(PROVIDED))
def test_radio_configs_match_their_builders_keyword_arguments(point):
    """A config's fields are its builder's keyword arguments (minus what the simulator
    provides), with the same defaults: building from the config is building as before."""
    registry = REGISTRIES[point]
    for name, config in registry.items():
        params = _channel_params(registry.get(name))
        fields = set(config.model_fields) - {"kind"}
        assert fields <= set(params), (name, fields - set(params))
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty
                    and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
        if point == "mobility" and name == "constant_velocity":
            required -= {"start_xy_m"}  # the road is YAML's, not the drop's
        assert required - PROVIDED[point] <= fields, (name, required - PROVIDED[point] - fields)
        for f in fields:
            default = params[f].default
            if default is not inspect.Parameter.empty and not config.model_fields[f].is_required():
                want = SCENARIO_DEFAULTS.get((name, f), default)
                assert config.model_fields[f].get_default(call_default_factory=True) == want, (name, f)


def test_scenario_specs_pickle():
    scn = load_scenario(ROOT / "scenarios" / "indoor_office.yaml")
    again = pickle.loads(pickle.dumps(scn))
    assert again == scn and type(again.network.mac).__name__ == "MacProportionalFair"


def test_group_names_are_contiguous_blocks_by_largest_remainder():
    groups = ("[{name: a, fraction: 0.5, mobility: static}, {name: b, fraction: 0.3, mobility: static},"
              " {name: c, fraction: 0.2, mobility: static}]")
    scn = load_scenario(ROOT / "scenarios" / "surrogate_quickstart.yaml",
                        ["clients.n_clients=7", f"clients.groups={groups}"])
    # exact shares 3.5, 2.1, 1.4 -> floors 3, 2, 1; the one left goes to the largest remainder (a)
    assert scn.clients.group_names() == ["a"] * 4 + ["b"] * 2 + ["c"]


# ----------------------------------------------------------------------------- shipped files, no torch
def test_every_shipped_scenario_validates_without_torch():
    code = textwrap.dedent(f"""
        import glob, sys
        sys.path.insert(0, {str(ROOT)!r})
        from sim.scenario import load_scenario
        from sim.sweep import load_sweep_file, validate
        files = sorted(glob.glob({str(ROOT / 'scenarios' / '*.yaml')!r}))
        sweeps = sorted(glob.glob({str(ROOT / 'scenarios' / 'sweeps' / '*.yaml')!r}))
        assert files and sweeps
        for f in files:
            load_scenario(f)
        for f in sweeps:
            validate(load_sweep_file(f))
        print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_validate_reports_with_the_key_path(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(GOOD.replace("pathloss: {kind: uma}",
                              "pathloss: {kind: uma}\n  rate: {kind: shannon, gap_db: not-a-number}"))
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 2
    assert "network.rate.gap_db:" in r.output and "'not-a-number'" in r.output


def test_resolved_scenario_round_trips():
    from sim.scenario import dump_scenario

    for f in sorted((ROOT / "scenarios").glob("*.yaml")):
        scn = load_scenario(f)
        assert Scenario.model_validate(load_yaml(dump_scenario(scn))) == scn, f.name


def test_fl_options_is_the_algorithms_config():
    scn = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    assert isinstance(scn.fl.options, BaseModel) and scn.fl.options.local_steps == 4
    assert dict(scn.fl.options) and type(scn.fl.options).__name__ == "FedAvgLoRAConfig"


def test_old_flops_name_loads_with_a_warning_that_says_the_fix():
    """``flops`` (the rate's name before 0.2) still loads, as ``flops_per_s``, with a warning."""
    data = _data()
    data["clients"]["devices"] = [{"name": "phone", "flops": 3e10}]
    data["server"] = {"flops": 2e12}
    with pytest.warns(FutureWarning, match=r"'flops' is the old name of 'flops_per_s'.*rename"):
        scn = parse_scenario(data)
    assert scn.clients.devices[0].flops_per_s == 3e10 and scn.server.flops_per_s == 2e12
    both = _data()
    both["server"] = {"flops": 2e12, "flops_per_s": 2e12}
    assert "both 'flops' and 'flops_per_s'" in _errors(both)


def test_a_checkpoint_written_with_the_old_flops_name_matches_the_renamed_scenario():
    """Resume compares the checkpoint's scenario with the one given: the old key is the
    same setting."""
    from sim.checkpoint import first_difference as _first_difference, numerics as _numerics

    now = parse_scenario(_data()).model_dump(mode="json")
    old = json.loads(json.dumps(now))
    old["server"]["flops"] = old["server"].pop("flops_per_s")
    for d in old["clients"]["devices"]:
        d["flops"] = d.pop("flops_per_s")
    assert _first_difference(_numerics(old), _numerics(now)) is None
    old["server"]["flops"] = 1.0
    assert _first_difference(_numerics(old), _numerics(now))[0] == "server.flops_per_s"

"""Scenario loading: every bad input gives one clear line naming the key path and the fix."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sim.cli import app
from simkit import GOOD_YAML as GOOD
from sim.scenario import ScenarioError, apply_overrides, load_scenario



def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _bad(tmp_path, old, new, overrides=()):
    assert old in GOOD
    return load_scenario(_write(tmp_path, GOOD.replace(old, new)), overrides)


def test_good_scenario_loads(tmp_path):
    scn = load_scenario(_write(tmp_path, GOOD))
    assert scn.name == "tiny" and scn.clients.n_clients == 4
    assert scn.network.mac.kind == "equal_share"


@pytest.mark.parametrize("old, new, pattern", [
    ("uplink_bandwidth_hz: 10.0e6", "uplink_bandwidth_hz: -5",
     r"network\.uplink_bandwidth_hz: .*greater than or equal to 1000; got -5\. "
     r"Fix: give a number >= 1000\."),
    ("uplink_bandwidth_hz: 10.0e6", "uplink_bandwidth_hz: lots",
     r"network\.uplink_bandwidth_hz: .*got 'lots'\. Fix: give a number"),
    ("n_clients: 4", "n_clients: 4\n  n_clientz: 5",
     r"clients\.n_clientz: unknown key; got 5\. Fix: remove it .*allowed here: .*n_clients"),
    ("layout: {kind: single_cell, radius_m: 200}",
     "layout: {kind: explicit, sites_xy_m: []}",
     r"network\.layout\.sites_xy_m: the layout needs at least one site; got \[\]"),
    ("layout: {kind: single_cell, radius_m: 200}", "layout: {kind: hexagon}",
     r"network\.layout\.kind: unknown layout; got 'hexagon'\. "
     r"Fix: use one of: explicit, hex_grid, single_cell\."),
    ("clients_per_round: 2", "clients_per_round: 9",
     r"fl\.clients_per_round: must be <= clients\.n_clients \(4\); got 9\. Fix: lower"),
    ("algorithm: surrogate", "algorithm: fedprox",
     r"fl\.algorithm: unknown algorithm; got 'fedprox'\. Fix: use one of: .*surrogate"),
    ("rounds: 2", "rounds: 2\n  options: {upload_bitz: 3}",
     r"fl\.options\.upload_bitz: unknown key; got 3\. Fix: remove it .*upload_bits"),
    ("rounds: 2", "rounds: 2\n  options: {upload_bits: -3}",
     r"fl\.options\.upload_bits: .*got -3"),
    ("rounds: 2", "rounds: 2\n  selection: lottery",
     r"fl\.selection\.kind: unknown selection policy; got 'lottery'\. Fix: use one of: all, "),
    ("uplink_bandwidth_hz: 10.0e6", "uplink_bandwidth_hz: 10.0e6\n  mac: {kind: fifo}",
     r"network\.mac\.kind: unknown MAC policy; got 'fifo'\. Fix: use one of: equal_share"),
    ("uplink_bandwidth_hz: 10.0e6",
     "uplink_bandwidth_hz: 10.0e6\n  mac: {kind: proportional_fair, time_constant_s: 0}",
     r"network\.mac\.time_constant_s: .*got 0"),
    ("rounds: 2", "rounds: two", r"fl\.rounds: .*got 'two'\. Fix: give an integer"),
    ("seed: 3", "seed: 3\nnetwork2: {}", r"network2: unknown key"),
])
def test_bad_input_names_key_path(tmp_path, old, new, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        _bad(tmp_path, old, new)


def test_missing_required_key(tmp_path):
    with pytest.raises(ScenarioError, match=r"clients\.n_clients: required key is missing\. "
                                            r"Fix: add this key"):
        _bad(tmp_path, "  n_clients: 4\n", "")


def test_unreadable_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read the file .*Fix: check the path"):
        load_scenario(tmp_path / "nope.yaml")


def test_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match=r"s\.yaml: not valid YAML .*Fix: check indentation"):
        load_scenario(_write(tmp_path, "name: x\nnetwork: [unclosed\n"))


def test_not_a_mapping(tmp_path):
    with pytest.raises(ScenarioError, match=r"\(top level\): a scenario must be a mapping"):
        load_scenario(_write(tmp_path, "- a\n- b\n"))


def test_set_overrides_apply_before_validation(tmp_path):
    p = _write(tmp_path, GOOD)
    scn = load_scenario(p, ["fl.rounds=7", "network.mac.kind=round_robin",
                            "clients.groups.0.fraction=0.5", "fl.deadline_s=3.5"])
    assert scn.fl.rounds == 7 and scn.network.mac.kind == "round_robin"
    assert scn.clients.groups[0].fraction == 0.5 and scn.fl.deadline_s == 3.5
    with pytest.raises(ScenarioError, match=r"fl\.rounds: .*got -1"):
        load_scenario(p, ["fl.rounds=-1"])


@pytest.mark.parametrize("item, pattern", [
    ("fl.roundz=3", r"--set fl\.roundz: no key 'roundz' under fl\. Fix: use one of: .*rounds"),
    ("network.layout.isd_m=3", r"--set network\.layout\.isd_m: no key 'isd_m' under "
                               r"network\.layout\. Fix: use one of: .*radius_m"),
    ("clients.groups.3.name=x", r"--set clients\.groups\.3\.name: clients\.groups is a list of 1"),
    ("fl.rounds.x=1", r"--set fl\.rounds\.x: fl\.rounds is not a mapping"),
    ("fl.rounds", r"--set 'fl\.rounds': expected key\.path=value"),
])
def test_bad_set_path(tmp_path, item, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(_write(tmp_path, GOOD), [item])


def test_cli_validate_and_schema(tmp_path):
    runner = CliRunner()
    p = _write(tmp_path, GOOD)
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 0 and "OK" in r.output
    r = runner.invoke(app, ["validate", str(p), "--set", "fl.clients_per_round=99"])
    assert r.exit_code == 2
    assert "fl.clients_per_round: must be <= clients.n_clients" in r.output
    r = runner.invoke(app, ["schema"])
    assert r.exit_code == 0
    schema = json.loads(r.output)
    assert schema["title"] == "Scenario" and "network" in schema["properties"]

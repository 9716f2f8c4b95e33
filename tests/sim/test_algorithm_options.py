"""fl.algorithm_options: one scenario for several algorithms (each entry merged over fl.options
when its algorithm runs, checked at load time, used by fedwave compare), the shipped
scenarios/frameworks.yaml, and split_lora's cut checked against lora.layers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fl.algorithms.split_lora.config import SplitLoRAConfig
from sim.compare import CompareSpec, validate, variants_of
from sim.scenario import ScenarioError, dump_scenario, load_scenario

ROOT = Path(__file__).resolve().parents[2]

TEXT = """\
name: multi
seed: 3
network:
  layout: {kind: single_cell, radius_m: 200}
  pathloss: {kind: uma}
  uplink_bandwidth_hz: 10.0e6
clients:
  n_clients: 4
  groups:
    - {name: walkers, mobility: {kind: static}}
fl:
  algorithm: fedavg_lora
  rounds: 2
  clients_per_round: 2
  options:
    model: {kind: tiny, n_layers: 4}
    lora: {layers: {top: 2}}
    data: {max_per_class: 40, n_test: 12, n_public: 16}
    local_steps: 1
    lr: 2.0e-3
  algorithm_options:
    split_lora: {cut_layer: 3}
    kd_topk: {public_batch_size: 8, lr: 5.0e-3}
    fedsoda: {sgp_keep: 3}
"""


@pytest.fixture()
def multi(tmp_path) -> Path:
    p = tmp_path / "multi.yaml"
    p.write_text(TEXT)
    return p


@pytest.mark.parametrize("algorithm, expect", [
    ("fedavg_lora", {"lr": 2e-3}),
    ("split_lora", {"cut_layer": 3, "lr": 2e-3}),
    ("kd_topk", {"public_batch_size": 8, "lr": 5e-3}),  # its entry replaces the shared lr
    ("fedsoda", {"sgp_keep": 3, "lr": 2e-3}),
])
def test_the_running_algorithms_entry_is_merged_over_fl_options(multi, algorithm, expect):
    scn = load_scenario(multi, [f"fl.algorithm={algorithm}"])
    for key, value in expect.items():
        assert getattr(scn.fl.options, key) == value, key
    assert scn.fl.options.local_steps == 1  # shared
    # the resolved scenario repeats the block beside the merged options, and loads to itself
    again = multi.parent / "resolved.yaml"
    again.write_text(dump_scenario(scn))
    assert load_scenario(again) == scn


@pytest.mark.parametrize("override, pattern", [
    ("fl.algorithm_options={nope: {a: 1}}",
     r"fl\.algorithm_options\.nope: unknown algorithm; got 'nope'\. Fix: use one of: fedavg_lora, "),
    ("fl.algorithm_options.fedsoda={sgp_kep: 3}",
     r"fl\.algorithm_options\.fedsoda\.sgp_kep: unknown option of fedsoda; got 3\. Fix: remove it or "
     r"check the spelling \(allowed: .*sgp_keep"),
    ("fl.algorithm_options.fedsoda.sgp_keep=x",
     r"fl\.algorithm_options\.fedsoda \(over fl\.options\): sgp_keep: Input should be a valid integer"),
    ("fl.algorithm_options.kd_topk.public_batch_size=64",
     r"fl\.algorithm_options\.kd_topk \(over fl\.options\): data\.n_public \(16\) must be >= "
     r"public_batch_size \(64\)\. Fix: raise data\.n_public"),
    ("fl.algorithm_options.split_lora.cut_layer=4",
     r"fl\.algorithm_options\.split_lora \(over fl\.options\): cut_layer: must be in \[1, 3\] for this "
     r"4-layer model"),
])
def test_every_entry_is_checked_at_load_time_naming_the_key(multi, override, pattern):
    """Even entries of algorithms the scenario does not run now (fl.algorithm: fedavg_lora)."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(multi, [override])
    assert any(re.search(pattern, line) for line in info.value.lines), info.value.lines


def test_compare_merges_each_entry_and_a_set_option_has_the_last_word(multi):
    spec = CompareSpec(base=multi, algorithms=("fedavg_lora", "split_lora", "kd_topk"),
                       sets=("fl.options.cut_layer=1", "fl.options.lora.layers=null"))
    variants, dropped = variants_of(spec)
    assert dropped == {"fedavg_lora": ["cut_layer"], "split_lora": [], "kd_topk": ["cut_layer"]}
    checked = dict((v.name, scn) for v, scn in validate(spec))
    assert checked["algorithm=split_lora"].fl.options.cut_layer == 1  # the --set, not the entry's 3
    assert checked["algorithm=kd_topk"].fl.options.lr == 5e-3
    assert checked["algorithm=fedavg_lora"].fl.options.lr == 2e-3
    for scn in checked.values():
        assert scn.fl.algorithm_options == {}  # merged into fl.options, the block dropped


def test_split_lora_cut_must_leave_adapters_on_both_sides():
    def problems(cut, layers):
        return SplitLoRAConfig(model={"kind": "tiny", "n_layers": 4}, lora={"layers": layers},
                               cut_layer=cut).context_problems(4)

    assert problems(3, {"top": 2}) == [] and problems(1, None) == [] and problems(2, [1, 2]) == []
    (msg,) = problems(2, {"top": 2})
    assert msg == ("cut_layer: the client side (layers < 2) holds no LoRA adapter: lora.layers are "
                   "[2, 3]. Got 2 instead. Fix: a cut_layer in [3, 3] (adapters on both sides), or "
                   "adapt other layers.")
    (msg,) = problems(3, [0, 1])
    assert msg.startswith("cut_layer: the server side (layers >= 3) holds no LoRA adapter")


# ----------------------------------------------------------------------------- frameworks.yaml
FRAMEWORKS = ROOT / "scenarios" / "frameworks.yaml"


@pytest.mark.parametrize("algorithm", ["fedavg_lora", "kd_topk", "split_lora", "fedsoda"])
def test_frameworks_scenario_loads_for_each_of_the_four(algorithm):
    scn = load_scenario(FRAMEWORKS, [f"fl.algorithm={algorithm}"])
    o = scn.fl.options
    assert o.lora.layers.top == 8 and o.lora.rank == 8 and o.model.name_or_path == "smollm2"
    if algorithm == "split_lora":
        assert o.cut_layer == 24  # client: layers 0-23, adapters on 22 and 23
    if algorithm == "fedsoda":
        assert o.sgp_keep == 8
    if algorithm == "kd_topk":
        assert o.k == "adaptive" and o.aggregation == "adaptive" and o.mutual is False


def test_frameworks_scenario_network_is_quickstarts():
    fw = yaml.safe_load(FRAMEWORKS.read_text())
    qs = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    assert fw["network"] == qs["network"] and fw["clients"] == qs["clients"]


def test_frameworks_scenario_test_split_is_the_largest_the_data_allows():
    """n_test: auto — what bench/frameworks.py's default is too, and its note says how many
    prompts that gives (the comment's ~430: at most half of each label's examples)."""
    import re
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from benchlib import default_n_test

    scn = load_scenario(FRAMEWORKS)
    n, note = default_n_test(scn)
    assert n == scn.fl.options.data.n_test == "auto"
    prompts = int(re.search(r"auto, (\d+) prompts", note).group(1))
    assert 400 <= prompts <= 500 and "most this data allows" in note


def test_runs_written_before_the_block_existed_still_resume(multi):
    """A checkpoint's scenario without fl.algorithm_options equals one with an empty block
    (what --resume compares), and not one with entries."""
    from sim.checkpoint import first_difference as _first_difference, numerics as _numerics

    now = load_scenario(multi, ["fl.algorithm_options={}"]).model_dump(mode="json")
    old = {**now, "fl": {k: v for k, v in now["fl"].items() if k != "algorithm_options"}}
    assert now["fl"]["algorithm_options"] == {}
    assert _first_difference(_numerics(old), _numerics(now)) is None
    full = load_scenario(multi).model_dump(mode="json")
    assert _first_difference(_numerics(old), _numerics(full))[0] == "fl.algorithm_options"

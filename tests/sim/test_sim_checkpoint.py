"""Checkpoint and resume: an interrupted-then-resumed run equals an uninterrupted one."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.runner import CHECKPOINT, run_scenario

ROOT = Path(__file__).resolve().parents[2]
SCN = ROOT / "scenarios"


def _outputs(run_dir: Path):
    return pd.read_parquet(run_dir / "events.parquet"), pd.read_csv(run_dir / "rounds.csv")


def _interrupted_equals_uninterrupted(tmp_path, scenario, sets, stop_after):
    full, _ = run_scenario(scenario, sets, out=tmp_path / "full", plots=False)
    part, _ = run_scenario(scenario, sets, out=tmp_path / "part", plots=False,
                           stop_after_rounds=stop_after)
    assert len(pd.read_csv(part / "rounds.csv")) == stop_after
    assert (part / CHECKPOINT).is_file()
    assert [p.name for p in part.iterdir() if p.name.startswith(".")] == []  # atomic writes
    run_scenario(scenario, sets, out=part, plots=False, resume=True)
    (e1, r1), (e2, r2) = _outputs(full), _outputs(part)
    assert e1.equals(e2)
    assert r1.equals(r2)
    # the per-prompt results of the evaluations before the interruption travel too
    assert (full / "eval.parquet").is_file() == (part / "eval.parquet").is_file()
    if (full / "eval.parquet").is_file():
        v1, v2 = pd.read_parquet(full / "eval.parquet"), pd.read_parquet(part / "eval.parquet")
        assert v1.equals(v2)  # one evaluation per accuracy in rounds.csv, and the untrained model
        assert sorted(set(v1["round"])) == [-1] + r1.dropna(subset=["accuracy"])["round"].tolist()
    t1, t2 = (json.loads((d / "summary.json").read_text())["totals"] for d in (full, part))
    assert (t1["client_flops"], t1["server_flops"]) == (t2["client_flops"], t2["server_flops"])
    assert t1["client_flops"] > 0


@pytest.mark.parametrize("name, sets, stop_after", [
    ("surrogate_quickstart", ["fl.rounds=5"], 2),
    ("indoor_office", ["fl.rounds=4"], 1),  # hierarchical, custom backhaul, deadline
])
def test_resume_is_identical_surrogate(tmp_path, name, sets, stop_after):
    _interrupted_equals_uninterrupted(tmp_path, SCN / f"{name}.yaml", sets, stop_after)


# every real algorithm, on tiny models (rounds=3: interrupted after 1, then resumed)
REAL = {
    "quickstart": ["fl.options.model={kind: tiny}", "fl.options.lora.layers={top: 1}", "fl.clients_per_round=3"],
    "kd_adaptive": ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.client_keep_layers=[0, 2]",
                    "fl.options.lora.layers={top: 1}", "fl.options.data={max_per_class: 30, max_len: 96, n_test: 12, n_public: 8}", "fl.options.public_batch_size=4", "fl.options.server_steps=2",
                    "fl.options.mutual=true", "fl.options.warmup_steps=2"],
    "split_lora": ["fl.options.model={kind: tiny, n_layers: 3}", "fl.options.cut_layer=1"],
    "fedsoda": ["fl.options.model={kind: tiny, n_layers: 6}", "fl.options.sgp_keep=4"],
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_resume_is_identical_real_algorithms(tmp_path, name):
    """Adapters, optimiser states, global state and torch generators go through the
    checkpoint; the frozen base weights do not (LMAlgorithm.state_dict refers to them)."""
    sets = REAL[name] + ["fl.rounds=3", "fl.min_updates=1"]
    _interrupted_equals_uninterrupted(tmp_path, SCN / f"{name}.yaml", sets, 1)


def test_checkpoint_leaves_frozen_weights_out(tmp_path):
    import torch

    from fl.core.algorithm import AlgorithmContext
    from fl.algorithms.fedavg_lora.algorithm import FedAvgLoRA, FedAvgLoRAConfig
    from fl.core.statefile import encode

    cfg = FedAvgLoRAConfig(model={"kind": "tiny", "n_layers": 2}, data={"max_per_class": 20, "n_test": 12})
    a = FedAvgLoRA(cfg, AlgorithmContext(n_clients=2, seed=0))
    frozen = sum(p.numel() * p.element_size() for p in a.model.parameters() if not p.requires_grad)
    state = a.state_dict()
    doc = encode(state)  # what the checkpoint file holds of the algorithm
    written = sum(x.nbytes for x in doc["arrays"].values()) + sum(
        t.numel() * t.element_size() for t in doc["tensors"].values())
    assert written < frozen / 4  # adapters + data indices, not the base model
    b = FedAvgLoRA(cfg, AlgorithmContext(n_clients=2, seed=0))
    with torch.no_grad():  # a trained adapter travels
        next(p for p in a.model.parameters() if p.requires_grad).add_(1.0)
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    c = FedAvgLoRA(cfg, AlgorithmContext(n_clients=2, seed=0))
    with torch.no_grad():  # a different base model is refused, naming the tensor
        next(p for p in c.model.parameters() if not p.requires_grad).add_(1.0)
    with pytest.raises(ValueError, match="different frozen weights"):
        c.load_state_dict(a.state_dict())


def test_resume_with_a_different_scenario_names_the_key(tmp_path):
    sets = ["fl.rounds=3"]
    out = tmp_path / "run"
    run_scenario(SCN / "surrogate_quickstart.yaml", sets, out=out, plots=False,
                 stop_after_rounds=1)
    with pytest.raises(ValueError, match=r"fl\.rounds is 3 in the checkpoint and 4"):
        run_scenario(SCN / "surrogate_quickstart.yaml", ["fl.rounds=4"], out=out, plots=False,
                     resume=True)


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint.zip"):
        run_scenario(SCN / "surrogate_quickstart.yaml", out=tmp_path / "empty", plots=False,
                     resume=True)
    with pytest.raises(ValueError, match="sync driver only"):
        run_scenario(SCN / "umi_street_canyon.yaml", out=tmp_path / "a", plots=False,
                     resume=True)


def test_cli_resume(tmp_path):
    sets = ["--set", "fl.rounds=3"]
    out = tmp_path / "run"
    run_scenario(SCN / "surrogate_quickstart.yaml", ["fl.rounds=3"], out=out, plots=False,
                 stop_after_rounds=2)
    r = CliRunner().invoke(app, ["run", str(SCN / "surrogate_quickstart.yaml"), *sets,
                                 "--out", str(out), "--quiet", "--no-plots", "--resume"])
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [0, 1, 2]


DEADLINE_MID_WIRED = """
name: deadline_mid_wired
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
  algorithm: surrogate
  rounds: 4
  clients_per_round: 2
  min_updates: 2
  deadline_s: 0.001
"""


def test_a_round_cut_by_its_deadline_mid_wired_transfer_checkpoints_and_resumes(tmp_path):
    """A round that ends at its deadline while a wired transfer is still on its way cancels
    it; its timer stays on SimPy's queue as a no-op. The checkpoint leaves it out (it used to
    fail: a simpy Event in the state), and the resumed run equals the uninterrupted one."""
    import pandas as pd

    from sim.runner import run_scenario

    path = tmp_path / "dl.yaml"
    path.write_text(DEADLINE_MID_WIRED)
    whole, _ = run_scenario(path, [], out=tmp_path / "whole", plots=False)
    part, _ = run_scenario(path, [], out=tmp_path / "part", plots=False, stop_after_rounds=2)
    run_scenario(path, [], out=part, plots=False, resume=True)
    assert pd.read_parquet(part / "events.parquet").equals(pd.read_parquet(whole / "events.parquet"))
    assert pd.read_csv(part / "rounds.csv").equals(pd.read_csv(whole / "rounds.csv"))
    events = pd.read_parquet(whole / "events.parquet")
    failed = events[events["event"] == "client_failed"]
    assert len(failed) == 8 and (failed["detail"] == "deadline:model").all()  # cut mid-download, every round


@pytest.mark.parametrize("old, new", [
    ("sim.simulation:Cell", "sim.entities:Cell"), ("sim.simulation:Client", "sim.entities:Client"),
    ("sim.simulation:Server", "sim.entities:Server"),
    ("sim.simulation:_Acct", "sim.interpreter:RoundAccount"),
])
def test_checkpoints_written_before_the_kernel_split_name_classes_that_moved(old, new):
    """A checkpoint stores the simulation's entities by class name; files written when they
    lived in sim.simulation still resolve (fl.core.statefile's table of moved classes)."""
    from fl.core.statefile import _resolve_class

    module, _, name = new.partition(":")
    assert _resolve_class(old) is getattr(importlib.import_module(module), name)


def test_state_written_with_the_old_flops_names_is_read_with_the_new_ones():
    """Checkpoints written before 0.2 store FLOP/s as ``flops`` / ``flops_of``: the classes'
    ``_state_renames`` map them when the state is read."""
    import json as _json

    import numpy as _np

    from fl.core.statefile import decode, encode
    from sim.compute import ComputeModel, DeviceProfile

    cm = ComputeModel([DeviceProfile("phone", flops_per_s=2e10, power_w=3.0)], 4,
                      _np.random.default_rng(1), _np.random.default_rng(2))
    doc = encode(cm)
    text = _json.dumps(doc["graph"])
    assert '"flops_per_s_of"' in text and '"flops_per_s"' in text
    doc["graph"] = _json.loads(text.replace('"flops_per_s_of"', '"flops_of"').replace('"flops_per_s"', '"flops"'))
    old = decode(doc)
    assert old.profiles[0].flops_per_s == 2e10 and not hasattr(old.profiles[0], "flops")
    _np.testing.assert_array_equal(old.flops_per_s_of, cm.flops_per_s_of)
    assert old.duration_s(0, 1e11) == cm.duration_s(0, 1e11)

"""fedwave compare: algorithms × seeds validated before any runs, run through the sweep
backends, failures recorded, compare.csv / compare_pairs.csv / compare.json and the figures,
paired differences on the same prompts, --resume; the fl.options each algorithm keeps."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fl.core.metrics import PromptResults, paired_difference
from sim.cli import app, options_for
from sim.compare import (COMPARE_COLUMNS, PAIR_COLUMNS, CompareError, CompareSpec, pair_rows,
                         run_compare, time_to_target, variants_of)
from sim.outputs import eval_table

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"  # fedavg_lora options
SURROGATE = ROOT / "scenarios" / "surrogate_quickstart.yaml"
FAST = ["--set", "fl.rounds=2", "--set", "fl.clients_per_round=2"]  # a surrogate variant: ~0.1 s
TINY = ["--set", "fl.options.model={kind: tiny, n_layers: 2}", "--set", "fl.rounds=1",
        "--set", "fl.clients_per_round=2"]
runner = CliRunner()


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


def _options(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["fl"]["options"]


def _is_png(path: Path) -> bool:
    import matplotlib.image

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(path).ndim == 3


# ----------------------------------------------------------------------------- options
def test_options_for_keeps_what_the_target_config_accepts():
    opts = _options(QUICKSTART)
    kept, dropped = options_for("kd_topk", opts)
    assert {"model", "lora", "data", "partition", "local_steps", "batch_size", "lr"} <= set(kept)
    assert kept["lr"] == opts["lr"] and kept["lora"] == opts["lora"]
    assert dropped == ["download_dtype", "upload_dtype"]  # kd_topk sends logits, not adapters
    kept, dropped = options_for("split_lora", opts)
    assert dropped == [] and kept == opts
    kept, dropped = options_for("surrogate", {**opts, "header_bits": 64})
    assert kept == {"header_bits": 64}
    assert dropped == sorted(opts)


def test_compare_keeps_shared_options_and_says_what_it_dropped(tmp_path):
    r = runner.invoke(app, ["compare", str(QUICKSTART), "--algorithms", "surrogate",
                            "--set", "fl.options.header_bits=64", "--set", "fl.rounds=2",
                            "--out", str(tmp_path / "c"), "--backend", "inline"])
    assert r.exit_code == 0, r.output
    assert ("surrogate: dropped fl.options it does not accept: batch_size, data, "
            "download_dtype, local_steps, lora, lr, model, partition, upload_dtype") in \
        r.output.replace("\n", " ")
    resolved = yaml.safe_load((tmp_path / "c" / "algorithm=surrogate" /
                               "scenario.resolved.yaml").read_text())
    assert resolved["fl"]["algorithm"] == "surrogate"
    assert resolved["fl"]["options"]["header_bits"] == 64  # kept, not reset to the default
    assert resolved["seed"] == 7  # no --seeds: the scenario's own


def test_an_option_of_one_algorithm_is_set_for_that_one_only():
    spec = CompareSpec(base=QUICKSTART, algorithms=("fedavg_lora", "split_lora"), seeds=(0, 3),
                       sets=("fl.rounds=2", "fl.options.cut_layer=1"))
    variants, dropped = variants_of(spec)
    assert [v.name for v in variants] == ["algorithm=fedavg_lora,seed=0", "algorithm=fedavg_lora,seed=3",
                                          "algorithm=split_lora,seed=0", "algorithm=split_lora,seed=3"]
    assert dropped == {"fedavg_lora": ["cut_layer"], "split_lora": []}
    fed, split = variants[0].overrides, variants[2].overrides
    assert "fl.options.cut_layer=1" not in fed and "fl.options.cut_layer=1" in split
    assert fed[0] == "fl.rounds=2" and fed[1] == "fl.algorithm=fedavg_lora" and fed[-1] == "seed=0"
    assert split.index("fl.options.cut_layer=1") > split.index("fl.algorithm=split_lora")


# ----------------------------------------------------------------------------- validation
def test_every_variant_is_validated_before_any_runs(tmp_path):
    """split_lora's default cut_layer (2) does not fit a 2-layer model: found at load time,
    named with its variant, and nothing runs (not even the valid surrogate)."""
    out = tmp_path / "c"
    r = runner.invoke(app, ["compare", str(QUICKSTART), "--algorithms", "surrogate,split_lora",
                            "--seeds", "0,1", *TINY, "--out", str(out), "--backend", "inline"])
    assert r.exit_code == 2, r.output
    text = r.output.replace("\n", " ")
    assert ("fl.options.cut_layer: must be in [1, 1] for this 2-layer model" in text
            and "Got 2 instead. Fix: a cut_layer from 1 to 1" in text)
    assert "(variant algorithm=split_lora,seed=0)" in text
    assert not out.exists()


@pytest.mark.parametrize("args, match", [
    (["--algorithms", "surrogate,surrogate"], "--algorithms: surrogate named more than once"),
    (["--algorithms", "surrogate,,"], "--algorithms: give one or more algorithm names"),
    (["--algorithms", "surrogate,fedavg"], r"--algorithms: unknown algorithm\(s\) 'fedavg'\. Fix: use "
                                           r"some of: fedavg_lora, fedsoda, kd_topk, split_lora, surrogate"),
    (["--algorithms", "surrogate", "--target", "1.5"], r"--target: an accuracy in \[0, 1\]; got 1.5"),
    (["--algorithms", "surrogate", "--seeds", "2-1"], "--seeds: '2-1' is not a seed"),
    (["--algorithms", "surrogate", "--resume", "--overwrite"], "contradict each other"),
    (["--algorithms", "surrogate", "--set", "fl.rounds=0"], r"fl.rounds.*\(variant algorithm=surrogate\)"),
])
def test_bad_comparisons_are_refused_with_the_option_and_the_fix(tmp_path, args, match):
    out = tmp_path / "c"
    r = runner.invoke(app, ["compare", str(SURROGATE), *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert re.search(match, r.output.replace("\n", " ")), r.output
    assert not out.exists()


def test_dry_run_lists_the_variants(tmp_path):
    r = runner.invoke(app, ["compare", str(SURROGATE), "--algorithms", "surrogate", "--seeds", "0-2",
                            "--dry-run", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "algorithm=surrogate,seed=2" in r.output and "3 variants" in r.output
    assert not (tmp_path / "c").exists()


def test_a_used_out_dir_is_refused(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["compare", str(SURROGATE), "--algorithms", "surrogate", *FAST,
                            "--out", str(out), "--backend", "inline"])
    assert r.exit_code == 2 and "--overwrite, --resume" in r.output.replace("\n", " ")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- running
def _fail_seed(monkeypatch, seed: int) -> None:
    """Make every variant with ``seed`` fail at run time (its radio cannot be built)."""
    import sim.radio

    build = sim.radio.build_radio

    def fail(scn, rng):
        if scn.seed == seed:
            raise ValueError(f"radio of seed {seed} broke (test)")
        return build(scn, rng)

    monkeypatch.setattr(sim.radio, "build_radio", fail)


def test_a_failing_variant_is_recorded_and_the_others_kept(tmp_path, monkeypatch):
    _fail_seed(monkeypatch, 1)
    out = tmp_path / "c"
    r = runner.invoke(app, ["compare", str(SURROGATE), "--algorithms", "surrogate", "--seeds", "0,1,2",
                            *FAST, "--out", str(out), "--backend", "inline"])
    assert r.exit_code == 1, r.output
    text = r.output.replace("\n", " ")
    assert "[2/3] surrogate seed 1: FAILED after" in text and "radio of seed 1 broke" in text
    assert "[1/3] surrogate seed 0: accuracy" in text and "(modelled)" in text
    assert "failed: algorithm=surrogate,seed=1: ValueError: radio of seed 1 broke" in text
    assert "1 of 3 variants failed" in text
    rows = _read(out / "compare.csv")
    assert [(r["seed"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed"), ("2", "ok")]
    assert rows[1]["error"] == "ValueError: radio of seed 1 broke (test)"
    assert rows[1]["final_accuracy"] == "" and rows[1]["time_to_target_s"] == ""
    assert "radio of seed 1 broke" in (out / "algorithm=surrogate,seed=1" / "error.txt").read_text()
    doc = json.loads((out / "compare.json").read_text())
    assert doc["n_failed"] == 1 and doc["variants"][1]["error"] == rows[1]["error"]
    for row in (rows[0], rows[2]):
        assert float(row["final_accuracy"]) > 0 and (out / row["run_dir"] / "rounds.csv").is_file()
    assert _is_png(out / "latency_accuracy.png") and _is_png(out / "pareto.png")


def test_every_variant_failing_still_writes_the_tables(tmp_path, monkeypatch):
    _fail_seed(monkeypatch, 0)
    res = run_compare(CompareSpec(base=SURROGATE, algorithms=("surrogate",), seeds=(0,),
                                  sets=("fl.rounds=2",)), tmp_path / "c", backend="inline")
    assert [r["status"] for r in res.rows] == ["failed"] and res.target is None
    assert _read(tmp_path / "c" / "compare.csv")[0]["target_accuracy"] == ""
    assert not (tmp_path / "c" / "latency_accuracy.png").exists()  # nothing to draw


def test_outputs_have_their_columns_and_match_each_run(tmp_path):
    out = tmp_path / "c"
    r = runner.invoke(app, ["compare", str(SURROGATE), "--algorithms", "surrogate", "--seeds", "4,5",
                            "--set", "fl.rounds=3", "--out", str(out), "--backend", "inline"])
    assert r.exit_code == 0, r.output
    assert _header(out / "compare.csv") == list(COMPARE_COLUMNS)
    assert _header(out / "compare_pairs.csv") == list(PAIR_COLUMNS)
    rows = _read(out / "compare.csv")
    finals = [float(row["final_accuracy"]) for row in rows]
    for row in rows:
        s = json.loads((out / row["run_dir"] / "summary.json").read_text())
        assert int(row["seed"]) == s["seed"] and row["learner"] == s["learner"] == "surrogate"
        assert float(row["final_accuracy"]) == s["final"]["accuracy"]
        assert row["final_accuracy_lo"] == row["final_accuracy_hi"] == row["n_eval"] == ""  # modelled
        for k in ("bits_up", "bits_down", "energy_j", "client_flops", "server_flops"):
            assert float(row[k]) == s["totals"][k]
        # 1e11 FLOPs per client and round: every delivered update computed them, at most
        # 5 clients x 3 rounds computed (a computation cut by the deadline: its share)
        assert 1e11 * s["totals"]["updates_delivered"] <= float(row["client_flops"]) <= 1e11 * 15
        assert row["client_storage_bytes"] == ""  # the surrogate models no model on the phone
        # the default target: the lowest final accuracy; reached at the first evaluation >= it
        assert float(row["target_accuracy"]) == min(finals)
        rounds = pd.read_csv(out / row["run_dir"] / "rounds.csv")
        first = rounds[rounds["accuracy"] >= min(finals) - 1e-9]["t_end_s"].iloc[0]
        assert float(row["time_to_target_s"]) == first
    assert all(int(row["updates_delivered"]) > 0 for row in rows)
    assert rows[0]["simulated_time_s"] != rows[1]["simulated_time_s"]  # the seed reaches the run
    doc = json.loads((out / "compare.json").read_text())
    assert doc["target_rule"] == "the lowest final accuracy of the variants that ran"
    assert doc["spec"]["seeds"] == [4, 5] and doc["pairs"] == []
    assert "compare: surrogate_quickstart, 2 runs (SURROGATE learner: accuracy modelled)" in r.output
    assert "(t, 2 seeds)" not in r.output and "(modelled)" in r.output  # no interval pretended
    assert _is_png(out / "latency_accuracy.png") and _is_png(out / "pareto.png")


def test_an_explicit_target_and_one_never_reached(tmp_path):
    spec = CompareSpec(base=SURROGATE, algorithms=("surrogate",), seeds=(0,),
                       sets=("fl.rounds=2",), target=0.99)
    res = run_compare(spec, tmp_path / "c", backend="inline", figures=False)
    assert res.target == 0.99 and res.target_rule == "--target"
    assert res.rows[0]["time_to_target_s"] is None  # never reached: empty in compare.csv
    assert _read(tmp_path / "c" / "compare.csv")[0]["time_to_target_s"] == ""


def test_results_do_not_depend_on_the_backend(tmp_path):
    spec = CompareSpec(base=SURROGATE, algorithms=("surrogate",), seeds=(0, 1),
                       sets=("fl.rounds=2", "fl.clients_per_round=2"))
    run_compare(spec, tmp_path / "inline", backend="inline", figures=False)
    run_compare(spec, tmp_path / "pool", backend="process", workers=2, figures=False)

    def table(d):
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in _read(d / "compare.csv")]

    assert table(tmp_path / "inline") == table(tmp_path / "pool")
    for name in ("algorithm=surrogate,seed=0", "algorithm=surrogate,seed=1"):
        assert ((tmp_path / "inline" / name / "events.parquet").read_bytes()
                == (tmp_path / "pool" / name / "events.parquet").read_bytes())


def test_resume_keeps_finished_variants_and_reruns_the_failed(tmp_path, monkeypatch):
    out = tmp_path / "c"
    args = ["compare", str(SURROGATE), "--algorithms", "surrogate", "--seeds", "0,1", *FAST,
            "--out", str(out), "--backend", "inline"]
    with monkeypatch.context() as m:
        _fail_seed(m, 1)
        assert runner.invoke(app, args).exit_code == 1
    kept = (out / "algorithm=surrogate,seed=0" / "summary.json").read_bytes()
    r = runner.invoke(app, args + ["--resume"])
    assert r.exit_code == 0, r.output
    assert "[1/2] surrogate seed 0: kept (finished before), accuracy" in r.output
    assert "[2/2] surrogate seed 1: accuracy" in r.output  # only the failed one ran
    assert (out / "algorithm=surrogate,seed=0" / "summary.json").read_bytes() == kept
    assert [row["status"] for row in _read(out / "compare.csv")] == ["ok", "ok"]
    assert not (out / "algorithm=surrogate,seed=1" / "error.txt").exists()
    # another scenario in the same directory is refused, naming the key that differs
    r = runner.invoke(app, args[:-4] + ["--set", "fl.rounds=3", "--out", str(out), "--resume",
                                        "--backend", "inline"])
    assert r.exit_code == 2, r.output
    assert "holds a run of another scenario (fl.rounds is 2 there, 3 now" in r.output.replace("\n", " ")


# ----------------------------------------------------------------------------- pairing
def _run_dir(root: Path, name: str, results: list[tuple[int, PromptResults]]) -> str:
    d = root / name
    d.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(eval_table(results), d / "eval.parquet")
    return name


def _results(prompts, correct, labels=None) -> PromptResults:
    n = len(prompts)
    labels = np.zeros(n, np.int64) if labels is None else np.asarray(labels, np.int64)
    correct = np.asarray(correct, bool)
    return PromptResults(np.asarray(prompts, np.int64), correct, labels,
                         np.where(correct, labels, 1 - labels), ("yes", "no"))


def test_pairs_use_the_final_evaluation_on_the_same_prompts(tmp_path):
    rng = np.random.default_rng(0)
    prompts = [9, 3, 7, 1, 5, 11, 2, 8]
    ca, cb = rng.random((2, 8)) < 0.5
    order = np.argsort(prompts)  # eval.parquet rows may come in any prompt order
    rows = []
    for alg, c, shuffle in (("a", ca, False), ("b", cb, True)):
        idx = np.arange(8)[::-1] if shuffle else np.arange(8)
        early = _results(prompts, np.zeros(8, bool))  # round 0: all wrong, not the final one
        final = _results(np.asarray(prompts)[idx], c[idx])
        rows.append({"algorithm": alg, "seed": 0, "status": "ok", "learner": "real",
                     "run_dir": _run_dir(tmp_path, f"{alg}0", [(-1, early), (0, early), (1, final)])})
    (pair,) = pair_rows(rows, tmp_path, n_boot=500)
    want = paired_difference(ca[order], cb[order], n_boot=500, seed=0)
    assert pair["status"] == "paired" and pair["n_prompts"] == 8
    assert (pair["difference"], pair["difference_lo"], pair["difference_hi"]) == (want.difference, want.lo, want.hi)
    assert (pair["bootstrap_lo"], pair["bootstrap_hi"], pair["mcnemar_p"]) == (
        want.bootstrap_lo, want.bootstrap_hi, want.p_value)
    assert (pair["accuracy_a"], pair["accuracy_b"]) == (ca.mean(), cb.mean())


def test_pairs_pool_seeds_and_say_why_a_pair_cannot_be_made(tmp_path):
    def row(alg, seed, status="ok", learner="real", prompts=(0, 1, 2, 3), correct=(1, 0, 1, 1),
            labels=None):
        name = f"{alg}{seed}"
        if status == "ok" and learner == "real":
            _run_dir(tmp_path, name, [(0, _results(prompts, correct, labels))])
        return {"algorithm": alg, "seed": seed, "status": status, "learner": learner, "run_dir": name}

    rows = [row("a", 0), row("a", 1), row("a", 2), row("a", 3),
            row("b", 0, correct=(0, 0, 1, 0)), row("b", 1, correct=(1, 1, 0, 1)),
            row("b", 2, prompts=(0, 1, 2, 4)), row("b", 3, labels=(0, 1, 0, 0)),
            row("s", 0, learner="surrogate"), row("f", 0, status="failed")]
    pairs = pair_rows(rows, tmp_path, n_boot=200)
    ab = [p for p in pairs if (p["algorithm_a"], p["algorithm_b"]) == ("a", "b")]
    assert [(p["seed"], p["status"]) for p in ab] == [
        (0, "paired"), (1, "paired"), (2, "not paired"), (3, "not paired"), ("all", "paired")]
    assert "different test prompts" in ab[2]["note"] and "different test prompts" in ab[3]["note"]
    pooled = paired_difference([1, 0, 1, 1, 1, 0, 1, 1], [0, 0, 1, 0, 1, 1, 0, 1], n_boot=200, seed=0)
    assert ab[-1]["n_prompts"] == 8 and ab[-1]["difference_lo"] == pooled.lo
    assert "2 seeds' prompts pooled" in ab[-1]["note"]
    (a_s,) = [p for p in pairs if (p["algorithm_a"], p["algorithm_b"]) == ("a", "s")]
    assert a_s["status"] == "not paired" and "s is the surrogate: its accuracy is modelled" in a_s["note"]
    (a_f,) = [p for p in pairs if (p["algorithm_a"], p["algorithm_b"]) == ("a", "f")]
    assert a_f["note"] == "f failed"
    assert [p for p in pairs if p["algorithm_a"] == "b" and p["algorithm_b"] == "s"][0]["seed"] == 0


def test_time_to_target_counts_the_untrained_model(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"initial": {"accuracy": 0.2}}))
    pd.DataFrame({"round": [0, 1, 2, 3], "t_end_s": [1.0, 2.0, 3.0, 4.0],
                  "accuracy": [0.3, float("nan"), 0.5, 0.4]}).to_csv(d / "rounds.csv", index=False)
    assert time_to_target(d, 0.2) == 0.0  # the untrained model had it
    assert time_to_target(d, 0.45) == 3.0  # round 1 was not evaluated
    assert time_to_target(d, 0.5) == 3.0 and time_to_target(d, 0.51) is None


def test_compare_spec_errors_name_the_option():
    with pytest.raises(CompareError, match=r"--target: an accuracy in \[0, 1\]; got -0.1"):
        CompareSpec(base=SURROGATE, algorithms=("surrogate",), target=-0.1)


# ----------------------------------------------------------------------------- real learners
def test_two_real_learners_are_paired_on_their_prompts(tmp_path):
    """fedavg_lora and split_lora on a tiny model, one round: both write eval.parquet for the
    same 24 test prompts (same seed, same data options), and the comparison pairs them."""
    out = tmp_path / "c"
    r = runner.invoke(app, ["compare", str(QUICKSTART), "--algorithms", "fedavg_lora,split_lora",
                            "--seeds", "0", *TINY, "--set", "fl.options.cut_layer=1",
                            "--set", "fl.options.lora.layers=null", "--set", "fl.options.data.max_per_class=40",
                            "--set", "fl.options.data.n_test=24", "--out", str(out),
                            "--backend", "inline", "--plots"])
    assert r.exit_code == 0, r.output
    rows = {row["algorithm"]: row for row in _read(out / "compare.csv")}
    evals = {a: pd.read_parquet(out / rows[a]["run_dir"] / "eval.parquet") for a in rows}
    for a, ev in evals.items():
        assert list(ev.columns) == ["round", "prompt", "correct", "label", "predicted"]
        assert sorted(set(ev["round"])) == [-1, 0] and (ev["round"] == 0).sum() == 24
        final = ev[ev["round"] == 0]
        assert final["correct"].mean() == float(rows[a]["final_accuracy"])
        assert (final["correct"] == (final["label"] == final["predicted"])).all()
        lo, hi = float(rows[a]["final_accuracy_lo"]), float(rows[a]["final_accuracy_hi"])
        assert lo <= float(rows[a]["final_accuracy"]) <= hi and lo < hi and rows[a]["n_eval"] == "24.0"
        assert int(rows[a]["client_storage_bytes"]) > 0 and float(rows[a]["client_flops"]) > 0
    assert set(evals["fedavg_lora"]["prompt"]) == set(evals["split_lora"]["prompt"])
    (pair,) = _read(out / "compare_pairs.csv")
    assert pair["status"] == "paired" and pair["n_prompts"] == "24"
    assert float(pair["difference"]) == pytest.approx(
        float(rows["fedavg_lora"]["final_accuracy"]) - float(rows["split_lora"]["final_accuracy"]))
    assert float(pair["difference_lo"]) <= float(pair["difference"]) <= float(pair["difference_hi"])
    assert "paired differences of final accuracy" in r.output
    assert _is_png(out / "latency_accuracy.png")
    assert _is_png(out / rows["fedavg_lora"]["run_dir"] / "plots" / "accuracy.png")

"""fedwave calibrate: the surrogate's curve fitted to (hand-made) real runs, the calibration
file and its errors, a surrogate run that says which calibration it used, and the kernel's
samples_delivered column the fit reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fl.algorithms.surrogate.calibration import (CalibrationError, accuracy_curve, fit_learning_curve, loss_curve,
                            read_calibration)
from fl.core.metrics import wilson_interval
from sim.calibrate import CalibrateError, calibrate, run_points
from sim.cli import app
from sim.scenario import ScenarioError, load_scenario

from simkit import GOOD_YAML

TRUE = {"a0": 0.18, "a_max": 0.66, "n_half": 900.0, "loss0": 3.2, "loss_min": 0.6}
N_EVAL = 1000


def make_run(path: Path, seed: int, *, rounds: int = 14, noise: bool = True, samples: float = 60.0,
             learner: str = "real", columns: bool = True, truth: dict = TRUE) -> Path:
    """A run directory as fedwave writes it: rounds.csv and summary.json of a learner whose
    accuracy follows the surrogate's curve in delivered samples, scored on N_EVAL prompts
    (binomial noise), evaluated every round except every fourth."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    delivered = rng.integers(2, 5, size=rounds) * samples  # 2-4 clients of `samples` each
    n_cum = np.cumsum(delivered)

    def scored(n):
        p = float(accuracy_curve(n, truth["a0"], truth["a_max"], truth["n_half"]))
        k = int(rng.binomial(N_EVAL, p)) if noise else round(p * N_EVAL)
        lo, hi = wilson_interval(k, N_EVAL)
        loss = float(loss_curve(n, truth["loss0"], truth["loss_min"], truth["n_half"]))
        return k / N_EVAL, lo, hi, loss + (rng.normal(0, 0.02) if noise else 0.0)

    rows = []
    for r in range(rounds):
        row = {"round": r, "t_start_s": 2.0 * r, "t_end_s": 2.0 * r + 2.0, "n_selected": 4,
               "n_completed": int(delivered[r] // samples), "n_failed": 0,
               "samples_delivered": float(delivered[r]), "bits_up": 1e6, "bits_down": 1e6,
               "energy_j": 1.0, "accuracy": np.nan, "loss": np.nan, "accuracy_lo": np.nan,
               "accuracy_hi": np.nan, "n_eval": np.nan}
        if r % 4 != 3:
            acc, lo, hi, loss = scored(n_cum[r])
            row.update(accuracy=acc, loss=loss, accuracy_lo=lo, accuracy_hi=hi, n_eval=N_EVAL)
        rows.append(row)
    df = pd.DataFrame(rows)
    if not columns:
        df = df.drop(columns=["samples_delivered"])
    df.to_csv(path / "rounds.csv", index=False)
    acc0, lo0, hi0, loss0 = scored(0.0)
    (path / "summary.json").write_text(json.dumps({
        "scenario": "handmade", "seed": seed, "algorithm": "fedavg_lora", "learner": learner,
        "driver": "sync", "status": "ok", "n_rounds": rounds,
        "initial": {"accuracy": acc0, "accuracy_lo": lo0, "accuracy_hi": hi0, "loss": loss0,
                    "n_eval": N_EVAL},
        "final": {}}))
    return path


# ----------------------------------------------------------------------------- the fit
def test_fit_recovers_known_parameters_without_noise(tmp_path):
    runs = [make_run(tmp_path / f"r{s}", s, noise=False) for s in range(2)]
    fit, _ = calibrate(runs, tmp_path / "cal.yaml")
    p = fit.parameters
    # only the rounding of accuracies to 1/1000 separates the points from the curve
    assert p["a0"] == pytest.approx(TRUE["a0"], abs=2e-3)
    assert p["a_max"] == pytest.approx(TRUE["a_max"], abs=2e-3)
    assert p["n_half"] == pytest.approx(TRUE["n_half"], rel=0.01)
    assert p["loss0"] == pytest.approx(TRUE["loss0"], rel=1e-3)  # n_half as fitted
    assert p["loss_min"] == pytest.approx(TRUE["loss_min"], rel=1e-3)
    assert fit.chi2 < 0.1 * fit.dof and fit.scale == 1.0


def test_fit_recovers_known_parameters_within_their_errors(tmp_path):
    runs = [make_run(tmp_path / f"r{s}", s) for s in range(3)]
    fit, pts = calibrate(runs, tmp_path / "cal.yaml")
    assert fit.n_points == sum(len(r.n) for r in pts) == 3 * (1 + 14 - 3)
    for key in ("a0", "a_max", "n_half"):
        err = fit.stderr[key]
        assert 0 < err < (0.03 if key != "n_half" else 200.0)  # the noise is small, so are they
        assert abs(fit.parameters[key] - TRUE[key]) < 4 * err, (key, fit.parameters[key], err)
    assert fit.parameters["loss_min"] == pytest.approx(TRUE["loss_min"], abs=0.05)
    # binomial noise on 1,000 prompts, weighted by the Wilson intervals: chi2 ~ dof
    assert 0.4 < fit.chi2 / fit.dof < 2.0


def test_points_of_a_run_the_untrained_model_first_and_n_cumulative(tmp_path):
    rd = make_run(tmp_path / "r", 0, rounds=4, noise=False)
    pts = run_points(rd)
    delivered = pd.read_csv(rd / "rounds.csv")["samples_delivered"].cumsum().to_numpy()
    np.testing.assert_allclose(pts.n, [0.0, delivered[0], delivered[1], delivered[2]])
    assert np.all(pts.lo < pts.accuracy) and np.all(pts.accuracy < pts.hi)
    assert pts.meta["samples_per_update"] == 60.0 and pts.meta["n_points"] == 4


def test_errors_are_scaled_when_points_scatter_more_than_their_intervals():
    n = np.linspace(0, 4000, 20)
    acc = accuracy_curve(n, 0.2, 0.7, 800.0) + np.where(np.arange(20) % 2, 0.05, -0.05)
    fit = fit_learning_curve(n, acc, np.full(20, 0.01))
    assert fit.scale == pytest.approx(np.sqrt(fit.chi2 / fit.dof)) and fit.scale > 3
    unscaled = fit_learning_curve(n, accuracy_curve(n, 0.2, 0.7, 800.0), np.full(20, 0.01))
    assert unscaled.scale == 1.0


def test_a_falling_curve_is_refused():
    n = np.linspace(0, 4000, 10)
    with pytest.raises(CalibrationError, match=r"accuracy falls with delivered samples .* Fix: "
                                               r"calibrate on runs whose learner learns"):
        fit_learning_curve(n, accuracy_curve(n, 0.6, 0.2, 800.0), np.full(10, 0.01))


def test_a_flat_curve_is_refused_n_half_would_be_arbitrary():
    n = np.linspace(0, 4000, 10)
    with pytest.raises(CalibrationError, match=r"does not rise significantly .* \(a_max − a0 = 0\.000 ± "
                                               r".*n_half is not determined"):
        fit_learning_curve(n, np.full(10, 0.3), np.full(10, 0.02))
    noisy = 0.3 + 0.01 * np.random.default_rng(1).standard_normal(10)  # within its 0.05 errors
    with pytest.raises(CalibrationError, match=r"does not rise significantly"):
        fit_learning_curve(n, accuracy_curve(n, 0.3, 0.31, 800.0) + noisy - 0.3, np.full(10, 0.05))


def test_too_few_points_are_refused():
    with pytest.raises(CalibrationError, match=r"3 accuracy points; .* needs at least 4"):
        fit_learning_curve([0, 100, 200], [0.2, 0.3, 0.4], [0.01] * 3)


# ----------------------------------------------------------------------------- bad runs
def test_unusable_runs_are_named_with_the_fix(tmp_path):
    sur = make_run(tmp_path / "sur", 0, learner="surrogate")
    with pytest.raises(CalibrateError, match=rf"{re.escape(str(sur))}: a surrogate run.*Fix: give "
                                             "runs of a real learner"):
        calibrate([sur], tmp_path / "c.yaml")
    old = make_run(tmp_path / "old", 0, columns=False)
    with pytest.raises(CalibrateError, match=r"old/rounds\.csv: no samples_delivered column.*Fix: "
                                             r"rerun the scenario"):
        calibrate([old], tmp_path / "c.yaml")
    half = make_run(tmp_path / "half", 0)
    df = pd.read_csv(half / "rounds.csv")
    df.loc[:2, "samples_delivered"] = np.nan  # rounds from an older fedwave's checkpoint
    df.to_csv(half / "rounds.csv", index=False)
    with pytest.raises(CalibrateError, match=r"half/rounds\.csv: samples_delivered is empty for round\(s\) "
                                             r"\[0, 1, 2\] \(a run resumed .*Fix: rerun"):
        calibrate([half], tmp_path / "c.yaml")
    with pytest.raises(CalibrateError, match=r"no summary\.json here"):
        calibrate([tmp_path / "nothing"], tmp_path / "c.yaml")
    good = make_run(tmp_path / "good", 0)
    (tmp_path / "c.yaml").write_text("keep me")
    with pytest.raises(CalibrateError, match=r"c\.yaml: exists\. Fix: pass --overwrite"):
        calibrate([good], tmp_path / "c.yaml")
    assert (tmp_path / "c.yaml").read_text() == "keep me"


# ----------------------------------------------------------------------------- the file
def test_cli_writes_a_file_the_surrogate_reads_and_a_figure(tmp_path):
    runs = [str(make_run(tmp_path / f"r{s}", s)) for s in range(2)]
    out, png = tmp_path / "cal" / "fit.yaml", tmp_path / "fit.png"
    res = CliRunner().invoke(app, ["calibrate", *runs, "--out", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "a_max" in res.output and "n_half" in res.output and str(out) in res.output
    assert png.stat().st_size > 10_000
    cal = read_calibration(out)
    assert set(cal.parameters) == {"a0", "a_max", "n_half", "loss0", "loss_min"}
    assert cal.runs == tuple(runs)
    text = out.read_text()
    assert text.startswith("# fedwave calibrate") and "stderr:" in text
    again = CliRunner().invoke(app, ["calibrate", *runs, "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


GOOD_FILE = "format: fedwave-surrogate-calibration\nversion: 1\nparameters: {PARAMS}\n"


@pytest.mark.parametrize("params, key, rule", [
    ("{a0: 0.2, a_max: 0.6, n_half: -3}", "parameters.n_half", "must be a number > 0"),
    ("{a0: 0.2, a_max: 0.6, n_half: abc}", "parameters.n_half", "must be a number > 0"),
    ("{a0: 1.2, a_max: 0.6, n_half: 10}", "parameters.a0", r"must be a number in \[0, 1\]"),
    ("{a0: 0.2, n_half: 10}", "parameters.a_max", "is missing"),
    ("{a0: 0.2, a_max: 0.6, n_half: 10, speed: 3}", "parameters.speed", "is not a parameter"),
    ("{a0: 0.2, a_max: 0.6, n_half: 10, loss0: 2}", "parameters.loss_min", "is missing"),
    ("{a0: 0.5, a_max: 0.4, n_half: 10}", "parameters.a_max", r"must be >= parameters\.a0"),
    ("[1, 2]", "parameters", "must be a mapping"),
])
def test_a_bad_calibration_file_names_the_file_and_the_key(tmp_path, params, key, rule):
    f = tmp_path / "cal.yaml"
    f.write_text(GOOD_FILE.replace("{PARAMS}", params))
    with pytest.raises(CalibrationError, match=rf"{re.escape(str(f))}: key {re.escape(key)} {rule}.*Fix: "):
        read_calibration(f)


@pytest.mark.parametrize("text, pattern", [
    ("format: other\nversion: 1\n", r"key format must be 'fedwave-surrogate-calibration'; got 'other'"),
    ("format: fedwave-surrogate-calibration\nversion: 7\n", r"key version must be 1; got 7"),
    ("a: [1, 2\n", r"not valid YAML \(line 2"),
    ("- 1\n", r"a calibration file is a YAML mapping; got list"),
    ("!!python/object/apply:os.system ['echo hi']\n", r"not valid YAML"),
])
def test_a_file_that_is_not_a_calibration_is_refused(tmp_path, text, pattern):
    f = tmp_path / "x.yaml"
    f.write_text(text)
    with pytest.raises(CalibrationError, match=rf"{re.escape(str(f))}: .*{pattern}"):
        read_calibration(f)


def _scenario_file(tmp_path: Path, options: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(GOOD_YAML + f"  options: {options}\n")
    return p


def test_scenario_errors_name_the_option_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_FILE.replace("{PARAMS}", "{a0: 0.2, a_max: 0.6, n_half: 0}"))
    with pytest.raises(ScenarioError, match=rf"fl\.options\.calibration: {re.escape(str(bad))}: key "
                                            r"parameters\.n_half must be a number > 0"):
        load_scenario(_scenario_file(tmp_path, f"{{calibration: {bad}}}"))
    with pytest.raises(ScenarioError, match=r"fl\.options\.calibration: .*missing\.yaml: no such "
                                            r"calibration file"):
        load_scenario(_scenario_file(tmp_path, f"{{calibration: {tmp_path / 'missing.yaml'}}}"))
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_FILE.replace("{PARAMS}", "{a0: 0.2, a_max: 0.6, n_half: 1.5e3}"))
    with pytest.raises(ScenarioError, match=r"fl\.options\.calibration: .*good\.yaml sets a0 = 0\.2 "
                                            r"and the option a0 = 0\.3 disagrees.*Fix: drop the option a0"):
        load_scenario(_scenario_file(tmp_path, f"{{calibration: {good}, a0: 0.3}}"))


def test_a_calibrated_surrogate_run_says_which_calibration_it_used(tmp_path):
    from sim.cli import _summary_table
    from sim.runner import run_scenario
    from sim.scenario import dump_scenario
    from rich.console import Console

    runs = [make_run(tmp_path / f"r{s}", s) for s in range(2)]
    cal_file = tmp_path / "cal.yaml"
    fit, _ = calibrate(runs, cal_file)
    scn_file = _scenario_file(tmp_path, f"{{calibration: {cal_file}, n_samples: 60}}")
    scn = load_scenario(scn_file)
    assert scn.fl.options.a_max == fit.parameters["a_max"]
    assert scn.fl.options.loss_min == fit.parameters["loss_min"]
    # the resolved scenario repeats the parameters beside the file, and loads again
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(dump_scenario(scn))
    assert load_scenario(resolved).fl.options == scn.fl.options
    run_dir, summary = run_scenario(scn, out=tmp_path / "run", plots=False)
    info = json.loads((Path(run_dir) / "summary.json").read_text())["algorithm_info"]
    assert info["calibration"] == str(cal_file)
    assert info["calibration_sha256"] == read_calibration(cal_file).sha256
    assert info["calibration_runs"] == " ".join(str(r) for r in runs)
    assert info["a_max"] == fit.parameters["a_max"]
    con = Console(width=300, record=True)
    con.print(_summary_table(summary))
    text = con.export_text()
    assert "curve calibration" in text and str(cal_file) in text and "fitted to 2 run(s)" in text
    # the modelled accuracy is the calibrated curve of the delivered samples
    rounds = pd.read_csv(Path(run_dir) / "rounds.csv")
    n = rounds["delivered_samples"].cumsum().to_numpy()
    np.testing.assert_allclose(rounds["accuracy"], fit.accuracy(n), rtol=1e-12)


def test_an_uncalibrated_surrogate_run_says_none(tmp_path):
    from sim.runner import run_scenario

    _, summary = run_scenario(load_scenario(_scenario_file(tmp_path, "{a0: 0.1}")),
                              out=tmp_path / "run", plots=False)
    assert summary["algorithm_info"]["calibration"] == "none"
    assert summary["algorithm_info"]["a0"] == 0.1


# ----------------------------------------------------------------------------- the kernel
def test_rounds_record_the_samples_of_the_updates_aggregated(tmp_path):
    """samples_delivered = Σ n_samples over the updates a round aggregated; 0 for a round
    below min_updates (nothing aggregated)."""
    from sim.runner import run_scenario

    text = GOOD_YAML.replace("  rounds: 2\n", "  rounds: 4\n") + \
        "  options: {n_samples: [10, 20, 30, 40]}\n"
    p = tmp_path / "s.yaml"
    p.write_text(text)
    run_dir, _ = run_scenario(load_scenario(p), out=tmp_path / "run", plots=False)
    rounds = pd.read_csv(Path(run_dir) / "rounds.csv")
    ev = pd.read_parquet(Path(run_dir) / "events.parquet")
    done = ev[ev.event == "client_done"]
    for r in rounds.itertuples():
        clients = done[done["round"] == r.round]["client"].astype(int)
        assert len(clients) == r.n_completed
        assert r.samples_delivered == sum(10 * (c + 1) for c in clients)
        assert r.samples_delivered == r.delivered_samples  # the surrogate's count (sync: no discount)
    assert rounds["samples_delivered"].gt(0).all()
    # a deadline nobody meets: no round reaches min_updates, none aggregates (Simulation
    # directly: the run's checkpoint cannot hold a wired transfer still pending at a deadline)
    from sim.simulation import Simulation

    none = tmp_path / "none.yaml"
    none.write_text(text.replace("  clients_per_round: 2\n", "  clients_per_round: 2\n  min_updates: 2\n"
                                 "  deadline_s: 0.001\n"))
    rounds = Simulation(load_scenario(none)).run().rounds
    assert (rounds["n_completed"] < 2).all() and (rounds["samples_delivered"] == 0).all()

"""Every accuracy fedwave shows carries its interval — the run's summary table, the sweep
table, accuracy.png's band — except the surrogate's, which is modelled and says so; the
figures of a sweep or comparison directory (latency_accuracy.png, pareto.png)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fl.core.metrics import mean_interval, wilson_interval
from sim.cli import _seeds_accuracy, _summary_table, app
from sim.plots import mean_curve, pareto_front, plot_run
from sim.runner import run_scenario

ROOT = Path(__file__).resolve().parents[2]
SURROGATE = ROOT / "scenarios" / "surrogate_quickstart.yaml"
runner = CliRunner()


def _text(renderable) -> str:
    con = Console(width=200, record=True)
    con.print(renderable)
    return con.export_text()


def _summary(learner: str, with_interval: bool) -> dict:
    lo, hi = wilson_interval(29, 60)
    fin = {"accuracy": 29 / 60, "loss": 0.5}
    ini = {"accuracy": 0.2, "loss": 3.3}
    if with_interval:
        fin.update(accuracy_lo=lo, accuracy_hi=hi, n_eval=60.0)
        ini.update(accuracy_lo=0.12, accuracy_hi=0.32, n_eval=60.0)
    return {"scenario": "s", "learner": learner, "totals": {"bits_up": 1.0, "bits_down": 1.0},
            "initial": ini, "final": fin}


def test_run_summary_shows_the_interval_or_says_modelled():
    real = _text(_summary_table(_summary("real", True)))
    assert "0.2 [0.12, 0.32] → 0.483 [0.36, 0.61] (95 % Wilson, n = 60)" in real
    surrogate = _text(_summary_table(_summary("surrogate", False)))
    assert "0.2 (modelled) → 0.483 (modelled)" in surrogate and "Wilson" not in surrogate


def test_sweep_table_accuracy_one_seed_several_seeds_and_the_surrogate():
    lo, hi = wilson_interval(29, 60)
    one = [{"final_accuracy": 29 / 60, "final_accuracy_lo": lo, "final_accuracy_hi": hi, "learner": "real"}]
    assert _seeds_accuracy(one) == "0.483 [0.36, 0.61]"
    several = [{"final_accuracy": a, "final_accuracy_lo": a - 0.1, "final_accuracy_hi": a + 0.1,
                "learner": "real"} for a in (0.4, 0.5, 0.45)]
    mean, tlo, thi = mean_interval([0.4, 0.5, 0.45])
    assert _seeds_accuracy(several) == f"{mean:.3g} [{tlo:.2g}, {thi:.2g}] (t, 3 seeds)" == \
        "0.45 [0.33, 0.57] (t, 3 seeds)"
    modelled = [{"final_accuracy": a, "learner": "surrogate"} for a in (0.4, 0.5)]
    assert _seeds_accuracy(modelled) == "0.45±0.071 (modelled)"
    assert _seeds_accuracy([{"final_accuracy": None, "learner": "real"}]) == "—"


# ----------------------------------------------------------------------------- accuracy.png
def _recorded(monkeypatch) -> list[tuple]:
    """Calls of Axes.fill_between and Axes.axhline made while plotting (but the rounds
    plot's deadline line)."""
    from matplotlib.axes import Axes

    calls: list[tuple] = []
    for name in ("fill_between", "axhline"):
        orig = getattr(Axes, name)

        def rec(self, *args, _name=name, _orig=orig, **kw):
            if not str(kw.get("label", "")).startswith("deadline"):
                calls.append((_name, args, kw))
            return _orig(self, *args, **kw)

        monkeypatch.setattr(Axes, name, rec)
    return calls


@pytest.fixture(scope="module")
def surrogate_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "surrogate"
    run_scenario(SURROGATE, ["fl.rounds=3"], out=out, plots=False)
    return out


def test_accuracy_plot_of_the_surrogate_has_no_band_and_no_untrained_line(surrogate_run, monkeypatch):
    calls = _recorded(monkeypatch)
    assert "plots/accuracy.png" in plot_run(surrogate_run)
    assert calls == []


def test_accuracy_plot_of_a_real_learner_draws_the_wilson_band(surrogate_run, tmp_path, monkeypatch):
    """The surrogate's run directory dressed as a real learner's: intervals in rounds.csv and
    summary.json's initial; the band runs from the untrained model (t = 0) through every
    evaluation."""
    run = tmp_path / "real"
    shutil.copytree(surrogate_run, run)
    rounds = pd.read_csv(run / "rounds.csv")
    rounds["accuracy_lo"] = rounds["accuracy"] - 0.1
    rounds["accuracy_hi"] = rounds["accuracy"] + 0.05
    rounds.to_csv(run / "rounds.csv", index=False)
    s = json.loads((run / "summary.json").read_text())
    s["learner"] = "real"
    s["initial"].update(accuracy_lo=0.11, accuracy_hi=0.33)
    (run / "summary.json").write_text(json.dumps(s))
    calls = _recorded(monkeypatch)
    plot_run(run)
    (band,) = [c for c in calls if c[0] == "fill_between"]
    t, lo, hi = band[1]
    assert list(t) == [0.0] + rounds["t_end_s"].tolist()
    assert list(lo) == [0.11] + rounds["accuracy_lo"].tolist()
    assert list(hi) == [0.33] + rounds["accuracy_hi"].tolist()
    assert [c[1][0] for c in calls if c[0] == "axhline"] == [s["initial"]["accuracy"], s["initial"]["loss"]]


# ----------------------------------------------------------------------------- many runs
def test_mean_curve_steps_until_the_earliest_end():
    a = {"t": np.array([0.0, 2.0, 4.0]), "accuracy": np.array([0.1, 0.3, 0.5])}
    b = {"t": np.array([0.0, 3.0]), "accuracy": np.array([0.2, 0.4])}
    t, m = mean_curve([a, b])
    # at 0: (0.1 + 0.2)/2; at 2: (0.3 + 0.2)/2; at 3: (0.3 + 0.4)/2; b ends at 3
    assert t.tolist() == [0.0, 2.0, 3.0]
    assert m.tolist() == pytest.approx([0.15, 0.25, 0.35])


def test_pareto_front_keeps_the_points_nothing_beats():
    cost = np.array([5.0, 1.0, 3.0, 3.0, 4.0, 6.0])
    acc = np.array([0.6, 0.2, 0.5, 0.4, 0.5, 0.6])
    # 1 (cheapest), then 2 (better, 3 ties it on cost but is worse), 0 (best); 4 and 5 dominated
    assert pareto_front(cost, acc).tolist() == [1, 2, 0]


def _is_png(path: Path) -> bool:
    import matplotlib.image

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(path).ndim == 3


def test_plot_accepts_a_sweep_directory(tmp_path):
    out = tmp_path / "s"
    r = runner.invoke(app, ["sweep", str(SURROGATE), "--grid", "fl.clients_per_round=2,3",
                            "--seeds", "0,1", "--set", "fl.rounds=2", "--out", str(out),
                            "--backend", "inline", "--plots"])
    assert r.exit_code == 0, r.output
    assert _is_png(out / "latency_accuracy.png") and _is_png(out / "pareto.png")
    for f in ("latency_accuracy.png", "pareto.png"):
        (out / f).unlink()
    r = runner.invoke(app, ["plot", str(out)])
    assert r.exit_code == 0, r.output
    assert _is_png(out / "latency_accuracy.png") and _is_png(out / "pareto.png")
    assert str(out / "pareto.png") in r.output.replace("\n", "")


def test_plot_of_a_directory_without_finished_variants_says_so(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.csv").write_text("fl.rounds,seed,status,run_dir\n2,0,failed,x\n")
    r = runner.invoke(app, ["plot", str(out)])
    assert r.exit_code == 1 and "no variant finished" in r.output

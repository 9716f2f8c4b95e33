"""The ``fedwave`` command line: validate, schema, run, plot, report, compare."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fedwave: wireless-network co-simulator for federated fine-tuning of LLMs.")
_err = Console(stderr=True)
_out = Console()

SetOpt = typer.Option(None, "--set", help="Override a key: --set fl.rounds=3 (YAML value).")


def _load(file: Path, sets: list[str] | None):
    from sim.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(file, sets or [])
    except ScenarioError as exc:
        _err.print(f"[red]{exc}[/red]", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def validate(file: Path = typer.Argument(..., help="Scenario YAML file."),
             set_: Optional[List[str]] = SetOpt) -> None:
    """Check a scenario file (schema, cross-field rules, plug-in options)."""
    scn = _load(file, set_)
    _out.print(f"[green]OK[/green] {file}: scenario '{scn.name}', {scn.clients.n_clients} clients, "
               f"{scn.fl.rounds} rounds of {scn.fl.algorithm} ({scn.fl.driver}).")


@app.command()
def schema() -> None:
    """Print the scenario JSON Schema (for editor completion)."""
    from sim.scenario import Scenario

    sys.stdout.write(json.dumps(Scenario.model_json_schema(), indent=2) + "\n")


def _fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    return f"{v}{unit}"


def _summary_table(summary: dict, title: str | None = None) -> Table:
    t = Table(title=title or f"fedwave run: {summary.get('scenario')}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    learner = summary.get("learner")
    t.add_row("learner", f"{learner}{' (SURROGATE — no real training)' if learner == 'surrogate' else ''}")
    t.add_row("algorithm / driver", f"{summary.get('algorithm')} / {summary.get('driver')}")
    t.add_row("seed", _fmt(summary.get("seed")))
    t.add_row("rounds", _fmt(summary.get("n_rounds")))
    t.add_row("simulated time", _fmt(summary.get("simulated_time_s"), " s"))
    t.add_row("wall time", _fmt(summary.get("wall_time_s"), " s"))
    tot = summary.get("totals", {})
    t.add_row("uplink / downlink", f"{_fmt(tot.get('bits_up', 0) / 1e6)} / "
              f"{_fmt(tot.get('bits_down', 0) / 1e6)} Mbit")
    t.add_row("energy (clients)", _fmt(tot.get("energy_j"), " J"))
    t.add_row("updates / failures", f"{tot.get('updates_delivered')} / {tot.get('failures')}")
    t.add_row("events", _fmt(tot.get("events")))
    fin = summary.get("final", {})
    t.add_row("final accuracy", _fmt(fin.get("accuracy")))
    t.add_row("final loss", _fmt(fin.get("loss")))
    if summary.get("run_dir"):
        t.add_row("run directory", str(summary["run_dir"]))
    return t


@app.command()
def run(file: Path = typer.Argument(..., help="Scenario YAML file."),
        set_: Optional[List[str]] = SetOpt,
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name>-<time>)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar, no table."),
        no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots.")) -> None:
    """Run a scenario and write its run directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from sim.runner import run_scenario

    scn = _load(file, set_)
    try:
        if quiet:
            run_dir, summary = run_scenario(scn, out=out, plots=not no_plots)
        else:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=_err,
                          transient=True) as prog:
                task = prog.add_task(f"{scn.name} rounds", total=scn.fl.rounds)
                run_dir, summary = run_scenario(
                    scn, out=out, plots=not no_plots,
                    progress=lambda done, total: prog.update(task, completed=done))
    except Exception as exc:  # noqa: BLE001  (the run directory says why)
        _err.print(f"[red]Run failed: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    if not quiet:
        _out.print(_summary_table(summary))
    else:
        _out.print(str(run_dir))


@app.command()
def plot(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """(Re)draw the plots of a run directory."""
    from sim.plots import plot_run

    if not (run_dir / "rounds.csv").exists():
        _err.print(f"[red]{run_dir}: no rounds.csv here; is it a completed run directory?[/red]")
        raise typer.Exit(2)
    for f in plot_run(run_dir):
        _out.print(str(run_dir / f))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print the summary table and the per-round table of a run directory."""
    import pandas as pd

    summ = run_dir / "summary.json"
    if not summ.exists():
        _err.print(f"[red]{run_dir}: no summary.json here; is it a run directory?[/red]")
        raise typer.Exit(2)
    summary = json.loads(summ.read_text())
    if summary.get("status") == "failed":
        _err.print(f"[red]{run_dir}: the run failed: {summary.get('error')}[/red]")
        raise typer.Exit(1)
    _out.print(_summary_table(summary))
    df = pd.read_csv(run_dir / "rounds.csv")
    t = Table(title="rounds")
    cols = ["round", "t_end_s", "n_selected", "n_completed", "n_failed", "bits_up",
            "bits_down", "energy_j", "accuracy"]
    for c in cols:
        t.add_column(c, justify="right")
    for _, row in df.iterrows():
        t.add_row(*[_fmt(row[c].item() if hasattr(row[c], "item") else row[c]) for c in cols])
    _out.print(t)


@app.command()
def compare(file: Path = typer.Argument(..., help="Scenario YAML file."),
            algorithms: str = typer.Option(..., "--algorithms", help="Comma-separated names."),
            set_: Optional[List[str]] = SetOpt,
            out: Path = typer.Option(Path("runs"), "--out", help="Parent directory of the runs.")) -> None:
    """Run the same scenario once per algorithm and print one table.

    Each algorithm runs with its own default options (``fl.options`` is cleared).
    """
    from sim.runner import run_scenario

    names = [a.strip() for a in algorithms.split(",") if a.strip()]
    t = Table(title=f"compare: {file.name}")
    for c in ("algorithm", "learner", "sim time (s)", "Mbit up", "Mbit down", "energy (J)",
              "updates", "failures", "accuracy"):
        t.add_column(c, justify="right")
    for name in names:
        scn = _load(file, list(set_ or []) + [f"fl.algorithm={name}", "fl.options={}"])
        run_dir, s = run_scenario(scn, out=out / f"{scn.name}-{name}", plots=False)
        tot = s["totals"]
        t.add_row(name, s["learner"], _fmt(s["simulated_time_s"]), _fmt(tot["bits_up"] / 1e6),
                  _fmt(tot["bits_down"] / 1e6), _fmt(tot["energy_j"]),
                  str(tot["updates_delivered"]), str(tot["failures"]),
                  _fmt(s["final"]["accuracy"]))
    _out.print(t)


def main() -> None:
    """Console-script entry point (``fedwave``)."""
    app()


if __name__ == "__main__":
    main()

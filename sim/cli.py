"""The ``fedwave`` command line: validate, schema, run, sweep, plot, report, compare, calibrate."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fedwave: wireless-network co-simulator for federated fine-tuning of LLMs.")
_err = Console(stderr=True)
_out = Console()


def _wide() -> Console:
    """Where tables go: the terminal, or — piped into a file or a log, with no width to
    respect — a console wide enough that no column is folded or cut."""
    return _out if _out.is_terminal else Console(width=200)

SetOpt = typer.Option(None, "--set", help="Override a key: --set fl.rounds=3 (YAML value).")


def _algorithm_names() -> list[str]:
    from fl.core.algorithm import algorithm_names

    return algorithm_names()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("fedwave")
        except PackageNotFoundError:  # run from a source tree that is not installed
            v = "unknown (not installed)"
        _out.print(f"fedwave {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=_version,
                                       help="Print fedwave's version and exit.")) -> None:
    """fedwave: wireless-network co-simulator for federated fine-tuning of LLMs."""


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


def _acc(m: dict, learner: str | None = None) -> str:
    """An accuracy with its interval when it has one: ``0.483 [0.362, 0.607]``; the
    surrogate's is modelled and says so: ``0.483 (modelled)``."""
    return _acc_text(m.get("accuracy"), m.get("accuracy_lo"), m.get("accuracy_hi"), learner)


def _acc_text(acc, lo, hi, learner: str | None = None) -> str:
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "—"
    if learner == "surrogate":
        return f"{acc:.3g} (modelled)"
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return _fmt(acc)
    return f"{acc:.3g} [{lo:.2g}, {hi:.2g}]"


def _calibration_text(info: dict) -> str:
    """Which calibration a surrogate run used (its algorithm_info), for the summary table."""
    cal = info.get("calibration")
    curve = (f"a0 {_fmt(info.get('a0'))}, a_max {_fmt(info.get('a_max'))}, n_half "
             f"{_fmt(info.get('n_half'))}")
    if cal is None:
        return "—"
    if cal == "none":
        return f"none: the curve's options as given ({curve})"
    runs = (info.get("calibration_runs") or "").split()
    return (f"{cal} (sha256 {str(info.get('calibration_sha256', ''))[:12]}"
            + (f", fitted to {len(runs)} run(s)" if runs else "") + f"): {curve}")


def _summary_table(summary: dict, title: str | None = None) -> Table:
    t = Table(title=title or f"fedwave run: {summary.get('scenario')}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    learner = summary.get("learner")
    t.add_row("learner", f"{learner}{' (SURROGATE — no real training)' if learner == 'surrogate' else ''}")
    t.add_row("algorithm / driver", f"{summary.get('algorithm')} / {summary.get('driver')}")
    t.add_row("seed", _fmt(summary.get("seed")))
    if learner == "surrogate":
        t.add_row("curve calibration", _calibration_text(summary.get("algorithm_info") or {}))
    t.add_row("rounds", _fmt(summary.get("n_rounds")))
    t.add_row("simulated time", _fmt(summary.get("simulated_time_s"), " s"))
    t.add_row("wall time", _fmt(summary.get("wall_time_s"), " s"))
    pc = summary.get("prefix_cache") or {}
    if pc.get("prefix_cache_mib") is not None:
        hit = pc.get("prefix_hit_rate")
        t.add_row("prefix cache", f"{pc['prefix_cache_mib']:.1f} MiB"
                  + (f", {100 * hit:.0f} % of states reused" if hit is not None and not math.isnan(hit) else ""))
    tot = summary.get("totals", {})
    t.add_row("uplink / downlink", f"{_fmt(tot.get('bits_up', 0) / 1e6)} / "
              f"{_fmt(tot.get('bits_down', 0) / 1e6)} Mbit")
    t.add_row("energy (clients)", _fmt(tot.get("energy_j"), " J"))
    t.add_row("updates / failures", f"{tot.get('updates_delivered')} / {tot.get('failures')}")
    t.add_row("events", _fmt(tot.get("events")))
    ini, fin = summary.get("initial") or {}, summary.get("final", {})
    if ini.get("accuracy") is not None:
        n = fin.get("n_eval") or ini.get("n_eval")
        t.add_row("accuracy: untrained → final", f"{_acc(ini, learner)} → {_acc(fin, learner)}"
                  + (f" (95 % Wilson, n = {int(n)})" if n and fin.get("accuracy_lo") is not None else ""))
        t.add_row("loss: untrained → final", f"{_fmt(ini.get('loss'))} → {_fmt(fin.get('loss'))}")
    else:
        t.add_row("final accuracy", _acc(fin, learner))
        t.add_row("final loss", _fmt(fin.get("loss")))
    if summary.get("run_dir"):
        t.add_row("run directory", str(summary["run_dir"]))
    return t


@app.command()
def run(file: Path = typer.Argument(..., help="Scenario YAML file."),
        set_: Optional[List[str]] = SetOpt,
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name>-<time>)."),
        quiet: bool = typer.Option(False, "--quiet", metavar="", help="No progress bar, no table."),
        no_plots: bool = typer.Option(False, "--no-plots", metavar="", help="Skip the PNG plots."),
        resume: bool = typer.Option(False, "--resume", metavar="", help="Continue the interrupted run in "
                                    "--out DIR from its checkpoint.zip (sync driver)."),
        overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Empty a used --out DIR "
                                       "first (else a non-empty DIR is refused).")) -> None:
    """Run a scenario and write its run directory."""
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from sim.outputs import RunDirError
    from sim.runner import run_scenario

    scn = _load(file, set_)
    try:
        if quiet:
            with _terminate_as_interrupt():
                run_dir, summary = run_scenario(scn, out=out, plots=not no_plots, resume=resume,
                                                overwrite=overwrite)
        elif not _err.is_terminal:  # a log file: one plain line per round
            with _terminate_as_interrupt():
                run_dir, summary = run_scenario(
                    scn, out=out, plots=not no_plots, resume=resume, overwrite=overwrite,
                    progress=_round_lines(scn.name, scn.fl.algorithm == "surrogate"))
        else:
            with _terminate_as_interrupt(), Progress(
                    "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), console=_err, transient=True) as prog:
                task = prog.add_task(f"{scn.name} rounds", total=scn.fl.rounds,
                                     info="the untrained model, then round 0")
                run_dir, summary = run_scenario(
                    scn, out=out, plots=not no_plots, resume=resume, overwrite=overwrite,
                    progress=_round_bar(prog, task, scn.fl.algorithm == "surrogate"))
    except RunDirError as exc:
        _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        where = f" --out {out}" if out is not None else ""
        _err.print(f"[yellow]Interrupted. Resume with: fedwave run {escape(str(file))}{where} "
                   "--resume (with the same --set overrides).[/yellow]", highlight=False)
        raise typer.Exit(130) from None
    except MemoryError:
        _err.print("[red]Run failed: out of memory (MemoryError). Fix: fewer clients or cells, "
                   "smaller models or batches, or a machine with more memory.[/red]",
                   highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001  (the run directory says why)
        _err.print(f"[red]Run failed: {escape(type(exc).__name__)}: {escape(str(exc))}[/red]",
                   highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        import pandas as pd

        _wide().print(_rounds_table(pd.read_csv(Path(summary["run_dir"]) / "rounds.csv")))
        _wide().print(_summary_table(summary))
    else:
        _out.print(str(run_dir))


def _round_info(row: dict, last_eval: dict | None, modelled: bool = False) -> str:
    """``t = 412.5 s simulated · accuracy 0.412 [0.31, 0.51]`` of a round's row."""
    from sim.progress import accuracy_text

    src = row if row.get("accuracy") == row.get("accuracy") else (last_eval or {})
    rec = {"accuracy": src.get("accuracy"), "accuracy_lo": src.get("accuracy_lo"),
           "accuracy_hi": src.get("accuracy_hi"), "rounds_done": row["round"] + 1,
           "accuracy_round": src.get("round")}
    text = accuracy_text(rec)
    if modelled and rec["accuracy"] == rec["accuracy"] and rec["accuracy"] is not None:
        text = text.replace("accuracy ", "modelled accuracy ", 1)  # the surrogate scores no prompts
    return f"t = {row['t_end_s']:.1f} s simulated · {text}"


def _round_bar(prog, task, modelled: bool = False):
    last: dict = {}

    def update(done: int, total: int, row: dict) -> None:
        if row.get("accuracy") == row.get("accuracy"):
            last["row"] = row
        prog.update(task, completed=done, info=_round_info(row, last.get("row"), modelled))

    return update


def _round_lines(name: str, modelled: bool = False):
    """``fedwave run`` into a log: one line per round (rounds, simulated time, accuracy, ETA)."""
    import time

    from sim.progress import clock

    t0, state = time.perf_counter(), {}

    def line(done: int, total: int, row: dict) -> None:
        if row.get("accuracy") == row.get("accuracy"):
            state["row"] = row
        state.setdefault("start", done - 1)
        wall = time.perf_counter() - t0
        eta = wall / max(done - state["start"], 1) * (total - done)
        _err.print(f"{name}: round {done}/{total} · {_round_info(row, state.get('row'), modelled)} · "
                   f"{clock(wall)} wall, ETA {clock(eta)}", highlight=False, soft_wrap=True)

    return line


@contextlib.contextmanager
def _watching(runs, quiet: bool):
    """While a comparison or a sweep runs: one line per variant each time it finishes a round
    (read from its run directory, whatever process runs it)."""
    if quiet:
        yield
        return
    from sim.progress import Watcher, progress_text

    def emit(label: str, rec: dict) -> None:
        _err.print(f"{label}: {progress_text(rec)}", highlight=False, soft_wrap=True)

    with Watcher(runs, emit):
        yield


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Within the block SIGTERM ends a run as Ctrl-C does (marked interrupted, resumable);
    the previous handler is back afterwards (the CLI may run inside another program)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Backend(str, Enum):
    process = "process"
    ray = "ray"
    inline = "inline"


def _sweep_spec(file: Path, grid: list[str], seeds: str | None, sets: list[str]):
    """The sweep spec of ``file`` (a scenario or a sweep file) with the CLI's additions."""
    from sim.sweep import SweepSpec, is_sweep_file, load_sweep_file, parse_grid, parse_seeds

    spec = load_sweep_file(file) if is_sweep_file(file) else SweepSpec(base=file)
    merged = dict(spec.grid)
    for item in grid:  # --grid replaces the file's values of the same key
        key, values = parse_grid(item)
        merged[key] = values
    return SweepSpec(base=spec.base, grid=tuple(merged.items()),
                     seeds=parse_seeds(seeds) if seeds else spec.seeds,
                     sets=spec.sets + tuple(sets))


def _mean_sd(values: list[float]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return _fmt(m)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return f"{m:.4g}±{sd:.2g}" if sd > 0 else _fmt(m)


def _seeds_accuracy(rows: list[dict]) -> str:
    """The final accuracy of the runs of one grid point (or algorithm): one run, its value
    with its 95 % Wilson interval; several (seeds), their mean with a 95 % Student-t
    interval over the seeds; the surrogate's is modelled (mean±sd over seeds)."""
    from fl.core.metrics import mean_interval

    vals = [r["final_accuracy"] for r in rows if r.get("final_accuracy") is not None]
    if not vals:
        return "—"
    if any(r.get("learner") == "surrogate" for r in rows):
        return f"{_mean_sd(vals)} (modelled)"
    if len(vals) == 1:
        r = next(r for r in rows if r.get("final_accuracy") is not None)
        return _acc_text(r["final_accuracy"], r.get("final_accuracy_lo"), r.get("final_accuracy_hi"))
    mean, lo, hi = mean_interval(vals)
    return f"{mean:.3g} [{lo:.2g}, {hi:.2g}] (t, {len(vals)} seeds)"


def _sweep_table(spec, rows: list[dict], title: str) -> Table:
    """One line per grid point: seeds that ran, then means (± sample sd over seeds)."""
    from sim.sweep import format_value

    keys = [k for k, _ in spec.grid]
    t = Table(title=title, caption="mean±sd over the seeds that ran; accuracy: one seed with "
                                   "its 95 % Wilson interval, several with a 95 % t-interval "
                                   "over seeds")
    for k in keys:  # the grid keys and values stay readable; the metrics give way
        t.add_column(k.split(".")[-1], justify="right", min_width=len(k.split(".")[-1]))
    for c in ("ok/runs", "sim s", "Mbit up", "energy J", "accuracy", "loss", "wall s"):
        t.add_column(c, justify="right", overflow="fold")
    points: dict[tuple, list[dict]] = {}
    for r in rows:
        points.setdefault(tuple(format_value(r[k]) for k in keys), []).append(r)
    for point, rs in points.items():
        ok = [r for r in rs if r["status"] == "ok"]

        def col(name: str, scale: float = 1.0) -> list:
            return [r[name] / scale if r[name] is not None else None for r in ok]

        n_ok = f"{len(ok)}/{len(rs)}"
        t.add_row(*point, n_ok if len(ok) == len(rs) else f"[red]{n_ok}[/red]",
                  _mean_sd(col("simulated_time_s")), _mean_sd(col("bits_up", 1e6)),
                  _mean_sd(col("energy_j")), _seeds_accuracy(ok),
                  _mean_sd(col("final_loss")), _fmt(sum(r["wall_time_s"] for r in rs)))
    return t


@app.command()
def sweep(file: Path = typer.Argument(..., help="Scenario YAML, or a sweep file (base, grid, "
                                                 "seeds, set)."),
          grid: Optional[List[str]] = typer.Option(
              None, "--grid", help="Vary a key: --grid fl.clients_per_round=2,4,8 (repeatable; "
                                   "values are YAML; 'key=[[1, 2], [3, 4]]' for list values)."),
          seeds: Optional[str] = typer.Option(None, "--seeds",
                                              help="Seeds of every grid point: 0,1,2 or 0-9."),
          set_: Optional[List[str]] = SetOpt,
          out: Optional[Path] = typer.Option(
              None, "--out", help="Sweep directory (default runs/<name>-sweep-<time>)."),
          workers: Optional[int] = typer.Option(
              None, "--workers", min=1, help="Parallel variants (default: the CPU count)."),
          backend: Backend = typer.Option(Backend.process, "--backend",
                                          help="process pool, ray tasks, or inline."),
          plots: bool = typer.Option(False, "--plots", metavar="", help="Draw each variant's PNG plots, and "
                                     "the sweep's latency_accuracy.png and pareto.png."),
          dry_run: bool = typer.Option(False, "--dry-run", metavar="",
                                       help="Validate and list the variants; run nothing."),
          overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Empty a used --out DIR "
                                         "first (else a non-empty DIR is refused)."),
          quiet: bool = typer.Option(False, "--quiet", metavar="", help="No progress bar, no table.")) -> None:
    """Run every grid × seeds variant of a scenario in parallel; write DIR/sweep.csv.

    Each variant is a run directory DIR/<key=value,...,seed=N>. Every variant is validated
    before any runs. A failed variant is recorded (status failed, its error) and the others
    go on; the exit code is 1 if any failed.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from sim.outputs import RunDirError, claim_out_dir, make_run_dir
    from sim.scenario import ScenarioError
    from sim.sweep import check_nesting, failed, run_sweep, validate

    try:
        spec = _sweep_spec(file, list(grid or []), seeds, list(set_ or []))
        checked = validate(spec)
        check_nesting(checked, backend.value, spec)
        if backend is Backend.ray:
            from sim.sweep import _ray_available

            if not _ray_available():
                raise ScenarioError(["--backend ray: Ray is not installed. Fix: pip install "
                                     "'fedwave[ray]' (or use --backend process)."])
    except ScenarioError as exc:
        _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    name = checked[0][1].name
    if dry_run:
        for v, _ in checked:
            _out.print(v.name, highlight=False)
        _out.print(f"{len(checked)} variants of {name}: all valid.", highlight=False)
        return
    out_dir = make_run_dir(f"{name}-sweep", None) if out is None else out
    if out is not None and out.is_dir() and any(out.iterdir()) and not overwrite:
        try:  # refused before the progress bar starts
            claim_out_dir(out, what="sweep", flags="--overwrite")
        except RunDirError as exc:
            _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    n = len(checked)
    if quiet:
        rows = run_sweep(spec, out_dir, backend=backend.value, workers=workers, plots=plots,
                         overwrite=overwrite)
    else:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=_err,
                      transient=True) as prog:
            n_failed = 0
            task = prog.add_task(f"{name} sweep", total=n)

            def on_done(i: int, row: dict) -> None:
                nonlocal n_failed
                n_failed += row["status"] != "ok"
                prog.update(task, advance=1, description=f"{name} sweep"
                            + (f" [red]{n_failed} failed[/red]" if n_failed else ""))
                label = checked[i][0].name
                if row["status"] == "ok":
                    acc = _acc_text(row.get("final_accuracy"), row.get("final_accuracy_lo"),
                                    row.get("final_accuracy_hi"), row.get("learner"))
                    _err.print(f"{label}: done, accuracy {acc}, {row['wall_time_s']:.1f} s wall",
                               highlight=False, soft_wrap=True)
                else:
                    _err.print(f"[red]{escape(label)}: FAILED: {escape(str(row.get('error') or ''))}[/red]",
                               highlight=False, soft_wrap=True)

            with _watching([(v.name, out_dir / v.name) for v, _ in checked], quiet):
                rows = run_sweep(spec, out_dir, backend=backend.value, workers=workers,
                                 plots=plots, on_done=on_done, overwrite=overwrite)
    bad = failed(rows)
    if not quiet:
        learners = {r["learner"] for r in rows if r["learner"]}
        title = (f"sweep: {name}, {n} runs"
                 + (" (SURROGATE learner)" if learners == {"surrogate"} else ""))
        # piped into a file or a log: no terminal width to respect, so nothing is folded
        con = _wide()
        con.print(_sweep_table(spec, rows, title))
        for r in bad:
            _err.print(f"[red]failed: {escape(r['run_dir'])}: {escape(r['error'])}[/red]",
                       highlight=False)
    _out.print(str(out_dir / "sweep.csv"), highlight=False)
    if bad:
        _err.print(f"[red]{len(bad)} of {n} variants failed (see sweep.csv and each run "
                   f"directory's error.txt).[/red]")
        raise typer.Exit(1)


class PlotFormat(str, Enum):
    png = "png"
    svg = "svg"
    both = "both"


@app.command()
def plot(run_dir: Path = typer.Argument(..., help="A run directory, or a sweep or comparison "
                                                   "directory."),
         fmt: Optional[PlotFormat] = typer.Option(None, "--format", help="png, svg or both "
                                                  "(default: the run's outputs.plot_format).")
         ) -> None:
    """(Re)draw the plots of a run, a comparison or a sweep directory.

    A run: plots/*.png (or .svg). A sweep or comparison: latency_accuracy.png (accuracy
    against simulated time per grid point or algorithm) and pareto.png (final accuracy
    against simulated time and total bits, the Pareto front).
    """
    from sim.plots import plot_collection, plot_run

    if (run_dir / "compare.csv").is_file() or (run_dir / "sweep.csv").is_file():
        try:
            files = plot_collection(run_dir)
        except (OSError, ValueError, KeyError) as exc:
            _err.print(f"[red]{run_dir}: cannot draw the plots ({_escape(type(exc).__name__)}: "
                       f"{_escape(str(exc))}). Fix: run the sweep or comparison again into this "
                       "directory (--resume or --overwrite).[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        for f in files:
            _out.print(str(run_dir / f), highlight=False)
        return
    _finished(run_dir)
    try:
        files = plot_run(run_dir, plot_format=fmt.value if fmt is not None else None)
    except (OSError, ValueError, KeyError) as exc:
        _err.print(f"[red]{run_dir}: cannot draw the plots ({_escape(type(exc).__name__)}: "
                   f"{_escape(str(exc))}); a file of the run is truncated or damaged. Fix: run the "
                   "scenario again with --overwrite.[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for f in files:
        _out.print(str(run_dir / f), highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _finished(run_dir: Path) -> dict:
    """The summary of a finished run directory; a clear message and exit otherwise."""
    from sim.outputs import OutputError, read_summary, run_status

    try:
        summary = read_summary(run_dir)
        status, why = run_status(run_dir, summary)
    except OutputError as exc:
        _err.print(f"[red]{_escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if status != "ok":
        _err.print(f"[red]{_escape(why)}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return summary


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory, or (with --html) a "
                                          "comparison or sweep directory."),
           html: bool = typer.Option(False, "--html", metavar="", help="Write one self-contained HTML "
                                     "page (summary, rounds, plots, events) instead of "
                                     "printing tables."),
           out: Optional[Path] = typer.Option(None, "--out", help="The HTML file to write "
                                              "(default DIR/report.html; implies --html).")
           ) -> None:
    """Print a run's summary and per-round tables; --html: a one-page report in the browser.

    With --html, write DIR/report.html, a page with no external resources (figures
    embedded) that opens in any browser, for a run, a comparison or a sweep.
    """
    from sim.outputs import OutputError, read_rounds

    if html or out is not None:
        from sim.report import ReportError, write_report

        try:
            path = write_report(run_dir, out)
        except ReportError as exc:
            _err.print(f"[red]{_escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        _out.print(str(path), highlight=False, soft_wrap=True)
        return
    if (run_dir / "compare.csv").is_file() or (run_dir / "sweep.csv").is_file():
        _err.print(f"{_escape(str(run_dir))} is a comparison or sweep directory: its table is "
                   "compare.csv / sweep.csv. Fix: fedwave report DIR --html writes its report, "
                   "or give one of its run directories.", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    summary = _finished(run_dir)
    try:
        rounds = read_rounds(run_dir)
    except OutputError as exc:
        _err.print(f"[red]{_escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _wide().print(_summary_table(summary))
    _wide().print(_rounds_table(rounds))


def _rounds_table(df, max_rows: int = 40) -> Table:
    """Per round: simulated end time, participants, Mbit up/down, energy, accuracy, loss
    (the first and last rounds when there are more than ``max_rows``)."""
    t = Table(title="rounds (t: simulated end time; sel/ok/fail: clients)")
    cols = [("round", "round"), ("t_end_s", "t (s)"), ("n_selected", "sel"),
            ("n_completed", "ok"), ("n_failed", "fail"), ("bits_up", "Mbit up"),
            ("bits_down", "Mbit dn"), ("energy_j", "J"), ("accuracy", "acc"),
            ("loss", "loss")]
    for _, head in cols:
        t.add_column(head, justify="right")
    rows = list(df.iterrows())
    if len(rows) > max_rows:
        rows = rows[:max_rows // 2] + [None] + rows[-(max_rows // 2):]
    for item in rows:
        if item is None:
            t.add_row(*(["…"] * len(cols)))
            continue
        row = item[1]
        vals = []
        for c, _ in cols:
            v = row[c].item() if hasattr(row[c], "item") else row[c]
            vals.append(_fmt(v / 1e6) if c.startswith("bits") else _fmt(v))
        t.add_row(*vals)
    return t


def options_for(algorithm: str, options: dict) -> tuple[dict, list[str]]:
    """:func:`sim.compare.options_for` (imported when called: the CLI starts fast)."""
    from sim.compare import options_for as split

    return split(algorithm, options)


def _compare_tables(result, title: str) -> list[Table]:
    """The per-variant table (then, with several seeds, one line per algorithm) and the
    paired differences."""
    rows = result.rows
    t = Table(title=title, caption=(
        f"accuracy: final, 95 % Wilson interval (several seeds: mean, 95 % t-interval over "
        f"seeds); t→target: simulated s to accuracy ≥ {_fmt(result.target)} "
        f"({result.target_rule})"))
    for c in ("algorithm", "seed", "accuracy", "t→target s", "sim s", "Mbit up", "Mbit down",
              "client GFLOP", "energy J", "storage MB", "wall s"):
        t.add_column(c, justify="right", overflow="fold")

    def num(r, k, scale=1.0):
        return _fmt(r[k] / scale) if r.get(k) is not None else "—"

    for r in rows:
        if r["status"] != "ok":
            t.add_row(r["algorithm"], str(r["seed"]), f"[red]failed: {_escape(r['error'] or '')}[/red]",
                      *["—"] * 7, _fmt(r.get("wall_time_s")))
            continue
        t.add_row(r["algorithm"], str(r["seed"]),
                  _acc_text(r["final_accuracy"], r["final_accuracy_lo"], r["final_accuracy_hi"],
                            r["learner"]),
                  num(r, "time_to_target_s"), num(r, "simulated_time_s"), num(r, "bits_up", 1e6),
                  num(r, "bits_down", 1e6), num(r, "client_flops", 1e9), num(r, "energy_j"),
                  num(r, "client_storage_bytes", 1e6), _fmt(r.get("wall_time_s")))
    algs = list(dict.fromkeys(r["algorithm"] for r in rows))
    if len(rows) > len(algs):  # several seeds: one line per algorithm
        t.add_section()
        for a in algs:
            rs = [r for r in rows if r["algorithm"] == a]
            ok = [r for r in rs if r["status"] == "ok"]
            n_ok = f"{len(ok)}/{len(rs)} seeds"

            def col(k, scale=1.0):
                return _mean_sd([r[k] / scale if r.get(k) is not None else None for r in ok])

            t.add_row(f"[bold]{a}[/bold]", n_ok if len(ok) == len(rs) else f"[red]{n_ok}[/red]",
                      _seeds_accuracy(ok), col("time_to_target_s"), col("simulated_time_s"),
                      col("bits_up", 1e6), col("bits_down", 1e6), col("client_flops", 1e9),
                      col("energy_j"), col("client_storage_bytes", 1e6),
                      _fmt(sum(r["wall_time_s"] or 0.0 for r in rs)))
    tables = [t]
    if result.pairs:
        p = Table(title="paired differences of final accuracy, A − B, on the same test prompts",
                  caption="Newcombe's 95 % interval (1998, method 10); bootstrap: paired, "
                          "10,000 resamples; p: exact McNemar")
        for c in ("A", "B", "seed", "n", "A − B", "95 % interval", "bootstrap", "p",
                  "only A / only B"):
            p.add_column(c, justify="right", overflow="fold")
        for r in result.pairs:
            if r["status"] != "paired":
                p.add_row(r["algorithm_a"], r["algorithm_b"], str(r["seed"]),
                          f"[yellow]not paired: {_escape(r['note'])}[/yellow]", *[""] * 5)
                continue
            p.add_row(r["algorithm_a"], r["algorithm_b"], str(r["seed"]), str(r["n_prompts"]),
                      f"{r['difference']:+.3f}",
                      f"[{r['difference_lo']:+.3f}, {r['difference_hi']:+.3f}]",
                      f"[{r['bootstrap_lo']:+.3f}, {r['bootstrap_hi']:+.3f}]",
                      f"{r['mcnemar_p']:.3g}", f"{r['n_only_a']} / {r['n_only_b']}")
        tables.append(p)
    return tables


@app.command()
def compare(file: Path = typer.Argument(..., help="Scenario YAML file."),
            algorithms: str = typer.Option(..., "--algorithms", help="Comma-separated names, of: "
                                           + ", ".join(_algorithm_names()) + "."),
            seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds of every algorithm: "
                                                "0,1,2 or 0-9 (default: the scenario's seed)."),
            set_: Optional[List[str]] = SetOpt,
            out: Optional[Path] = typer.Option(
                None, "--out", help="Comparison directory (default runs/<name>-compare-<time>)."),
            target: Optional[float] = typer.Option(
                None, "--target", help="Target accuracy of the time-to-target column (default: "
                                       "the lowest final accuracy of the variants that ran)."),
            workers: Optional[int] = typer.Option(
                None, "--workers", min=1, help="Parallel variants (default: the CPU count)."),
            backend: Backend = typer.Option(Backend.process, "--backend",
                                            help="process pool, ray tasks, or inline."),
            plots: bool = typer.Option(False, "--plots", metavar="", help="Draw each variant's own PNG plots."),
            dry_run: bool = typer.Option(False, "--dry-run", metavar="",
                                         help="Validate and list the variants; run nothing."),
            overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Empty a used --out DIR "
                                           "first (else a non-empty DIR is refused)."),
            resume: bool = typer.Option(False, "--resume", metavar="", help="Continue the comparison in "
                                        "--out DIR: keep the variants that finished, resume "
                                        "the interrupted, rerun the failed."),
            quiet: bool = typer.Option(False, "--quiet", metavar="", help="No progress lines, no table.")) -> None:
    """Run the same scenario once per algorithm × seed and compare them, paired.

    Writes DIR/compare.csv, compare_pairs.csv, compare.json, latency_accuracy.png and
    pareto.png.

    Each algorithm keeps the ``fl.options`` keys its own config accepts (model, data, lora,
    lr, ... are shared by the real learners) and drops the others, saying which. Every
    variant is validated before any runs. A failed variant is recorded and the others go on;
    the exit code is 1 if any failed (2 for an invalid comparison).
    """
    from rich.markup import escape

    from sim.compare import CompareSpec, run_compare, validate, variants_of
    from sim.outputs import RunDirError, claim_out_dir, make_run_dir
    from sim.scenario import ScenarioError
    from sim.sweep import check_nesting, parse_seeds

    try:
        if resume and overwrite:
            raise ScenarioError(["--resume and --overwrite contradict each other. Fix: pass one "
                                 "of them."])
        spec = CompareSpec(base=file, algorithms=tuple(a.strip() for a in algorithms.split(",")),
                           seeds=parse_seeds(seeds) if seeds else (), sets=tuple(set_ or []),
                           target=target)
        checked = validate(spec)
        check_nesting(checked, backend.value, spec)
        if backend is Backend.ray:
            from sim.sweep import _ray_available

            if not _ray_available():
                raise ScenarioError(["--backend ray: Ray is not installed. Fix: pip install "
                                     "'fedwave[ray]' (or use --backend process)."])
    except ScenarioError as exc:
        _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    name = checked[0][1].name
    if dry_run:
        for v, _ in checked:
            _out.print(v.name, highlight=False)
        _out.print(f"{len(checked)} variants of {name}: all valid.", highlight=False)
        return
    for alg, dropped in variants_of(spec)[1].items():
        if dropped:
            _err.print(f"{alg}: dropped fl.options it does not accept: {', '.join(dropped)}",
                       highlight=False, soft_wrap=True)
    out_dir = make_run_dir(f"{name}-compare", None) if out is None else out
    if out is not None and out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        try:  # refused before anything runs
            claim_out_dir(out, what="comparison", flags="--overwrite, --resume")
        except RunDirError as exc:
            _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    n = len(checked)
    n_done = 0

    def on_done(_i: int, row: dict, kept: bool = False) -> None:
        nonlocal n_done
        n_done += 1
        if quiet:
            return
        head = f"[{n_done}/{n}] {row['algorithm']} seed {row['seed']}:"
        if row["status"] == "ok":
            acc = _acc_text(row["final_accuracy"], row["final_accuracy_lo"],
                            row["final_accuracy_hi"], row["learner"])
            _err.print(f"{head} {'kept (finished before), ' if kept else ''}accuracy {acc}, "
                       f"{row['wall_time_s']:.1f} s wall", highlight=False)
        else:
            _err.print(f"[red]{escape(head)} FAILED after {row['wall_time_s']:.1f} s: "
                       f"{escape(row['error'] or '')}[/red]", highlight=False, soft_wrap=True)

    try:
        with _watching([(v.name, out_dir / v.name) for v, _ in checked], quiet):
            result = run_compare(spec, out_dir, backend=backend.value, workers=workers, plots=plots,
                                 on_done=on_done, overwrite=overwrite, resume=resume,
                                 on_kept=lambda i, row: on_done(i, row, kept=True))
    except (RunDirError, ScenarioError) as exc:
        _err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    bad = [r for r in result.rows if r["status"] != "ok"]
    if not quiet:
        learners = {r["learner"] for r in result.rows if r["learner"]}
        title = (f"compare: {name}, {n} runs"
                 + (" (SURROGATE learner: accuracy modelled)" if learners == {"surrogate"} else ""))
        con = _wide()
        for table in _compare_tables(result, title):
            con.print(table)
    for r in bad:
        _err.print(f"[red]failed: {escape(r['run_dir'])}: {escape(r['error'] or '')}[/red]",
                   highlight=False, soft_wrap=True)
    _out.print(str(result.out / "compare.csv"), highlight=False)
    if bad:
        _err.print(f"[red]{len(bad)} of {n} variants failed (see compare.csv and each run "
                   f"directory's error.txt).[/red]")
        raise typer.Exit(1)


@app.command()
def calibrate(run_dirs: List[Path] = typer.Argument(..., help="Finished run directories of a "
                                                    "real learner."),
              out: Path = typer.Option(..., "--out", help="The calibration file to write (YAML)."),
              plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw the fit against "
                                                  "the real points (PNG)."),
              overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace an existing --out.")
              ) -> None:
    """Fit the surrogate's learning curve to real runs (a file for fl.options.calibration).

    acc(n) = a_max − (a_max − a0)·exp(−n / n_half), n = delivered samples (rounds.csv
    samples_delivered, cumulative; the untrained model at n = 0), fitted by weighted least
    squares (each point weighted by its 95 % Wilson interval); loss0 and loss_min with n_half
    fixed. Prints the parameters with their standard errors.
    """
    from fl.algorithms.surrogate.calibration import CalibrationError
    from sim.calibrate import CalibrateError, calibrate as fit_runs

    try:
        fit, runs = fit_runs(run_dirs, out, plot=plot, overwrite=overwrite)
    except (CalibrateError, CalibrationError) as exc:
        _err.print(f"[red]{_escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    t = Table(title=f"surrogate curve fitted to {len(runs)} run(s), {fit.n_points} points",
              caption="± one standard error"
                      + (f", scaled by {fit.scale:.2f} = sqrt(χ²/dof): the points scatter more "
                         "than their intervals explain" if fit.scale > 1 else "")
                      + f"; χ²/dof = {fit.chi2:.2f}/{fit.dof}")
    t.add_column("parameter")
    t.add_column("value", justify="right")
    t.add_column("± s.e.", justify="right")
    for k, v in fit.parameters.items():
        t.add_row(k, f"{v:.4g}", f"{fit.stderr[k]:.2g}")
    _wide().print(t)
    for r in runs:
        spu = r.meta["samples_per_update"]
        _out.print(f"  {r.run_dir}: {r.meta['algorithm']}, seed {r.meta['seed']}, "
                   f"{r.meta['n_points']} points, {r.meta['samples_delivered']:.0f} samples delivered"
                   + (f" ({spu:.1f} per update)" if spu else ""), highlight=False)
    _out.print(str(out), highlight=False)
    if plot is not None:
        _out.print(str(plot), highlight=False)


def main() -> None:
    """Console-script entry point (``fedwave``)."""
    app()


if __name__ == "__main__":
    main()

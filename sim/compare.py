"""Algorithms side by side on one scenario (what ``fedwave compare`` does).

A comparison is a base scenario, a list of algorithms, seeds and fixed ``--set`` overrides.
Its variants are algorithm × seed (algorithms in the order given, seeds last); each is an
ordinary run directory ``DIR/algorithm=<name>,seed=<s>`` (``DIR/algorithm=<name>`` without
seeds: the scenario's own seed), run through :func:`sim.sweep.run_variants` (backends
``process``, ``ray``, ``inline``; the results never depend on the backend). Each algorithm
keeps the ``fl.options`` its own config accepts (model, data, lora, lr, ... are shared by
the real learners) and drops the others (:func:`options_for`).

Every variant is validated before any runs. A variant that fails while running is
recorded (its error in ``compare.csv`` and ``compare.json``; its run directory holds
``error.txt``) and the others go on.

``DIR`` gets, besides the run directories:

- ``compare.csv``: one row per variant (:data:`COMPARE_COLUMNS`): final accuracy with its
  95 % Wilson interval (empty for the surrogate, whose accuracy is modelled), the simulated
  time to the target accuracy, bits, FLOPs, energy, client storage.
- ``compare_pairs.csv``: per pair of algorithms (A before B in ``--algorithms``) and seed,
  the paired difference of their final accuracies on the same test prompts (from each
  run's ``eval.parquet``): Newcombe's 95 % interval, a paired bootstrap, the exact McNemar
  p-value (:func:`fl.core.metrics.paired_difference`); and, with several seeds paired, a row
  ``seed = all`` pooling every seed's prompts (see :data:`PAIR_COLUMNS`).
- ``compare.json``: the spec, the target and how it was chosen, both tables.
- ``latency_accuracy.png`` and ``pareto.png`` (:mod:`sim.plots`).

The target accuracy (``--target``) defaults to the lowest final accuracy among the
variants that ran: every variant reaches it by its end, so ``time_to_target_s`` says how
soon each got to a level all of them attained. A variant reaches the target at the first
evaluation (the untrained model at t = 0 included) whose accuracy is at least the target.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from sim.scenario import Scenario, ScenarioError
from sim.sweep import (Variant, check_nesting, format_value, validate_variants, yaml_inline)

__all__ = ["CompareSpec", "CompareError", "COMPARE_COLUMNS", "PAIR_COLUMNS", "options_for",
           "variants_of", "validate", "run_compare", "time_to_target", "final_prompts",
           "pair_rows", "default_target", "paired_final", "NotPaired"]

#: Columns of ``compare.csv``, one row per variant.
COMPARE_COLUMNS = (
    "algorithm", "seed", "status", "error", "learner", "n_rounds", "simulated_time_s",
    "final_accuracy", "final_accuracy_lo", "final_accuracy_hi", "n_eval", "final_loss",
    "target_accuracy", "time_to_target_s", "bits_up", "bits_down", "client_flops",
    "server_flops", "energy_j", "client_storage_bytes", "updates_delivered", "failures",
    "events", "wall_time_s", "run_dir")

#: Columns of ``compare_pairs.csv``: accuracy_a − accuracy_b on the same ``n_prompts``;
#: ``difference_lo``/``difference_hi``: Newcombe's 95 % interval (1998, method 10);
#: ``bootstrap_lo``/``bootstrap_hi``: the paired bootstrap's (10,000 resamples, seed 0);
#: ``mcnemar_p``: the exact McNemar test; ``n_only_a``/``n_only_b``: the prompts only A /
#: only B answered right. ``status`` is ``paired`` or ``not paired`` (``note`` says why).
PAIR_COLUMNS = (
    "algorithm_a", "algorithm_b", "seed", "status", "note", "n_prompts", "accuracy_a",
    "accuracy_b", "difference", "difference_lo", "difference_hi", "bootstrap_lo",
    "bootstrap_hi", "mcnemar_p", "n_only_a", "n_only_b")

N_BOOT = 10_000  # paired bootstrap resamples (seed 0: the same runs give the same interval)


class CompareError(ScenarioError):
    """A comparison-spec problem (algorithms, seeds, target); ``lines`` as ScenarioError."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.lines = lines
        head = f"Invalid comparison{f' of {source}' if source else ''}:"
        ValueError.__init__(self, "\n".join([head] + [f"  - {ln}" for ln in lines]))


@dataclass(frozen=True)
class CompareSpec:
    """What to compare.

    base: the scenario YAML file.
    algorithms: registered algorithm names, each once, in the order of the tables.
    seeds: root seeds of every algorithm; empty: the scenario's own seed.
    sets: fixed ``key.path=value`` overrides applied to every variant.
    target: the target accuracy in [0, 1] of ``time_to_target_s``; None: the lowest final
        accuracy of the variants that ran (see the module docstring).
    """

    base: Path
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...] = ()
    sets: tuple[str, ...] = ()
    target: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", Path(self.base))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "sets", tuple(self.sets))
        lines = []
        if not self.algorithms or any(not a for a in self.algorithms):
            lines.append(f"--algorithms: give one or more algorithm names, comma-separated; got "
                         f"{','.join(self.algorithms)!r}. Fix: e.g. --algorithms fedavg_lora,split_lora.")
        dup = sorted({a for a in self.algorithms if self.algorithms.count(a) > 1})
        if dup:
            lines.append(f"--algorithms: {', '.join(dup)} named more than once. Fix: name each "
                         "algorithm once.")
        from fl.core.algorithm import algorithm_names

        unknown = [a for a in dict.fromkeys(self.algorithms) if a and a not in algorithm_names()]
        if unknown:
            lines.append(f"--algorithms: unknown algorithm(s) {', '.join(map(repr, unknown))}. Fix: "
                         f"use some of: {', '.join(algorithm_names())}.")
        if self.target is not None and not (isinstance(self.target, (int, float))
                                            and 0.0 <= self.target <= 1.0):
            lines.append(f"--target: an accuracy in [0, 1]; got {self.target!r}. Fix: e.g. "
                         "--target 0.4, or leave it out (the lowest final accuracy).")
        if lines:
            raise CompareError(lines, str(self.base))


def options_for(algorithm: str, options: dict) -> tuple[dict, list[str]]:
    """Split ``fl.options`` into the keys ``algorithm``'s Config accepts and the others.

    Returns (kept options, sorted names of the dropped keys). Raises KeyError for an
    unknown algorithm (NotImplementedError when its dependencies are missing).
    """
    from fl.core.algorithm import algorithm_config

    accepted = algorithm_config(algorithm).model_fields
    kept = {k: v for k, v in options.items() if k in accepted}
    return kept, sorted(k for k in options if k not in accepted)


def _option_key(item: str) -> str | None:
    """The option an ``fl.options.<key>...=value`` override sets, else None."""
    parts = item.partition("=")[0].strip().split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["fl", "options"] else None


def _raw_options(base: Path, sets: Sequence[str]) -> tuple[dict, dict]:
    """The scenario's ``fl.options`` and ``fl.algorithm_options`` with ``sets`` applied (not
    yet validated); empty when the file cannot be read (validation names the problem)."""
    from sim.scenario import apply_overrides, load_yaml

    try:
        data = load_yaml(base.read_text(encoding="utf-8"), str(base))
        if not isinstance(data, dict):
            return {}, {}
        data = apply_overrides(data, list(sets))
    except (OSError, UnicodeDecodeError, ScenarioError):
        return {}, {}
    fl = data.get("fl") if isinstance(data.get("fl"), dict) else {}
    options, per = fl.get("options"), fl.get("algorithm_options")
    return (options if isinstance(options, dict) else {}), (per if isinstance(per, dict) else {})


def variants_of(spec: CompareSpec) -> tuple[list[Variant], dict[str, list[str]]]:
    """The variants of ``spec`` (algorithms in order, seeds fastest) and, per algorithm, the
    ``fl.options`` keys it drops.

    A variant's overrides: the ``--set`` items that are not options, ``fl.core.algorithm``, the
    scenario's ``fl.options`` the algorithm accepts (with its ``fl.algorithm_options`` entry
    merged over them: each of its keys replaces fl.options's), then the ``--set fl.options.<key>...``
    items whose key it accepts (an option of one algorithm only, e.g. split_lora's
    ``cut_layer``, is set for that one and dropped for the others), then the seed.
    """
    option_sets = [s for s in spec.sets if _option_key(s) is not None]
    other_sets = [s for s in spec.sets if _option_key(s) is None]
    options, per_algorithm = _raw_options(spec.base, other_sets)
    out: list[Variant] = []
    dropped: dict[str, list[str]] = {}
    seeds: Sequence[int | None] = spec.seeds or (None,)
    for name in spec.algorithms:
        try:
            entry = per_algorithm.get(name)
            kept, dropped[name] = options_for(name, {**options, **(entry if isinstance(entry, dict) else {})})
            accepted, rejected = options_for(name, {_option_key(s): s for s in option_sets})
        except (KeyError, NotImplementedError):  # validation names the algorithm problem
            kept, dropped[name], accepted, rejected = {}, [], {}, []
        dropped[name] = sorted(set(dropped[name]) | set(rejected))
        mine = [s for s in option_sets if _option_key(s) in accepted]
        for seed in seeds:
            # the entry is merged into fl.options here, and the block dropped: a --set of an
            # option then has the last word
            overrides = (other_sets + [f"fl.algorithm={name}", "fl.algorithm_options={}",
                                       f"fl.options={yaml_inline(kept)}"]
                         + mine + ([f"seed={seed}"] if seed is not None else []))
            vname = f"algorithm={format_value(name)}" + (f",seed={seed}" if seed is not None else "")
            out.append(Variant(name=vname, params=(("fl.algorithm", name),), seed=seed,
                               overrides=tuple(overrides)))
    return out, dropped


def validate(spec: CompareSpec) -> list[tuple[Variant, Scenario]]:
    """Load every variant's scenario; one :class:`ScenarioError` listing every problem (each
    line naming its variant). Nothing is written."""
    variants, _ = variants_of(spec)
    return validate_variants(spec.base, variants, {"--set fl.algorithm": "--algorithms"},
                             f"comparison of {spec.base}")


# ----------------------------------------------------------------------------- results
def _curve(run_dir: Path) -> list[tuple[float, float]]:
    """(simulated time, accuracy) of every evaluation of a run, the untrained model at t = 0
    first (when it was evaluated)."""
    from sim.outputs import read_rounds, read_summary

    initial = (read_summary(run_dir).get("initial") or {}).get("accuracy")
    rounds = read_rounds(run_dir).dropna(subset=["accuracy"])
    pts = [(0.0, float(initial))] if initial is not None else []
    return pts + [(float(t), float(a)) for t, a in zip(rounds["t_end_s"], rounds["accuracy"])]


def time_to_target(run_dir: str | Path, target: float, tol: float = 1e-9) -> float | None:
    """Simulated seconds until the run's accuracy first reached ``target`` (an evaluation with
    accuracy >= target − ``tol``; 0.0 when the untrained model already had it), or None."""
    for t, acc in _curve(Path(run_dir)):
        if acc >= target - tol:
            return t
    return None


def default_target(rows: Sequence[dict]) -> float | None:
    """The lowest final accuracy among the variants that ran (None when none did)."""
    finals = [r["final_accuracy"] for r in rows if r.get("status") == "ok"
              and r.get("final_accuracy") is not None]
    return min(finals) if finals else None


def final_prompts(run_dir: str | Path):
    """The last evaluation's rows of the run's ``eval.parquet`` (the final accuracy's
    prompts), sorted by prompt; None when the run has no per-prompt results."""
    from sim.outputs import read_eval

    df = read_eval(run_dir)
    if df is None or df.empty:
        return None
    last = df[df["round"] == df["round"].max()]
    return last.sort_values("prompt", kind="stable").reset_index(drop=True)


DIFFERENT_PROMPTS = ("scored on different test prompts (their fl.options.data or data_seed "
                     "differ)")


def _same_prompts(ea, eb) -> bool:
    return ea["prompt"].tolist() == eb["prompt"].tolist() and ea["label"].tolist() == eb["label"].tolist()


class NotPaired(ValueError):
    """Two runs whose final accuracies cannot be paired (the message says why)."""


def paired_final(run_a: str | Path, run_b: str | Path, n_boot: int = N_BOOT):
    """The paired difference ``accuracy_a − accuracy_b`` of two runs' final evaluations on
    the same test prompts (:func:`fl.core.metrics.paired_difference`: Newcombe's 95 % interval,
    the seeded paired bootstrap, the exact McNemar p). Raises :class:`NotPaired` naming the
    run without per-prompt results, or when they scored different prompts."""
    from fl.core.metrics import paired_difference

    ea, eb = final_prompts(run_a), final_prompts(run_b)
    for run, e in ((run_a, ea), (run_b, eb)):
        if e is None:
            raise NotPaired(f"{run}: no eval.parquet (per-prompt results; the surrogate scores none)")
    if not _same_prompts(ea, eb):
        raise NotPaired(f"{run_a} and {run_b}: {DIFFERENT_PROMPTS}")
    return paired_difference(ea["correct"].to_numpy(bool), eb["correct"].to_numpy(bool),
                             n_boot=n_boot, seed=0)


def _no_prompts_note(row: dict) -> str:
    if row.get("learner") == "surrogate":
        return f"{row['algorithm']} is the surrogate: its accuracy is modelled (no test prompts)"
    return f"{row['algorithm']}'s run has no eval.parquet (per-prompt results)"


def pair_rows(rows: Sequence[dict], out: Path, n_boot: int = N_BOOT) -> list[dict]:
    """The ``compare_pairs.csv`` rows of variant ``rows`` (``compare.csv`` rows, run
    directories relative to ``out``): each pair of algorithms, each seed both ran, then the
    pooled row ``seed = "all"`` when two or more seeds were paired."""
    import numpy as np

    by_alg: dict[str, dict[Any, dict]] = {}
    for r in rows:
        by_alg.setdefault(r["algorithm"], {})[r["seed"]] = r
    algs = list(by_alg)
    out_rows: list[dict] = []
    for i, a in enumerate(algs):
        for b in algs[i + 1:]:
            pooled_a, pooled_b = [], []
            for seed in [s for s in by_alg[a] if s in by_alg[b]]:
                ra, rb = by_alg[a][seed], by_alg[b][seed]
                row = {"algorithm_a": a, "algorithm_b": b, "seed": seed, "status": "not paired"}
                failed = [r["algorithm"] for r in (ra, rb) if r["status"] != "ok"]
                if failed:
                    out_rows.append({**row, "note": f"{' and '.join(failed)} failed"})
                    continue
                ea, eb = final_prompts(out / ra["run_dir"]), final_prompts(out / rb["run_dir"])
                if ea is None or eb is None:
                    out_rows.append({**row, "note": "; ".join(
                        _no_prompts_note(r) for r, e in ((ra, ea), (rb, eb)) if e is None)})
                    continue
                if not _same_prompts(ea, eb):
                    out_rows.append({**row, "note": DIFFERENT_PROMPTS})
                    continue
                ca, cb = ea["correct"].to_numpy(bool), eb["correct"].to_numpy(bool)
                pooled_a.append(ca)
                pooled_b.append(cb)
                out_rows.append(_paired(row, ca, cb, n_boot))
            if len(pooled_a) >= 2:
                row = {"algorithm_a": a, "algorithm_b": b, "seed": "all",
                       "note": f"{len(pooled_a)} seeds' prompts pooled: the test-prompt noise "
                               "given the trained models, not the seed-to-seed variation"}
                out_rows.append(_paired(row, np.concatenate(pooled_a), np.concatenate(pooled_b),
                                        n_boot))
    return out_rows


def _paired(row: dict, ca, cb, n_boot: int) -> dict:
    from fl.core.metrics import paired_difference

    d = paired_difference(ca, cb, n_boot=n_boot, seed=0)
    return {"note": "", **row, "status": "paired", "n_prompts": d.n, "accuracy_a": d.accuracy_a,
            "accuracy_b": d.accuracy_b, "difference": d.difference, "difference_lo": d.lo,
            "difference_hi": d.hi, "bootstrap_lo": d.bootstrap_lo, "bootstrap_hi": d.bootstrap_hi,
            "mcnemar_p": d.p_value, "n_only_a": d.n_only_a, "n_only_b": d.n_only_b}


def _variant_row(v: Variant, scn: Scenario, result: dict, run_dir: Path, name: str) -> dict:
    """A ``compare.csv`` row: the run's result fields, then what its summary adds."""
    from sim.outputs import OutputError, read_summary

    row = {c: None for c in COMPARE_COLUMNS}
    row.update({k: v_ for k, v_ in result.items() if k in row})
    row.update(algorithm=v.params[0][1], seed=scn.seed, run_dir=name)
    if row["status"] == "ok":
        try:
            s = read_summary(run_dir)
        except OutputError as exc:  # finished, then damaged: say so in the row
            row.update(status="failed", error=str(exc))
            return row
        tot = s.get("totals", {})
        row.update(n_eval=(s.get("final") or {}).get("n_eval"),
                   client_flops=tot.get("client_flops"), server_flops=tot.get("server_flops"),
                   client_storage_bytes=(s.get("algorithm_info") or {}).get("client_storage_bytes"))
    return row


def _previous(run_dir: Path, scn: Scenario, name: str) -> str:
    """What ``--resume`` does with a variant's non-empty run directory: ``done`` (finished
    with this scenario), ``resume`` (interrupted, with a checkpoint) or ``overwrite``
    (failed, or never got far). Raises :class:`RunDirError` when it holds another
    scenario's run, or one still running."""
    from sim.outputs import OutputError, RunDirError, run_status
    from sim.checkpoint import first_difference as _first_difference, numerics as _numerics

    resolved = run_dir / "scenario.resolved.yaml"
    if resolved.is_file():
        try:
            old = yaml.safe_load(resolved.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            old = None
        diff = _first_difference(_numerics(old) if isinstance(old, dict) else {},
                                 _numerics(scn.model_dump(mode="json")))
        if diff is not None:
            key, was, now = diff
            raise RunDirError(f"--resume: {run_dir} holds a run of another scenario ({key} is "
                              f"{was!r} there, {now!r} now; variant {name}). Fix: resume with "
                              "the same scenario file and --set overrides, or pass --overwrite.")
    try:
        status, why = run_status(run_dir)
    except OutputError:
        return "overwrite"
    if status == "ok":
        return "done"
    if status == "running":
        raise RunDirError(f"--resume: {why} Fix: wait for it, or stop it first.")
    if status == "interrupted" and scn.fl.driver == "sync" and (run_dir / "checkpoint.zip").is_file():
        return "resume"
    return "overwrite"


@dataclass
class CompareResult:
    """What :func:`run_compare` produced: the ``compare.csv`` rows (variant order), the
    ``compare_pairs.csv`` rows, the target accuracy and how it was set."""

    rows: list[dict]
    pairs: list[dict]
    target: float | None
    target_rule: str
    out: Path


def run_compare(spec: CompareSpec, out: str | Path, backend: str = "process",
                workers: int | None = None, plots: bool = False, figures: bool = True,
                on_done: Callable[[int, dict], None] | None = None, overwrite: bool = False,
                resume: bool = False, on_kept: Callable[[int, dict], None] | None = None
                ) -> CompareResult:
    """Validate every variant, run them, write ``out/<variant>/`` and the comparison files.

    Raises :class:`ScenarioError` (nothing written) if any variant is invalid, and
    :class:`sim.outputs.RunDirError` (nothing written) if ``out`` is not empty, unless
    ``overwrite`` (emptied first) or ``resume`` (variants that finished with the same
    scenario are kept, interrupted ones continue from their checkpoint, the others run
    again). ``on_done(index, row)``: as each variant finishes (``compare.csv`` row);
    ``on_kept(index, row)``: for each variant ``resume`` keeps, before anything runs.
    ``plots``: each variant's own plots; ``figures``: ``latency_accuracy.png`` and
    ``pareto.png``.
    """
    from sim.outputs import atomic_write_text, claim_out_dir, read_summary
    from sim.sweep import _ray_available, result_fields, run_variants

    if backend == "ray" and not _ray_available():
        raise RuntimeError("The 'ray' backend needs Ray, which is not installed. "
                           "Fix: pip install 'fedwave[ray]' (or use --backend process).")
    checked = validate(spec)
    check_nesting(checked, backend, spec)
    out = Path(out)
    modes = {}
    if resume and out.is_dir():  # decided for every variant before anything runs
        for v, scn in checked:
            rd = out / v.name
            if rd.is_dir() and any(rd.iterdir()):
                modes[v.name] = _previous(rd, scn, v.name)
    out = claim_out_dir(out, overwrite=overwrite, resume=resume, what="comparison",
                        flags="--overwrite, --resume")
    rows: list[dict | None] = [None] * len(checked)
    todo = []
    for i, (v, scn) in enumerate(checked):
        if modes.get(v.name) == "done":
            s = read_summary(out / v.name)
            rows[i] = _variant_row(v, scn, {**result_fields(s), "wall_time_s": s.get("wall_time_s")},
                                   out / v.name, v.name)
            if on_kept is not None:
                on_kept(i, rows[i])
        else:
            todo.append(i)

    def done(j: int, result: dict) -> None:
        i = todo[j]
        v, scn = checked[i]
        rows[i] = _variant_row(v, scn, result, out / v.name, v.name)
        if on_done is not None:
            on_done(i, rows[i])

    jobs = [(checked[i][0].overrides, str(out / checked[i][0].name),
             modes.get(checked[i][0].name, "new")) for i in todo]
    run_variants(str(spec.base), jobs, backend=backend, workers=workers, plots=plots, on_done=done)
    full: list[dict] = rows  # type: ignore[assignment]
    target, rule = spec.target, "--target"
    if target is None:
        target, rule = default_target(full), "the lowest final accuracy of the variants that ran"
    for r in full:
        r["target_accuracy"] = target
        if r["status"] == "ok" and target is not None:
            r["time_to_target_s"] = time_to_target(out / r["run_dir"], target)
    pairs = pair_rows(full, out)
    _write_csv(out / "compare.csv", COMPARE_COLUMNS, full)
    _write_csv(out / "compare_pairs.csv", PAIR_COLUMNS, pairs)
    doc = {"spec": {"base": str(spec.base.resolve()), "algorithms": list(spec.algorithms),
                    "seeds": list(spec.seeds), "set": list(spec.sets), "target": spec.target},
           "target_accuracy": target, "target_rule": rule,
           "n_failed": sum(r["status"] != "ok" for r in full),
           "variants": full, "pairs": pairs}
    atomic_write_text(out / "compare.json", json.dumps(_clean(doc), indent=2) + "\n")
    if figures and any(r["status"] == "ok" for r in full):
        from sim.plots import plot_collection

        plot_collection(out)
    return CompareResult(full, pairs, target, rule, out)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    from sim.outputs import atomic_write_text
    from sim.sweep import _cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())

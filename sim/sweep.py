"""Parameter sweeps (what ``fedwave sweep`` does): many scenario variants, one table.

A sweep is a base scenario, a grid (key path -> list of values), a list of seeds and
optional fixed ``--set`` overrides. Its variants are the Cartesian product grid × seeds, in
a fixed order (grid keys in the order given, values in the order given, seeds last). Each
variant is an ordinary run directory under the sweep directory, named from the varied
values (``clients_per_round=4,uplink_bandwidth_hz=5e6,seed=1``), and ``sweep.csv`` holds
one row per variant (see :data:`FIXED_COLUMNS`).

Every variant is validated before any runs, so a bad key or value stops the sweep with
nothing written. A variant that fails while running is recorded as failed (its run
directory says why) and does not stop the others. A variant's result depends only on its
scenario and seed, never on the backend or the number of workers.

::

    from sim.sweep import SweepSpec, expand, validate, run_sweep
    spec = SweepSpec(base="scenarios/surrogate_quickstart.yaml",
                     grid=(("fl.clients_per_round", (2, 4)),), seeds=(0, 1))
    rows = run_sweep(spec, "runs/sweep", backend="process", workers=2)

A sweep file (YAML) holds the same spec; ``base`` is relative to the sweep file::

    base: surrogate_quickstart.yaml
    set: {fl.rounds: 3}
    grid:
      fl.clients_per_round: [2, 4, 8]
      network.uplink_bandwidth_hz: [5.0e6, 20.0e6]
    seeds: [0, 1, 2]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from sim.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["SweepSpec", "Variant", "BACKENDS", "FIXED_COLUMNS", "parse_grid", "parse_seeds",
           "load_sweep_file", "is_sweep_file", "expand", "validate", "validate_variants",
           "format_value", "yaml_inline", "run_variant", "run_variants", "write_sweep_csv",
           "run_sweep", "sweep_columns"]

BACKENDS = ("process", "ray", "inline")

#: Columns of ``sweep.csv`` after the varied keys (one column per grid key, named by its
#: full key path, e.g. ``fl.clients_per_round``).
FIXED_COLUMNS = ("seed", "status", "error", "learner", "n_rounds", "simulated_time_s",
                 "bits_up", "bits_down", "energy_j", "updates_delivered", "failures",
                 "events", "final_accuracy", "final_accuracy_lo", "final_accuracy_hi",
                 "final_loss", "wall_time_s", "run_dir")

#: Columns that depend on the machine (wall-clock time), not on the scenario and seed.
WALL_COLUMNS = ("wall_time_s",)


class SweepError(ScenarioError):
    """A sweep-spec problem (grid syntax, seeds, repeated values); ``lines`` as ScenarioError."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.lines = lines
        head = f"Invalid sweep{f' {source}' if source else ''}:"
        ValueError.__init__(self, "\n".join([head] + [f"  - {ln}" for ln in lines]))


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep.

    base: the base scenario YAML file.
    grid: ((key path, (value, ...)), ...): the varied keys, in order.
    seeds: root seeds of each grid point; empty: the scenario's own seed.
    sets: fixed ``key.path=value`` overrides applied to every variant (before the grid).
    """

    base: Path
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    seeds: tuple[int, ...] = ()
    sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", Path(self.base))
        object.__setattr__(self, "grid", tuple((k, tuple(v)) for k, v in self.grid))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "sets", tuple(self.sets))


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: its directory name, the grid values, its seed and overrides."""

    name: str
    params: tuple[tuple[str, Any], ...]
    seed: int | None
    overrides: tuple[str, ...] = field(repr=False)


# ----------------------------------------------------------------------------- parsing
def _coerce(value: Any) -> Any:
    """YAML 1.1 reads ``5e6`` as text; a grid value that reads as a number is a number."""
    if isinstance(value, str):
        for conv in (int, float):
            try:
                return conv(value)
            except ValueError:
                pass
    if isinstance(value, list):
        return [_coerce(v) for v in value]
    return value


def parse_grid(item: str) -> tuple[str, tuple[Any, ...]]:
    """``"fl.clients_per_round=2,4,8"`` -> ('fl.clients_per_round', (2, 4, 8)).

    Values are comma-separated and each is read as YAML (``5e6`` is a number); a value list
    that starts with ``[`` is one YAML list, so values may themselves be lists:
    ``clients.groups.0.mobility.speed_mps=[[0.8, 1.6], [5, 10]]``.
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise SweepError([f"--grid {item!r}: expected key.path=value1,value2,... "
                          "Fix: e.g. --grid fl.clients_per_round=2,4,8."])
    from sim.scenario import ScenarioError, load_yaml

    try:
        if raw.strip().startswith("["):
            values = load_yaml(raw, f"--grid {key}")
            if not isinstance(values, list):
                raise ScenarioError(["not a list"])
        else:
            values = [load_yaml(v, f"--grid {key}") if v.strip() else None for v in raw.split(",")]
    except ScenarioError as exc:
        raise SweepError([f"--grid {key}: the values {raw!r} are not valid YAML ({exc}). "
                          "Fix: e.g. --grid fl.clients_per_round=2,4,8 or "
                          "--grid 'key=[[1, 2], [3, 4]]'."]) from None
    return key, _check_values(key, [_coerce(v) for v in values], f"--grid {key}")


def _check_values(key: str, values: list, where: str) -> tuple[Any, ...]:
    if not values:
        raise SweepError([f"{where}: no values. Fix: give at least one value."])
    if key == "seed":
        raise SweepError([f"{where}: the seed is swept with --seeds (sweep file: seeds:), not "
                          "as a grid key. Fix: --seeds 0,1,2."])
    names = [format_value(v) for v in values]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError([f"{where}: repeated value(s) {', '.join(dup)}; got {values!r}. "
                          "Fix: list each value once."])
    return tuple(values)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix ``"0-2,7"`` -> (0, 1, 2, 7)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise SweepError([f"--seeds: {part!r} is not a seed or an increasing range; got "
                              f"{text!r}. Fix: e.g. --seeds 0,1,2 or --seeds 0-9."])
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        seeds.extend(range(lo, hi + 1))
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise SweepError([f"--seeds: repeated seed(s) {dup}; got {text!r}. Fix: list each once."])
    return tuple(seeds)


_SWEEP_KEYS = ("base", "grid", "seeds", "set")


def is_sweep_file(path: str | Path) -> bool:
    """True when ``path`` is a sweep file (a mapping with ``base`` and no ``network``)."""
    from sim.scenario import ScenarioError, load_yaml

    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ScenarioError):
        return False
    return isinstance(data, dict) and "base" in data and "network" not in data


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Read a sweep file (keys: base, grid, seeds, set); ``base`` is relative to the file."""
    path = Path(path)
    src = str(path)
    from sim.scenario import ScenarioError, load_yaml

    try:
        data = load_yaml(path.read_text(encoding="utf-8"), src)
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError([f"{path}: cannot read the file ({type(exc).__name__}: {exc}). "
                          "Fix: check the path."]) from None
    except ScenarioError as exc:
        raise SweepError([str(exc)]) from None
    lines: list[str] = []
    if not isinstance(data, dict):
        raise SweepError([f"(top level): a sweep file is a mapping; got {type(data).__name__}. "
                          "Fix: give base:, grid:, seeds:, set:."], src)
    for key in sorted(set(data) - set(_SWEEP_KEYS)):
        lines.append(f"{key}: unknown key; got {data[key]!r}. Fix: remove it (allowed here: "
                     f"{', '.join(_SWEEP_KEYS)}).")
    base = data.get("base")
    if not isinstance(base, str):
        lines.append(f"base: the base scenario file is required; got {base!r}. "
                     "Fix: base: my_scenario.yaml (relative to the sweep file).")
    grid_in = data.get("grid") or {}
    grid: list[tuple[str, tuple]] = []
    if not isinstance(grid_in, dict):
        lines.append(f"grid: must map key paths to lists of values; got {grid_in!r}. "
                     "Fix: grid: {fl.clients_per_round: [2, 4, 8]}.")
    else:
        for key, values in grid_in.items():
            if not isinstance(values, list):
                lines.append(f"grid.{key}: must be a list of values; got {values!r}. "
                             f"Fix: {key}: [{values!r}].")
                continue
            try:
                grid.append((str(key), _check_values(str(key), [_coerce(v) for v in values],
                                                     f"grid.{key}")))
            except SweepError as exc:
                lines.extend(exc.lines)
    seeds_in = data.get("seeds", [])
    seeds: tuple[int, ...] = ()
    if isinstance(seeds_in, (int, str)):
        seeds_in = [seeds_in]
    try:
        seeds = parse_seeds(",".join(str(s) for s in seeds_in)) if seeds_in else ()
    except SweepError as exc:
        lines.extend(ln.replace("--seeds", "seeds", 1) for ln in exc.lines)
    sets_in = data.get("set") or {}
    if isinstance(sets_in, dict):
        sets = tuple(f"{k}={yaml_inline(v)}" for k, v in sets_in.items())
    elif isinstance(sets_in, list) and all(isinstance(s, str) for s in sets_in):
        sets = tuple(sets_in)
    else:
        lines.append(f"set: a mapping {{key.path: value}} or a list of 'key.path=value'; got "
                     f"{sets_in!r}. Fix: set: {{fl.rounds: 3}}.")
        sets = ()
    if lines:
        raise SweepError(lines, src)
    return SweepSpec(base=path.parent / base, grid=tuple(grid), seeds=seeds, sets=sets)


# ----------------------------------------------------------------------------- variants
def format_value(value: Any) -> str:
    """A short, file-name-safe text for a grid value (``5000000.0`` -> ``5e6``)."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    elif isinstance(value, float):
        mant, _, exp = f"{value:.12g}".partition("e")
        plain = f"{mant}e{int(exp)}" if exp else mant  # 1e-05 -> 1e-5
        mant, _, exp = f"{value:.12e}".partition("e")
        sci = f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"  # 5000000.0 -> 5e6
        text = sci if len(sci) < len(plain) else plain
    elif isinstance(value, str):
        text = value
    else:
        text = yaml_inline(value)
    if isinstance(value, dict):
        text = text.strip("{}")
    text = text.replace(", ", "_").replace(": ", "-")  # [0.8, 1.6] -> [0.8_1.6]
    return re.sub(r"[^A-Za-z0-9_.+\-\[\]]", "_", text)


def yaml_inline(value: Any) -> str:
    """``value`` as one line of YAML (what ``--set key=...`` parses back to ``value``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("\n...").strip()  # a scalar document ends with '...'


def _labels(keys: Sequence[str]) -> list[str]:
    """Short names for the keys: the last path part, unless two keys share it."""
    leaves = [k.split(".")[-1] for k in keys]
    return [leaf if leaves.count(leaf) == 1 and leaf != "seed" else key
            for key, leaf in zip(keys, leaves)]


def expand(spec: SweepSpec) -> list[Variant]:
    """The variants of ``spec``: grid values (in order, last key fastest) × seeds."""
    keys = [k for k, _ in spec.grid]
    labels = _labels(keys)
    seeds: Sequence[int | None] = spec.seeds or (None,)
    out: list[Variant] = []
    for combo in itertools.product(*(vals for _, vals in spec.grid)):
        for seed in seeds:
            parts = [f"{lab}={format_value(v)}" for lab, v in zip(labels, combo)]
            if seed is not None:
                parts.append(f"seed={seed}")
            overrides = (list(spec.sets) + [f"{k}={yaml_inline(v)}" for k, v in zip(keys, combo)]
                         + ([f"seed={seed}"] if seed is not None else []))
            out.append(Variant(name=",".join(parts) or "base", params=tuple(zip(keys, combo)),
                               seed=seed, overrides=tuple(overrides)))
    return out


def validate(spec: SweepSpec) -> list[tuple[Variant, Scenario]]:
    """Load every variant's scenario; one :class:`ScenarioError` listing every problem.

    Each problem line starts with the variant's name, then the key path and the fix.
    Nothing is written.
    """
    variants = expand(spec)
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SweepError([f"variants {', '.join(dup)} would share a run directory. Fix: give "
                          "distinct grid values."])
    renames = {f"--set {key}": f"--grid {key}" for key, _ in spec.grid}
    return validate_variants(spec.base, variants, renames, f"sweep of {spec.base}")


def validate_variants(base: str | Path, variants: Sequence[Variant], renames: dict[str, str],
                      source: str) -> list[tuple[Variant, Scenario]]:
    """Load every variant's scenario; one :class:`ScenarioError` listing every problem, each
    line ending with the variant's name (a problem shared by many variants is said once).

    renames: ``{"--set fl.algorithm": "--algorithms"}``: a problem line starting with a key
    (then ``:`` or ``.``) starts with its value instead: the option the value came from.
    """
    lines: list[str] = []
    seen: set[str] = set()
    out: list[tuple[Variant, Scenario]] = []
    for v in variants:
        try:
            out.append((v, load_scenario(base, list(v.overrides))))
        except ScenarioError as exc:
            for ln in exc.lines:  # the same problem in many variants: say it once
                for key, opt in renames.items():  # a value that reached the scenario as an override
                    if ln.startswith((f"{key}:", f"{key}.")):
                        ln = opt + ln[len(key):]
                if ln not in seen:
                    seen.add(ln)
                    lines.append(f"{ln} (variant {v.name})")
    if lines:
        raise ScenarioError(lines, source)
    return out


def check_nesting(checked: Sequence[tuple[Variant, Scenario]], backend: str, spec: SweepSpec) -> None:
    """Refuse a parallel sweep of variants that train on worker pools of their own
    (``execution.backend``): a pool in every sweep worker oversubscribes the machine."""
    if backend == "inline":
        return
    nested = sorted({scn.execution.backend for _, scn in checked} - {"inline"})
    if nested:
        raise SweepError([f"execution.backend: the variants train on {'/'.join(nested)} workers, and the "
                          f"sweep already runs its variants in parallel ({backend}), which would start a "
                          "pool of workers inside every sweep worker. Fix: --backend inline (the variants "
                          "one after another, each with its own workers), or --set execution.backend=inline."],
                         str(spec.base))


# ----------------------------------------------------------------------------- running
def run_variant(base: str, overrides: Sequence[str], run_dir: str, plots: bool = False,
                mode: str = "new") -> dict:
    """Run one variant into ``run_dir``; never raises for a failed run.

    mode: ``new`` (``run_dir`` missing or empty), ``overwrite`` (empty it first) or ``resume``
    (continue its interrupted run from ``checkpoint.zip``).
    Returns the result fields of its ``sweep.csv`` row (status ``ok`` or ``failed``; on
    failure ``error`` says why and the run directory holds ``error.txt``).
    """
    from sim.outputs import make_run_dir, write_failure
    from sim.runner import run_scenario

    t0 = time.perf_counter()
    row: dict[str, Any] = {k: None for k in FIXED_COLUMNS if k not in ("seed", "run_dir")}
    try:
        try:
            scn = load_scenario(base, list(overrides))
        except ScenarioError as exc:  # validated before, so the file changed since
            write_failure(make_run_dir("variant", run_dir), exc)
            raise
        _, summary = run_scenario(scn, out=run_dir, plots=plots, resume=mode == "resume",
                                  overwrite=mode == "overwrite")  # writes why on failure
    except Exception as exc:  # noqa: BLE001  (recorded in the row and in the run directory)
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}".replace("\n", " "))
    else:
        row.update(result_fields(summary))
    row["wall_time_s"] = time.perf_counter() - t0
    return row


def result_fields(summary: dict) -> dict:
    """The result fields of a finished run's ``sweep.csv`` row, from its ``summary.json``."""
    tot, fin = summary.get("totals", {}), summary.get("final", {})
    return dict(status="ok", error="", learner=summary.get("learner"),
                n_rounds=summary.get("n_rounds"),
                simulated_time_s=summary.get("simulated_time_s"),
                final_accuracy=fin.get("accuracy"), final_accuracy_lo=fin.get("accuracy_lo"),
                final_accuracy_hi=fin.get("accuracy_hi"), final_loss=fin.get("loss"),
                **{k: tot.get(k) for k in ("bits_up", "bits_down", "energy_j",
                                           "updates_delivered", "failures", "events")})


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_variants(base: str, jobs: Sequence[tuple], backend: str = "process",
                 workers: int | None = None, plots: bool = False,
                 on_done: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Run ``jobs`` — (overrides, run directory) or (overrides, run directory, mode), mode as
    in :func:`run_variant` — on ``backend``; rows in the order of ``jobs``.

    ``on_done(index, row)`` is called as each job finishes (in completion order).
    backend: ``inline`` (this process, one after another), ``process`` (a process pool of
    ``workers``, default ``os.cpu_count()``) or ``ray`` (remote tasks on a local Ray of
    ``workers`` CPUs, or on the cluster at ``RAY_ADDRESS``: :func:`sim.execution.init_ray`).
    Workers and a local Ray die with this process, whatever kills it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"The 'backend' parameter of run_variants must be one of "
                         f"{', '.join(BACKENDS)}. Got {backend!r} instead.")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"The 'workers' parameter of run_variants must be >= 1. Got {workers}.")
    rows: list[dict | None] = [None] * len(jobs)

    def done(i: int, row: dict) -> None:
        rows[i] = row
        if on_done is not None:
            on_done(i, row)

    jobs = [(list(ov), rd, *rest) for ov, rd, *rest in jobs]
    if backend == "inline":
        for i, (ov, rd, *mode) in enumerate(jobs):
            done(i, run_variant(base, ov, rd, plots, *mode))
    elif backend == "process":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from sim.execution import die_with_parent

        # spawn: the parent may hold threads (progress bar, torch) that fork would copy;
        # die_with_parent: no worker outlives this process, whatever kills it
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, max(len(jobs), 1)), mp_context=ctx,
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futs = {pool.submit(run_variant, base, ov, rd, plots, *mode): i
                    for i, (ov, rd, *mode) in enumerate(jobs)}
            for fut in as_completed(futs):
                done(futs[fut], fut.result())
    else:
        _run_ray(base, jobs, workers, plots, done)
    return rows  # type: ignore[return-value]


def _run_ray(base, jobs, workers, plots, done) -> None:
    if not _ray_available():
        raise RuntimeError("The 'ray' backend needs Ray, which is not installed. "
                           "Fix: pip install 'fedwave[ray]' (or use --backend process).")
    import ray

    from sim.execution import init_ray

    stop_ray = init_ray(num_cpus=workers)  # a local Ray dies with this process, however
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_variant)
        refs = {task.remote(base, ov, rd, plots, *mode): i for i, (ov, rd, *mode) in enumerate(jobs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(refs[ref], ray.get(ref))
    finally:
        stop_ray()


# ----------------------------------------------------------------------------- collecting
def sweep_columns(spec: SweepSpec) -> list[str]:
    """Header of ``sweep.csv``: the grid key paths, then :data:`FIXED_COLUMNS`."""
    return [k for k, _ in spec.grid] + list(FIXED_COLUMNS)


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, (list, dict)):
        return yaml_inline(v)
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    return v


def write_sweep_csv(path: str | Path, spec: SweepSpec, variants: Sequence[Variant],
                    rows: Sequence[dict]) -> list[dict]:
    """Write ``sweep.csv`` (atomically); returns the full rows (grid values, seed, results)."""
    from sim.outputs import atomic_write_text

    cols = sweep_columns(spec)
    full: list[dict] = []
    for v, row in zip(variants, rows):
        r = dict(v.params)
        r.update(row)
        r["seed"] = v.seed
        r["run_dir"] = v.name
        full.append(r)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in full:
        w.writerow([_cell(r.get(c)) for c in cols])
    atomic_write_text(Path(path), buf.getvalue())
    return full


def run_sweep(spec: SweepSpec, out: str | Path, backend: str = "process",
              workers: int | None = None, plots: bool = False,
              on_done: Callable[[int, dict], None] | None = None,
              overwrite: bool = False) -> list[dict]:
    """Validate every variant, run them, write ``out/<variant>/`` and ``out/sweep.csv``.

    Raises :class:`ScenarioError` (nothing written) if any variant is invalid, and
    :class:`sim.outputs.RunDirError` (nothing written) if ``out`` is not empty, unless
    ``overwrite`` (it is emptied first). Returns the ``sweep.csv`` rows in variant order; a
    failed variant has ``status == "failed"``. ``plots``: each variant's plots, and the
    sweep's ``latency_accuracy.png`` and ``pareto.png`` (:func:`sim.plots.plot_collection`).
    """
    from sim.outputs import atomic_write_text, claim_out_dir

    if backend == "ray" and not _ray_available():
        raise RuntimeError("The 'ray' backend needs Ray, which is not installed. "
                           "Fix: pip install 'fedwave[ray]' (or use --backend process).")
    checked = validate(spec)
    check_nesting(checked, backend, spec)
    variants = [v for v, _ in checked]
    out = claim_out_dir(out, overwrite=overwrite, what="sweep", flags="--overwrite")
    atomic_write_text(out / "sweep.yaml", spec_yaml(spec))
    jobs = [(v.overrides, str(out / v.name)) for v in variants]
    rows = run_variants(str(spec.base), jobs, backend=backend, workers=workers, plots=plots,
                        on_done=on_done)
    # without --seeds each variant ran with its scenario's own seed: record that one
    variants = [dataclasses.replace(v, seed=scn.seed) for v, scn in checked]
    full = write_sweep_csv(out / "sweep.csv", spec, variants, rows)
    if plots and not all(r["status"] != "ok" for r in full):
        from sim.plots import plot_collection

        plot_collection(out)  # latency_accuracy.png, pareto.png
    return full


def spec_yaml(spec: SweepSpec) -> str:
    """The sweep spec as a sweep file (re-runnable with ``fedwave sweep sweep.yaml``)."""
    data = {"base": str(Path(spec.base).resolve()),
            "set": list(spec.sets),
            "grid": {k: list(v) for k, v in spec.grid},
            "seeds": list(spec.seeds)}
    return yaml.safe_dump(data, sort_keys=False)


def failed(rows: Iterable[dict]) -> list[dict]:
    """The rows of failed variants."""
    return [r for r in rows if r.get("status") != "ok"]

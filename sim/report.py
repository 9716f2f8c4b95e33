"""One self-contained HTML page of a run, comparison or sweep directory (what ``fedwave
report DIR --html`` writes): everything a reader needs, in a file that opens anywhere.

A run's page holds its summary (``summary.json``), the per-round table (``rounds.csv``,
accuracy with its 95 % Wilson interval), the plots of :mod:`sim.plots` and "events at a
glance" (``events.parquet``: events per kind with what each means, transfers per direction,
failure reasons, a timeline, the first and last events). A comparison's or sweep's page
holds its table (``compare.csv`` / ``sweep.csv``), the paired differences
(``compare_pairs.csv``), its two plots and, per variant, the summary and rounds.

The page has no external resource: CSS is inline and figures are ``data:`` URIs (PNG, or
SVG when the run's ``outputs.plot_format`` is svg or both). Every text read from a file is
HTML-escaped (Jinja2 autoescaping). The file is written atomically (a temporary file, then
a rename), so an earlier report is replaced whole or not at all.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["write_report", "run_report_html", "collection_report_html", "event_meanings",
           "ReportError"]

_MAX_ROUNDS = 200  # rows of the rounds table (the first and last halves beyond it)
_N_EVENTS = 10  # first and last events listed


class ReportError(ValueError):
    """A directory the report cannot be made from (the message says which file and the fix)."""


# ----------------------------------------------------------------------------- entry point
def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``directory`` (a finished run, or a comparison or sweep
    directory) to ``out`` (default ``directory/report.html``); return its path."""
    from sim.outputs import atomic_write_text

    directory = Path(directory)
    if not directory.is_dir():
        raise ReportError(f"{directory}: no such directory. Fix: give a run, comparison or "
                          "sweep directory (the --out of fedwave run, compare or sweep).")
    path = Path(out) if out is not None else directory / "report.html"
    if path.is_dir():
        raise ReportError(f"--out {path}: is a directory. Fix: give a file name, e.g. "
                          f"{path / 'report.html'}.")
    if not path.parent.is_dir():
        raise ReportError(f"--out {path}: the folder {path.parent} does not exist. Fix: create "
                          "it first or choose another --out.")
    if _is_collection(directory):
        html = collection_report_html(directory)
    else:
        html = run_report_html(directory)
    atomic_write_text(path, html)
    return path


def _is_collection(directory: Path) -> bool:
    return (directory / "compare.csv").is_file() or (directory / "sweep.csv").is_file()


# ----------------------------------------------------------------------------- formatting
def _num(v: Any, digits: int = 4, scale: float = 1.0) -> str:
    if v is None or isinstance(v, str):
        return "—" if v in (None, "") else v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "—"
    f /= scale
    if f == int(f) and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:.{digits}g}"


def _acc(acc, lo=None, hi=None, learner: str | None = None) -> str:
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "—"
    if learner == "surrogate":
        return f"{acc:.3f} (modelled)"
    if lo is None or hi is None or (isinstance(lo, float) and (math.isnan(lo) or math.isnan(hi))):
        return f"{acc:.3f}"
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def _figure_uri(fig, fmt: str, dpi: int) -> str:
    from sim.plots import figure_bytes

    data = figure_bytes(fig, fmt, dpi)
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def event_meanings() -> dict[str, str]:
    """What each ``event`` value means, from the table in :mod:`sim.trace`'s docstring (the
    one place it is documented)."""
    import sim.trace

    doc = sim.trace.__doc__ or ""
    part = doc[doc.index("``event`` values:"):] if "``event`` values:" in doc else ""
    out: dict[str, str] = {}
    last = None
    for line in part.splitlines():
        if line.startswith("=") or not line.strip() or line.startswith("event "):
            continue
        m = re.match(r"^([a-z_]+)\s+(.*)$", line)
        if m:
            last = m.group(1)
            out[last] = m.group(2).strip()
        elif last is not None and line.startswith(" "):
            out[last] += " " + line.strip()
    return {k: v.replace("``", "") for k, v in out.items()}


# ----------------------------------------------------------------------------- one run
_ROUND_COLS = (("round", "round", 1.0), ("t_start_s", "start (s)", 1.0), ("t_end_s", "end (s)", 1.0),
               ("n_selected", "selected", 1.0), ("n_completed", "completed", 1.0),
               ("n_failed", "failed", 1.0), ("bits_up", "Mbit up", 1e6),
               ("bits_down", "Mbit down", 1e6), ("energy_j", "energy (J)", 1.0))


def _rounds_table(rounds, learner: str) -> dict:
    """Header and rows of the per-round table: the fixed columns, the duration, accuracy
    with its interval, loss, then the algorithm's own columns."""
    fixed = {c for c, _, _ in _ROUND_COLS} | {"accuracy", "accuracy_lo", "accuracy_hi", "loss"}
    extra = [c for c in rounds.columns if c not in fixed]
    head = [h for _, h, _ in _ROUND_COLS] + ["duration (s)", "accuracy"
                                             + (" (modelled)" if learner == "surrogate"
                                                else " [95 % Wilson]"), "loss"] + extra
    recs = rounds.to_dict("records")
    omitted = 0
    if len(recs) > _MAX_ROUNDS:
        omitted = len(recs) - _MAX_ROUNDS
        recs = recs[:_MAX_ROUNDS // 2] + [None] + recs[-(_MAX_ROUNDS // 2):]
    rows = []
    for r in recs:
        if r is None:
            rows.append(None)
            continue
        cells = [_num(r.get(c), 6 if c.startswith("t_") else 4, scale) for c, _, scale in _ROUND_COLS]
        cells.append(_num(r["t_end_s"] - r["t_start_s"]))
        acc = _f(r.get("accuracy"))  # the surrogate's: the header says modelled
        cells.append(_num(acc) if learner == "surrogate" else
                     _acc(acc, _f(r.get("accuracy_lo")), _f(r.get("accuracy_hi"))))
        cells.append(_num(r.get("loss")))
        cells.extend(_num(r.get(c)) for c in extra)
        rows.append(cells)
    return {"head": head, "rows": rows, "omitted": omitted, "n": len(rounds)}


def _f(v):
    """A float, or None for missing/NaN."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _summary_rows(s: dict) -> list[tuple[str, str]]:
    learner = s.get("learner")
    tot = s.get("totals") or {}
    ini, fin = s.get("initial") or {}, s.get("final") or {}
    rows = [("scenario", str(s.get("scenario"))),
            ("learner", f"{learner}" + (" — SURROGATE: accuracy is modelled from the updates "
                                        "delivered, no real training" if learner == "surrogate" else "")),
            ("algorithm / driver", f"{s.get('algorithm')} / {s.get('driver')}"),
            ("seed", _num(s.get("seed"))),
            ("clients / cells", f"{_num(s.get('n_clients'))} / {_num(s.get('n_cells'))}"),
            ("rounds", _num(s.get("n_rounds"))),
            ("simulated time", f"{_num(s.get('simulated_time_s'))} s"),
            ("wall time", f"{_num(s.get('wall_time_s'))} s"),
            ("bits over the air, up / down", f"{_num(tot.get('bits_up'), scale=1e6)} / "
                                             f"{_num(tot.get('bits_down'), scale=1e6)} Mbit"),
            ("bits lost", f"{_num(tot.get('bits_lost'), scale=1e6)} Mbit"),
            ("energy (clients)", f"{_num(tot.get('energy_j'))} J"),
            ("updates delivered / failures", f"{_num(tot.get('updates_delivered'))} / "
                                             f"{_num(tot.get('failures'))}"),
            ("client / server compute", f"{_num(tot.get('client_flops'), scale=1e9)} / "
                                        f"{_num(tot.get('server_flops'), scale=1e9)} GFLOP"),
            ("events", _num(tot.get("events")))]
    if learner == "surrogate":
        rows.append(("accuracy: final", _acc(fin.get("accuracy"), learner=learner)))
    else:
        n = fin.get("n_eval") or ini.get("n_eval")
        rows.append(("accuracy: untrained → final",
                     f"{_acc(ini.get('accuracy'), ini.get('accuracy_lo'), ini.get('accuracy_hi'))} → "
                     f"{_acc(fin.get('accuracy'), fin.get('accuracy_lo'), fin.get('accuracy_hi'))}"
                     + (f" (95 % Wilson, n = {int(n)} prompts)" if n else "")))
        rows.append(("loss: untrained → final", f"{_num(ini.get('loss'))} → {_num(fin.get('loss'))}"))
    if learner == "surrogate":
        rows.append(("loss: final", f"{_num(fin.get('loss'))} (modelled)"))
    v = s.get("versions") or {}
    rows.append(("versions", ", ".join(f"{k} {val}" for k, val in v.items())))
    return rows


def _events_at_a_glance(events, name: str, fmt: str, dpi: int) -> dict:
    """Counts per kind (with meanings, first and last time), transfers per direction,
    failure reasons, a timeline figure, the first and last events."""
    from sim.plots import plot_event_timeline
    from sim.trace import EVENT_KINDS

    meanings = event_meanings()
    kinds = list(dict.fromkeys(events["event"].tolist()))
    order = {k: i for i, k in enumerate(EVENT_KINDS)}
    kinds.sort(key=lambda k: order.get(k, len(order)))
    g = events.groupby("event")["t_s"]
    counts = g.size()
    first, last = g.min(), g.max()
    per_kind = [{"event": k, "count": f"{int(counts[k]):,}", "first": _num(first[k]),
                 "last": _num(last[k]), "meaning": meanings.get(k, "")} for k in kinds]
    sends = events[events["event"].isin(["send_start", "send_end", "send_failed"])]
    directions = []
    for d in ("up", "down"):
        sub = sends[sends["direction"] == d]
        ok = sub[sub["event"] == "send_end"]
        directions.append({"direction": "uplink" if d == "up" else "downlink",
                           "started": f"{int((sub['event'] == 'send_start').sum()):,}",
                           "completed": f"{len(ok):,}",
                           "failed": f"{int((sub['event'] == 'send_failed').sum()):,}",
                           "mbit": _num(ok["bits_delivered"].sum(), scale=1e6),
                           "rate": _num(ok["rate_bps"].median(), scale=1e6)})
    fails = events[events["event"].isin(["send_failed", "client_failed", "round_failed",
                                         "dropout", "stale_discarded"])]
    reasons = [{"event": str(k[0]), "detail": str(k[1]) if k[1] is not None else "—",
                "count": f"{int(n):,}"}
               for k, n in fails.groupby(["event", fails["detail"].fillna("—")]).size().items()]
    cols = [c for c in ("t_s", "event", "round", "client", "cell", "direction", "bits",
                        "snr_db", "rate_bps", "detail") if c in events.columns]

    def rows(df):
        return [[_num(r[c], 7 if c == "t_s" else 4) if c not in ("event", "direction", "detail")
                 else ("—" if r[c] is None or (isinstance(r[c], float) and math.isnan(r[c])) else str(r[c]))
                 for c in cols] for r in df.to_dict("records")]

    return {"per_kind": per_kind, "directions": directions, "reasons": reasons, "cols": cols,
            "first": rows(events.head(_N_EVENTS)), "last": rows(events.tail(_N_EVENTS)),
            "n": f"{len(events):,}",
            "timeline": _figure_uri(plot_event_timeline(events, name), fmt, dpi) if len(events) else None}


_CAPTIONS = {
    "snr_rate": "SINR and rate of every transfer, uplink left and downlink right; a line joins "
                "the samples of one transfer only.",
    "cell_map": "Cells, sector edges, sites, roads and client trajectories (hollow: start, "
                "filled: end), one colour and marker per client group.",
    "rounds": "Clients selected, completed and failed per round; duration against the "
              "deadline; bits over the air.",
    "accuracy": "Accuracy (and loss) against simulated time.",
}


def _run_context(run_dir: Path, with_events: bool = True) -> dict:
    """Everything the template shows of one finished run."""
    from sim.outputs import OutputError, read_rounds, read_summary, run_status
    from sim.plots import _context, _read_events, _resolved, run_figures

    try:
        summary = read_summary(run_dir)
        status, why = run_status(run_dir, summary)
        if status != "ok":
            raise ReportError(why or f"{run_dir}: the run did not finish (status {status!r}).")
        rounds = read_rounds(run_dir)
        events = _read_events(run_dir)
        outputs = _resolved(run_dir).get("outputs") or {}
    except OutputError as exc:
        raise ReportError(str(exc)) from None
    fmt = "svg" if outputs.get("plot_format") in ("svg", "both") else "png"
    dpi = int(outputs.get("plot_dpi") or 150)
    learner = summary.get("learner", "real")
    ctx = _context(run_dir)
    figures = []
    if with_events:
        for stem, fig in run_figures(run_dir, ctx=ctx):
            figures.append({"name": stem, "uri": _figure_uri(fig, fmt, dpi),
                            "caption": _CAPTIONS.get(stem, "")})
    return {"name": summary.get("scenario", run_dir.name), "dir": str(run_dir),
            "learner": learner, "summary": _summary_rows(summary),
            "summary_json": json.dumps(summary, indent=2),
            "rounds": _rounds_table(rounds, learner), "figures": figures,
            "events": _events_at_a_glance(events, ctx["name"], fmt, dpi) if with_events else None,
            "event_counts": events["event"].value_counts().to_dict()}


def run_report_html(run_dir: str | Path) -> str:
    """The HTML report of a finished run directory (see the module docstring)."""
    run = _run_context(Path(run_dir))
    return _template().render(kind="run", title=f"fedwave run: {run['name']}", run=run,
                              version=_version())


# ----------------------------------------------------------------------------- many runs
def collection_report_html(out_dir: str | Path) -> str:
    """The HTML report of a comparison or sweep directory (see the module docstring)."""
    import pandas as pd

    from sim.plots import collection_figures

    out_dir = Path(out_dir)
    kind = "compare" if (out_dir / "compare.csv").is_file() else "sweep"
    table_path = out_dir / f"{kind}.csv"
    try:
        df = pd.read_csv(table_path, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise ReportError(f"{table_path}: cannot be read ({type(exc).__name__}); the file is "
                          f"truncated or damaged. Fix: run the {kind} again into this directory "
                          "(--resume or --overwrite).") from None
    for col in ("status", "run_dir"):
        if col not in df.columns:
            raise ReportError(f"{table_path}: lacks the column {col!r}; not fedwave's {kind}.csv. "
                              f"Fix: run the {kind} again into this directory (--overwrite).")
    spec_text = ""
    spec_file = out_dir / ("compare.json" if kind == "compare" else "sweep.yaml")
    if spec_file.is_file():
        try:
            text = spec_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        if kind == "compare":
            try:
                text = json.dumps(json.loads(text).get("spec", {}), indent=2)
            except (ValueError, AttributeError):
                text = ""
        spec_text = text
    surrogate = set(df.loc[df["status"] == "ok", "learner"]) == {"surrogate"} \
        if "learner" in df.columns else False
    figures = []
    if (df["status"] == "ok").any():
        for stem, fig in collection_figures(out_dir):
            figures.append({"name": stem, "uri": _figure_uri(fig, "png", 150),
                            "caption": "Accuracy against simulated time, per variant group."
                            if stem == "latency_accuracy" else
                            "Final accuracy against simulated time and bits; dashed: the Pareto front."})
    table = {"head": list(df.columns),
             "rows": [[_num(v) if not isinstance(v, str) else v for v in r] for r in
                      df.itertuples(index=False)],
             "failed": [r["status"] != "ok" for r in df.to_dict("records")]}
    pairs = None
    pp = out_dir / "compare_pairs.csv"
    if pp.is_file():
        try:
            pdf = pd.read_csv(pp, keep_default_na=False, na_values=[""])
            pairs = {"head": list(pdf.columns),
                     "rows": [[_num(v) if not isinstance(v, str) else v for v in r]
                              for r in pdf.itertuples(index=False)]}
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
            raise ReportError(f"{pp}: cannot be read ({type(exc).__name__}); the file is truncated "
                              "or damaged. Fix: run the comparison again (--resume).") from None
    variants = []
    for r in df.to_dict("records"):
        d = out_dir / str(r["run_dir"])
        if r["status"] != "ok":
            variants.append({"name": str(r["run_dir"]), "failed": str(r.get("error") or r["status"])})
            continue
        v = _run_context(d, with_events=False)
        v.update(name=str(r["run_dir"]), failed=None)
        variants.append(v)
    return _template().render(kind="collection", what=kind, title=f"fedwave {kind}: {out_dir.name}",
                              dir=str(out_dir), table=table, pairs=pairs, figures=figures,
                              spec_text=spec_text, surrogate=surrogate, variants=variants,
                              version=_version())


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fedwave")
    except Exception:  # noqa: BLE001  (running from a checkout)
        return "unknown"


# ----------------------------------------------------------------------------- template
def _template():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_TEMPLATE)


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="fedwave {{ version }}">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1em 2em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
.surrogate { background: #fff4d6; border-left: 4px solid #e0a800; padding: .5em 1em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .55em; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { text-align: left; position: static; }
tr.failed td { background: #fde8e8; }
tr.gap td { text-align: center; color: #888; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
.scroll { max-height: 32em; max-width: 100%; overflow: auto; display: inline-block; }
</style>
</head>
<body>
{% macro grid(head, rows, failed=None, id=None) %}
<div class="scroll"><table{% if id %} id="{{ id }}"{% endif %}>
<thead><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in rows %}
{% if r is none %}<tr class="gap"><td colspan="{{ head|length }}">…</td></tr>
{% else %}<tr{% if failed and failed[loop.index0] %} class="failed"{% endif %}>{% for c in r %}<td class="num">{{ c }}</td>{% endfor %}</tr>
{% endif %}
{% endfor %}
</tbody></table></div>
{% endmacro %}
{% macro run_body(run, level) %}
{% set top = level == 2 %}
<h{{ level }}{% if top %} id="summary"{% endif %}>Summary</h{{ level }}>
<table class="kv"{% if top %} id="summary-table"{% endif %}>
{% for k, v in run.summary %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>
{% endfor %}
</table>
<details><summary>summary.json</summary><pre>{{ run.summary_json }}</pre></details>
<h{{ level }}{% if top %} id="rounds"{% endif %}>Rounds</h{{ level }}>
<p>{{ run.rounds.n }} round{{ "s" if run.rounds.n != 1 }} (rounds.csv){% if run.rounds.omitted %};
the middle {{ run.rounds.omitted }} are left out here{% endif %}.</p>
{{ grid(run.rounds.head, run.rounds.rows, id="rounds-table" if top else none) }}
{% endmacro %}
<h1>{{ title }}</h1>
{% if kind == "run" %}
<p class="sub">Run directory <code>{{ run.dir }}</code> · report by fedwave {{ version }}</p>
{% if run.learner == "surrogate" %}
<p class="surrogate"><strong>SURROGATE learner.</strong> Nothing was trained: accuracy and loss
come from a fitted curve of the updates that arrived. The network side (rates, times, bits,
energy) is simulated as for a real learner.</p>
{% endif %}
{{ run_body(run, 2) }}
<h2 id="plots">Plots</h2>
{% for f in run.figures %}
<figure id="fig-{{ f.name }}"><img src="{{ f.uri }}" alt="{{ f.name }} plot"><figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}
<h2 id="events">Events at a glance</h2>
<p>{{ run.events.n }} events in events.parquet.</p>
<table id="event-counts">
<thead><tr><th>event</th><th>count</th><th>first (s)</th><th>last (s)</th><th>meaning</th></tr></thead>
<tbody>
{% for e in run.events.per_kind %}<tr><td><code>{{ e.event }}</code></td><td class="num">{{ e.count }}</td><td class="num">{{ e.first }}</td><td class="num">{{ e.last }}</td><td>{{ e.meaning }}</td></tr>
{% endfor %}
</tbody></table>
<h3>Transfers per direction</h3>
<table id="directions">
<thead><tr><th>direction</th><th>started</th><th>completed</th><th>failed</th><th>Mbit delivered (completed)</th><th>median mean rate (Mbit/s)</th></tr></thead>
<tbody>
{% for d in run.events.directions %}<tr><td>{{ d.direction }}</td><td class="num">{{ d.started }}</td><td class="num">{{ d.completed }}</td><td class="num">{{ d.failed }}</td><td class="num">{{ d.mbit }}</td><td class="num">{{ d.rate }}</td></tr>
{% endfor %}
</tbody></table>
{% if run.events.reasons %}
<h3>Failures and why</h3>
<table id="failures"><thead><tr><th>event</th><th>detail</th><th>count</th></tr></thead><tbody>
{% for r in run.events.reasons %}<tr><td><code>{{ r.event }}</code></td><td>{{ r.detail }}</td><td class="num">{{ r.count }}</td></tr>
{% endfor %}
</tbody></table>
{% else %}
<p>No transfer, client or round failed.</p>
{% endif %}
{% if run.events.timeline %}
<figure id="fig-timeline"><img src="{{ run.events.timeline }}" alt="event timeline"><figcaption>Every event kind over simulated time.</figcaption></figure>
{% endif %}
<h3>First and last {{ run.events.first|length }} events</h3>
{{ grid(run.events.cols, run.events.first, id="first-events") }}
{{ grid(run.events.cols, run.events.last, id="last-events") }}
{% else %}
<p class="sub">{{ "Comparison" if what == "compare" else "Sweep" }} directory <code>{{ dir }}</code> · report by fedwave {{ version }}</p>
{% if surrogate %}
<p class="surrogate"><strong>SURROGATE learner.</strong> Accuracy and loss are modelled, not measured.</p>
{% endif %}
{% if spec_text %}<details><summary>{{ "compare.json: spec" if what == "compare" else "sweep.yaml" }}</summary><pre>{{ spec_text }}</pre></details>{% endif %}
<h2 id="variants">Variants</h2>
<p>{{ table.rows|length }} variants ({{ what }}.csv); failed ones are shaded.</p>
{{ grid(table.head, table.rows, table.failed, id="variants-table") }}
{% if pairs %}
<h2 id="pairs">Paired differences</h2>
<p>Final accuracy, A − B, on the same test prompts (compare_pairs.csv).</p>
{{ grid(pairs.head, pairs.rows, id="pairs-table") }}
{% endif %}
<h2 id="plots">Plots</h2>
{% for f in figures %}
<figure id="fig-{{ f.name }}"><img src="{{ f.uri }}" alt="{{ f.name }} plot"><figcaption>{{ f.caption }}</figcaption></figure>
{% else %}
<p>No variant finished: nothing to draw.</p>
{% endfor %}
<h2 id="runs">Each variant</h2>
{% for v in variants %}
<details class="variant"><summary>{{ v.name }}{% if v.failed %} — failed{% endif %}</summary>
{% if v.failed %}<p>{{ v.failed }}</p>{% else %}
{{ run_body(v, 3) }}
<p>Events: {% for k, n in v.event_counts.items() %}<code>{{ k }}</code> {{ n }}{{ ", " if not loop.last }}{% endfor %}.</p>
{% endif %}
</details>
{% endfor %}
{% endif %}
</body>
</html>
"""

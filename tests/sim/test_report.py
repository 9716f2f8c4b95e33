"""Plots a reader can use and the HTML report (``fedwave report DIR --html``): transfers
never joined across gaps, the client sample stated, cells and sectors outlined, the deadline
drawn, no untrained model for the surrogate, PNG/SVG as the scenario says; one
self-contained, escaped HTML page, written whole or not at all, that a real browser opens
with every figure decoded and nothing fetched."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.plots import (cell_polygons, client_sample, run_figures, save_trajectories,
                       transfer_segments)
from sim.report import ReportError, event_meanings, write_report
from sim.runner import run_scenario
from sim.scenario import ScenarioError, load_scenario
from sim.trace import EVENT_KINDS

ROOT = Path(__file__).resolve().parents[2]
SCN = ROOT / "scenarios" / "surrogate_quickstart.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    run_scenario(SCN, ["fl.rounds=3"], out=out, plots=False)
    return out


def _figure(run_dir: Path, name: str):
    figs = dict(run_figures(run_dir))
    import matplotlib.pyplot as plt

    for k, f in figs.items():
        if k != name:
            plt.close(f)
    return figs[name]


# ----------------------------------------------------------------------------- formats
def test_plots_are_150_dpi_png_and_svg_when_the_scenario_asks(tmp_path):
    from PIL import Image

    out = tmp_path / "both"
    run_scenario(SCN, ["fl.rounds=2", "outputs.plot_format=both"], out=out, plots=True)
    for stem in ("snr_rate", "cell_map", "rounds", "accuracy"):
        with Image.open(out / "plots" / f"{stem}.png") as im:
            assert im.info["dpi"] == pytest.approx((150, 150), abs=0.1)
        assert (out / "plots" / f"{stem}.svg").read_bytes().lstrip().startswith(b"<?xml")
    summary = json.loads((out / "summary.json").read_text())
    assert "plots/cell_map.svg" in summary["plots"] and "plots/cell_map.png" in summary["plots"]
    r = runner.invoke(app, ["plot", str(out), "--format", "svg"])
    assert r.exit_code == 0, r.output
    printed = r.output.replace("\n", "")
    assert "plots/cell_map.svg" in printed and "cell_map.png" not in printed


@pytest.mark.parametrize("key, value, match", [
    ("outputs.plot_format", "jpg", r"outputs\.plot_format: Input should be 'png', 'svg' or 'both'; got 'jpg'"),
    ("outputs.plot_dpi", "10", r"outputs\.plot_dpi: .*greater than or equal to 50; got 10"),
    ("outputs.plot_size", "3", r"outputs\.plot_size: no key 'plot_size' under outputs\. Fix: use one of: plot_dpi, plot_format"),
])
def test_a_bad_outputs_key_is_named(key, value, match):
    with pytest.raises(ScenarioError, match=match):
        load_scenario(SCN, [f"{key}={value}"])


def test_the_outputs_section_does_not_stop_a_resume(tmp_path):
    out = tmp_path / "r"
    run_scenario(SCN, ["fl.rounds=3"], out=out, plots=False, stop_after_rounds=1)
    _, summary = run_scenario(SCN, ["fl.rounds=3", "outputs.plot_format=svg"], out=out,
                              plots=False, resume=True)
    assert summary["status"] == "ok" and summary["n_rounds"] == 3


# ----------------------------------------------------------------------------- snr_rate
def test_transfer_segments_break_between_transfers():
    d = pd.DataFrame({"t_s": [1.0, 2.0, 10.0, 11.0, 20.0, 20.5],
                      "event": ["send_start", "send_end", "send_start", "send_failed",
                                "send_start", "send_end"],
                      "snr_db": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                      "rate_bps": [1e6, 2e6, 3e6, 4e6, 5e6, 6e6]})
    t, snr, rate = transfer_segments(d)
    assert np.isnan(t).tolist() == [False, False, True, False, False, True, False, False]
    assert snr[~np.isnan(snr)].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert rate[np.isnan(rate)].size == 2


def _runs(y: np.ndarray) -> list[np.ndarray]:
    """The NaN-separated pieces of a line's data."""
    out, cur = [], []
    for v in y:
        if np.isnan(v):
            if cur:
                out.append(np.asarray(cur))
            cur = []
        else:
            cur.append(v)
    return out + ([np.asarray(cur)] if cur else [])


def test_snr_rate_joins_the_samples_of_one_transfer_only(run):
    events = pd.read_parquet(run / "events.parquet")
    n_transfers = {d: int(((events["event"] == "send_start") & (events["direction"] == d)).sum())
                   for d in ("up", "down")}
    fig = _figure(run, "snr_rate")
    (a_up, a_down), _ = fig.axes[0:2], fig.axes[2:4]
    assert a_up.get_title().startswith("uplink") and a_down.get_title().startswith("downlink")
    for ax, d in ((a_up, "up"), (a_down, "down")):
        pieces = [p for ln in ax.get_lines() if ln.get_linestyle() == "-"
                  for p in _runs(np.asarray(ln.get_xdata(), float))]
        assert len(pieces) == n_transfers[d]  # one piece per transfer, none across a gap
        assert all(len(p) <= 2 for p in pieces)  # a start and an end
    assert "all 10 clients" in fig._suptitle.get_text()
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "client 0" in labels and any("transfer start" in x for x in labels)


def test_a_sample_of_clients_is_stated_in_the_title():
    from sim.plots import _fig_snr_rate

    rows = []
    for c in range(30):
        for ev, t in (("send_start", c + 0.0), ("send_end", c + 0.5)):
            rows.append({"t_s": t, "event": ev, "client": float(c), "direction": "up",
                         "snr_db": 10.0, "rate_bps": 1e6})
    ctx = {"name": "n", "learner": "real", "n_clients": 30}
    fig = _fig_snr_rate(pd.DataFrame(rows), ctx)
    assert "showing 10 of 30 clients" in fig._suptitle.get_text()
    assert client_sample(range(30)).tolist() == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert client_sample([5, 2, 2]).tolist() == [2, 5]


# ----------------------------------------------------------------------------- cell map
def test_cells_of_a_hex_grid_are_its_hexagons_and_explicit_sites_split_at_midpoints():
    from channel.geometry import hex_grid

    lay = hex_grid(1, 500.0)
    polys = cell_polygons(lay.site_xy_m, lay.bounds_m, lay.cell_radius_m)
    assert len(polys) == 7
    for p, c in zip(polys, lay.site_xy_m):
        assert len(p) == 6
        assert np.allclose(np.hypot(*(p - c).T), 500.0 / math.sqrt(3.0))
    two = cell_polygons([[-100.0, 0.0], [100.0, 0.0]], (-300, 300, -40, 40))
    assert sorted(two[0][:, 0].tolist()) == [-300, -300, 0, 0]
    assert sorted(two[1][:, 0].tolist()) == [0, 0, 300, 300]


def test_cell_map_draws_sectors_roads_and_groups(tmp_path):
    from channel.geometry import hex_grid
    from sim.plots import _fig_cell_map

    lay = hex_grid(1, 500.0, n_sectors=3)
    t = np.linspace(0, 10, 5)
    xy = np.zeros((5, 4, 2))
    xy[:, :, 0] = np.linspace(-300, 300, 5)[:, None]
    save_trajectories(tmp_path, {"t_s": t, "clients": np.arange(4), "xy_m": xy, "layout": lay,
                                 "groups": np.array(["walkers", "walkers", "cars", "cars"]),
                                 "n_clients": 40,
                                 "roads": [("cars", (-600.0, 0.0), (600.0, 0.0))]})
    ctx = {"name": "hex", "group_mobility": {"walkers": "random_waypoint",
                                             "cars": "constant_velocity"}}
    fig = _fig_cell_map(tmp_path, ctx)
    ax = fig.axes[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 7 * 3  # three sector edges per site
    for ln in dashed:  # each from its site to its hexagon's edge, which is >= the apothem away
        x, y = ln.get_xdata(), ln.get_ydata()
        assert 500 / 2 - 1e-6 <= math.hypot(x[1] - x[0], y[1] - y[0]) <= 500 / math.sqrt(3) + 1e-6
    labels = [tx.get_text() for tx in ax.get_legend().get_texts()]
    assert "walkers (random_waypoint): 2 shown" in labels
    assert "cars (constant_velocity): 2 shown" in labels
    assert "road (cars)" in labels and "sector edge (3 sectors per site)" in labels
    assert "showing 4 of 40 clients" in ax.get_title()
    markers = {ln.get_marker() for ln in ax.get_lines() if ln.get_linestyle() in ("None", "none", "")}
    assert {"o", "s"} <= markers  # the two groups differ by marker, not colour only


# ----------------------------------------------------------------------------- rounds, accuracy
def test_rounds_plot_draws_the_deadline_and_the_client_counts(run):
    fig = _figure(run, "rounds")
    a0, a1, _ = fig.axes
    labels0 = [t.get_text() for t in a0.get_legend().get_texts()]
    assert labels0[0] == "selected" and labels0[1].startswith("completed")
    (deadline,) = [ln for ln in a1.get_lines() if ln.get_label().startswith("deadline")]
    assert deadline.get_ydata()[0] == 20.0 and deadline.get_label() == "deadline (20 s)"


def test_surrogate_accuracy_has_no_untrained_model(run):
    fig = _figure(run, "accuracy")
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    rounds = pd.read_csv(run / "rounds.csv")
    assert list(line.get_xdata()) == rounds["t_end_s"].tolist()  # no point at t = 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("untrained" in x for x in labels)
    assert "SURROGATE" in fig._suptitle.get_text()


# ----------------------------------------------------------------------------- HTML
class _Page(HTMLParser):
    """Tags, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def _external(page: _Page) -> list[str]:
    """Every reference that would be fetched: src/href that is not a data: URI or an anchor."""
    refs = [a.get(k) for tag, a in page.tags for k in ("src", "href") if a.get(k)]
    return [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]


def test_the_run_report_holds_summary_rounds_plots_and_events(run):
    path = write_report(run)
    assert path == run / "report.html"
    html = path.read_text(encoding="utf-8")
    page = _parse(html)
    assert _external(page) == [] and not any(t in ("link", "script") for t, _ in page.tags)
    imgs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(imgs) == 5 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert 'id="summary-table"' in html and "SURROGATE learner." in html
    rounds_rows = html.split('id="rounds-table"')[1].split("</table>")[0].count("<tr>")
    assert rounds_rows == 1 + 3  # the header and three rounds
    counts = pd.read_parquet(run / "events.parquet")["event"].value_counts()
    table = html.split('id="event-counts"')[1].split("</table>")[0]
    for kind, n in counts.items():
        assert f"<code>{kind}</code></td><td class=\"num\">{n:,}</td>" in table
    assert "a radio transfer starts" in table  # what it means, from sim/trace.py
    assert not (run / "plots").exists()  # the report draws in memory, writes nothing else
    assert (run / "trajectories.npz").is_file()  # the cell map's data, though the run drew no plots


def test_every_event_kind_has_a_meaning():
    assert set(event_meanings()) == set(EVENT_KINDS)


def test_text_from_files_is_escaped(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    s = json.loads((copy / "summary.json").read_text())
    s["scenario"] = "<script>alert(1)</script>"
    (copy / "summary.json").write_text(json.dumps(s))
    html = write_report(copy).read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_failed_report_leaves_the_earlier_one_whole(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = write_report(copy).read_bytes()
    (copy / "rounds.csv").write_bytes((copy / "rounds.csv").read_bytes()[:5])
    with pytest.raises(ReportError, match=r"rounds\.csv.*truncated.*Fix"):
        write_report(copy)
    assert (copy / "report.html").read_bytes() == before
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_report_cli_html_and_its_errors(run, tmp_path):
    target = tmp_path / "page.html"
    r = runner.invoke(app, ["report", str(run), "--out", str(target)])
    assert r.exit_code == 0, r.output
    assert str(target) in r.output.replace("\n", "") and target.stat().st_size > 10_000
    r = runner.invoke(app, ["report", str(run), "--html", "--out", str(tmp_path / "no" / "x.html")])
    assert r.exit_code == 1 and "does not exist" in r.output and "Fix" in r.output
    r = runner.invoke(app, ["report", str(tmp_path / "missing"), "--html"])
    assert r.exit_code == 1 and "no such directory" in r.output
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "report.html").unlink(missing_ok=True)
    s = json.loads((unfinished / "summary.json").read_text())
    s["status"] = "interrupted"
    (unfinished / "summary.json").write_text(json.dumps(s))
    r = runner.invoke(app, ["report", str(unfinished), "--html"])
    assert r.exit_code == 1 and "interrupted" in r.output and not (unfinished / "report.html").exists()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweeps") / "sweep"
    r = runner.invoke(app, ["sweep", str(SCN), "--grid", "fl.clients_per_round=2,4", "--set",
                            "fl.rounds=2", "--out", str(out), "--backend", "inline", "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_the_sweep_report_holds_its_table_plots_and_variants(sweep):
    r = runner.invoke(app, ["report", str(sweep), "--html"])
    assert r.exit_code == 0, r.output
    html = (sweep / "report.html").read_text(encoding="utf-8")
    page = _parse(html)
    assert _external(page) == []
    assert [a["id"] for t, a in page.tags if t == "figure"] == ["fig-latency_accuracy", "fig-pareto"]
    table = html.split('id="variants-table"')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + 2
    assert html.count('<details class="variant">') == 2
    r = runner.invoke(app, ["report", str(sweep)])  # text mode: say how to get the page
    assert r.exit_code == 2 and "--html" in r.output


# ----------------------------------------------------------------------------- a real browser
def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; installed with apt-get when missing and this process may (root,
    or passwordless sudo); else the test is skipped, saying why."""
    path = _find_chromium()
    if path is not None:
        return path
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    sudo = not root and shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0
    if not shutil.which("apt-get") or not (root or sudo):
        pytest.skip("Chromium is not installed and cannot be installed here (needs apt-get as "
                    "root or with passwordless sudo). Fix: apt-get install chromium.")
    pre = [] if root else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    why = ""
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            res = subprocess.run(pre + cmd, capture_output=True, text=True, timeout=900, env=env)
        except subprocess.TimeoutExpired:
            why = f"{' '.join(cmd)} timed out"
            break
        why = (res.stdout + res.stderr).strip().splitlines()[-1:] or [""]
        why = why[0]
        if _find_chromium() is not None:
            return _find_chromium()
    pytest.skip(f"Chromium could not be installed with apt-get ({why}). Fix: apt-get install chromium.")


_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const fetched = performance.getEntriesByType('resource').map(e => e.name)
                    .filter(n => !n.startsWith('data:'));
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-decoded', String(ok));
  document.body.setAttribute('data-fetched', JSON.stringify(fetched));
});
</script>"""


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--headless", "--disable-gpu", "--no-sandbox",
                           "--no-first-run", "--disable-extensions",
                           "--proxy-server=127.0.0.1:9",  # any network fetch would fail
                           "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=180)


def test_a_browser_opens_the_report_with_every_figure_decoded(run, chromium, tmp_path):
    """The page as Chromium sees it: the summary, the round rows and events there, every
    <img> decoded (naturalWidth > 0) and nothing fetched. A copy of the page gets a probe
    script (the report itself has none) that writes what it found into the DOM."""
    html = write_report(run, tmp_path / "report.html").read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    res = _chromium(chromium, "--dump-dom", probe.as_uri())
    dom = res.stdout
    assert res.returncode == 0 and "<body" in dom, res.stderr[-2000:]
    assert 'data-images="5"' in dom and 'data-decoded="5"' in dom, dom[:300]
    assert 'data-fetched="[]"' in dom
    assert 'id="summary-table"' in dom and "surrogate_quickstart" in dom
    assert dom.split('id="rounds-table"')[1].split("</table>")[0].count("<tr>") == 4
    assert 'id="event-counts"' in dom and "<code>send_start</code>" in dom
    shot = tmp_path / "shot.png"
    res = _chromium(chromium, "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", (tmp_path / "report.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(shot)  # (H, W, 4) floats
    assert img.shape[:2] == (1600, 1200) and img[..., :3].std() > 0.05  # not a blank page

"""Redraw the README's pictures: ``docs/img/report.png`` (Chromium's screenshot of the HTML
report of scenarios/surrogate_quickstart.yaml) and ``docs/img/cell_map.png`` (the cell map
of scenarios/hex7_uma_mixed.yaml: 3-sector hexagonal cells, pedestrians and vehicles).

    PYTHONPATH=. python docs/make_images.py      # needs chromium (apt-get install chromium)

Both are surrogate runs (seconds, no model). The PNGs are reduced to a 256-colour palette so
the repository stays small.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def _palette_png(src: Path, dst: Path, max_kb: int = 300) -> None:
    from PIL import Image

    with Image.open(src) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(dst, optimize=True)
    kb = dst.stat().st_size / 1024
    if kb > max_kb:
        sys.exit(f"{dst}: {kb:.0f} KB, over {max_kb} KB. Fix: a smaller --window-size.")
    print(f"{dst.relative_to(ROOT)}: {kb:.0f} KB")


def main() -> None:
    from sim.plots import figure_bytes, run_figures
    from sim.report import write_report
    from sim.runner import run_scenario

    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    if chromium is None:
        sys.exit("No Chromium here. Fix: apt-get install chromium.")
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir, _ = run_scenario(ROOT / "scenarios" / "surrogate_quickstart.yaml",
                                  out=tmp / "quick", plots=False)
        page = write_report(run_dir)
        shot = tmp / "shot.png"
        subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox",
                        "--hide-scrollbars", "--window-size=1100,1500",
                        "--force-device-scale-factor=1", f"--screenshot={shot}", page.as_uri()],
                       check=True, capture_output=True)
        _palette_png(shot, IMG / "report.png")
        hex_dir, _ = run_scenario(ROOT / "scenarios" / "hex7_uma_mixed.yaml", ["fl.rounds=2"],
                                  out=tmp / "hex7", plots=False)
        figs = dict(run_figures(hex_dir))
        raw = tmp / "cell_map.png"
        raw.write_bytes(figure_bytes(figs.pop("cell_map"), "png", 110))
        for fig in figs.values():
            figure_bytes(fig)  # closes it
        _palette_png(raw, IMG / "cell_map.png")


if __name__ == "__main__":
    main()

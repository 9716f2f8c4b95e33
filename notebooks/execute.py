"""Execute the teaching notebooks and save them WITH their outputs (what students open).

    python notebooks/execute.py                      # all notebooks/*.ipynb
    python notebooks/execute.py notebooks/01_radio_link.ipynb

Each notebook runs in a fresh kernel whose working directory is ``notebooks/`` and which
imports this checkout's packages (``PYTHONPATH`` is set to the repository root). Volatile
metadata (execution timestamps, the kernel's version strings) is dropped so a re-run only
changes the diff where an output changed. The wall time of each notebook is printed.
``tests/test_notebooks.py`` checks that the saved notebooks hold their figures.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def strip_volatile(nb) -> None:
    """Remove what changes on every execution without changing an output."""
    nb.metadata.pop("widgets", None)
    lang = nb.metadata.get("language_info")
    if lang is not None:
        nb.metadata["language_info"] = {"name": lang.get("name", "python")}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def execute(path: Path, timeout: int | None = None):
    """Execute ``path`` and return (the executed notebook, wall seconds); ``timeout``: per
    cell, seconds (None: none — the real runs of notebook 03 take minutes on a loaded machine)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = env_path  # the kernel inherits it: it imports this checkout
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb, time.perf_counter() - t0


def main(argv: list[str]) -> None:
    import nbformat

    paths = [Path(a) for a in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        nb, wall = execute(path)
        strip_volatile(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {wall:.0f} s, saved ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])

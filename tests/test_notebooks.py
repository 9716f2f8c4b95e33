"""The teaching notebooks: shipped with their outputs, and executed end to end.

Conventions the notebooks follow (checked here):

- the first cell is markdown and states the **learning objectives**;
- every code cell that draws a figure carries the cell tag ``figure`` and must leave at least
  one ``image/png`` output (figures render inline: no ``matplotlib.use("Agg")``), and no
  output holds a stray ``<matplotlib....>`` repr;
- every exercise is a markdown cell tagged ``exercise`` titled "Exercise N"; its solution is
  a cell tagged ``solution`` whose source starts with "# Solution to exercise N", placed
  after every exercise (the "Solutions" section at the end) with its source hidden
  (``metadata.jupyter.source_hidden``).

The fast tests read the saved notebooks (a notebook saved without its outputs fails them:
re-save with ``python notebooks/execute.py``); the slow test executes each one in a fresh
kernel and checks the same of the new outputs.
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _read(path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def structure_problems(nb) -> list[str]:
    """What the notebook's cells (not their outputs) get wrong."""
    problems = []
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or "learning objectives" not in cells[0].source.lower():
        problems.append("the first cell is not markdown stating the learning objectives")
    code = [c for c in cells if c.cell_type == "code"]
    for i, c in enumerate(code):
        if "matplotlib.use(" in c.source:
            problems.append(f"code cell {i} calls matplotlib.use(...): figures would not render inline")
    if not any("%matplotlib inline" in c.source for c in code):
        problems.append("no cell runs %matplotlib inline")
    for i, c in enumerate(cells):
        if c.cell_type == "code" and "plt.show()" in c.source and "figure" not in _tags(c):
            problems.append(f"cell {i} shows a figure but is not tagged 'figure'")
    if not any("figure" in _tags(c) for c in code):
        problems.append("no cell tagged 'figure'")
    ex_idx = [i for i, c in enumerate(cells) if "exercise" in _tags(c)]
    sol_idx = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    if not ex_idx:
        problems.append("no exercise (a markdown cell tagged 'exercise')")
    exercises, solutions = set(), set()
    for i in ex_idx:
        m = re.search(r"Exercise (\d+)", cells[i].source)
        if cells[i].cell_type != "markdown" or not m:
            problems.append(f"exercise cell {i} is not a markdown cell titled 'Exercise N'")
        else:
            exercises.add(int(m.group(1)))
    for i in sol_idx:
        c = cells[i]
        if ex_idx and i < max(ex_idx):
            problems.append(f"solution cell {i} comes before exercise cell {max(ex_idx)}: solutions "
                            "belong in the Solutions section at the end")
        if not c.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
            problems.append(f"solution cell {i} is not hidden (metadata.jupyter.source_hidden)")
        m = re.match(r"# Solution to exercise (\d+)", c.source)
        if c.cell_type == "code" and m:
            solutions.add(int(m.group(1)))
    if exercises != solutions:
        problems.append(f"exercises {sorted(exercises)} but hidden solutions {sorted(solutions)}")
    return problems


def _texts(output) -> list[str]:
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    data = output.get("data", {})
    return [v if isinstance(v, str) else "".join(v) for k, v in data.items() if k.startswith("text/")]


def output_problems(nb) -> list[str]:
    """What the notebook's outputs get wrong: errors, figure cells without an image, stray
    matplotlib reprs."""
    problems = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code":
            continue
        outputs = c.get("outputs", [])
        for o in outputs:
            if o.get("output_type") == "error":
                problems.append(f"cell {i} raised {o.get('ename')}: {o.get('evalue')}")
            if any("<matplotlib." in t for t in _texts(o)):
                problems.append(f"cell {i} prints a matplotlib object's repr (end the cell with plt.show())")
        if "figure" in _tags(c) and not any("image/png" in o.get("data", {}) for o in outputs):
            problems.append(f"figure cell {i} has no image/png output")
    return problems


def test_there_are_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_radio_link.ipynb", "02_federated_round.ipynb",
                                           "03_latency_accuracy.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_structure(path):
    assert structure_problems(_read(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_saved_notebook_holds_its_figures(path):
    """Students open the saved notebook: it must hold its outputs, figures included."""
    nb = _read(path)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip()
               and not c.source.strip().startswith("# Your answer")), \
        f"{path.name} was saved without its outputs. Fix: python notebooks/execute.py notebooks/{path.name}"
    assert output_problems(nb) == []
    assert path.stat().st_size < 1_500_000, f"{path.name}: over 1.5 MB (lower the figures' dpi)"


def test_the_checks_catch_what_the_issue_named():
    """A notebook like the old ones (Agg backend, no outputs, the answer under the exercise)."""
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    fig = new_code_cell('import matplotlib\nmatplotlib.use("Agg")\nplt.plot([1, 2]); plt.show()',
                        metadata={"tags": ["figure"]})
    fig.outputs = [new_output("execute_result", {"text/plain": "<matplotlib.legend.Legend at 0x7f>"})]
    nb = new_notebook(cells=[
        new_markdown_cell("# A notebook"), fig,
        new_markdown_cell("### Exercise 1", metadata={"tags": ["exercise"]}),
        new_code_cell("# Solution to exercise 1\nprint(42)", metadata={"tags": ["solution"]}),
        new_markdown_cell("### Exercise 2", metadata={"tags": ["exercise"]}),
    ])
    s = " | ".join(structure_problems(nb))
    for what in ("learning objectives", "matplotlib.use", "%matplotlib inline", "comes before exercise",
                 "is not hidden", "exercises [1, 2] but hidden solutions [1]"):
        assert what in s, what
    o = " | ".join(output_problems(nb))
    assert "matplotlib object's repr" in o and "has no image/png output" in o


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Executed in a fresh kernel (importing this checkout), from an empty working directory."""
    nbclient = pytest.importorskip("nbclient")
    nb = _read(path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert output_problems(nb) == []

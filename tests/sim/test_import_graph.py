"""No import cycles among the modules of sim/, counting imports inside functions too.

A function-level import hides a cycle from Python (it runs late) but not from a reader:
the two modules still cannot be understood apart. The graph is read from the source (ast),
so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SIM = Path(__file__).resolve().parents[2] / "sim"


def import_graph(package_dir: Path) -> nx.DiGraph:
    """Edges ``a -> b`` (attribute ``line``) where module ``a`` of the package imports
    module ``b`` of it anywhere (module level, functions, ``TYPE_CHECKING`` blocks);
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else
    the package itself (its ``__init__``)."""
    pkg = package_dir.name
    modules = {(pkg if p.stem == "__init__" else f"{pkg}.{p.stem}"): p
               for p in sorted(package_dir.glob("*.py"))}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x / from .x import y
                    base = pkg + (f".{node.module}" if node.module else "")
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules:  # import sim.x.y -> sim.x
                    t = t.rpartition(".")[0]
                if t and t != name and not g.has_edge(name, t):
                    g.add_edge(name, t, line=node.lineno)
    return g


def cycles(g: nx.DiGraph) -> list[str]:
    """One readable line per cycle: ``a (line) -> b (line) -> a``."""
    out = []
    rotated = []
    for cyc in nx.simple_cycles(g):
        i = cyc.index(min(cyc))
        rotated.append(cyc[i:] + cyc[:i])  # starting from its first module by name
    for cyc in sorted(rotated, key=lambda c: (len(c), c)):
        hops = [f"{a} (line {g.edges[a, b]['line']})"
                for a, b in zip(cyc, cyc[1:] + cyc[:1])]
        out.append(" -> ".join(hops + [cyc[0]]))
    return out


def test_sim_has_no_import_cycles():
    found = cycles(import_graph(SIM))
    assert not found, ("Import cycles among sim/ modules (function-level imports count): "
                       + "; ".join(found) + ". Fix: move the shared piece to the module it "
                       "belongs to, so that the imports go one way.")


def test_the_checker_sees_function_level_and_package_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from pkg.b import g\n    return g()\n")
    (pkg / "b.py").write_text("from pkg import a\n")
    (pkg / "c.py").write_text("def h():\n    from pkg import f\n")
    (pkg / "d.py").write_text("from pkg.a import f\n")  # one way only: no cycle
    g = import_graph(pkg)
    assert g.edges["pkg.a", "pkg.b"]["line"] == 4
    assert g.has_edge("pkg.c", "pkg") and not g.has_edge("pkg.a", "pkg.d")
    assert cycles(g) == ["pkg.a (line 4) -> pkg.b (line 1) -> pkg.a"]

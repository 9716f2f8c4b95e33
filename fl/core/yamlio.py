"""How fedwave reads every YAML file (torch-free; fl/ and sim/ both use it).

:func:`safe_load` is ``yaml.SafeLoader`` (no object construction, so no code runs) with YAML
1.2 numbers (``1e1`` is 10.0, where PyYAML's YAML 1.1 rule would give the string ``"1e1"``)
and bounded alias expansion (an "alias bomb" is refused before anything is built).
``sim.scenario.load_yaml`` is this function raising ``ScenarioError``; fl/ reads its own
files (a surrogate calibration, :mod:`fl.algorithms.surrogate.calibration`) with it directly.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["YamlError", "safe_load", "MAX_YAML_NODES"]

#: The most values a YAML document may hold once its aliases are expanded (an "alias
#: bomb" — nested anchors and aliases — expands to billions from a few lines).
MAX_YAML_NODES = 1_000_000

_FLOAT_TAG = "tag:yaml.org,2002:float"


class YamlError(ValueError):
    """A file that is not valid (or not safely loadable) YAML; the message names the source
    (and the line, for syntax errors) and the fix."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats: ``1e1``, ``8.0e6``, ``1E-3`` and ``2.5e+3``
    are numbers (PyYAML's YAML 1.1 rule needs a dot and a signed exponent, so ``1e1`` would
    be a string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


class _RecursiveAlias(ValueError):
    pass


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Values in the document once aliases are expanded (counted on the composed node
    graph, where an alias is the anchored node itself; shared nodes are counted once per
    use, each node visited once). Stops early above ``limit``; raises _RecursiveAlias."""
    size: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: yaml.Node) -> int:
        key = id(node)
        if key in size:
            return size[key]
        if key in active:
            raise _RecursiveAlias("an alias refers to a node that contains it (a recursive alias)")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += visit(child)
                if n > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += visit(k) + visit(v)
                if n > limit:
                    break
        active.discard(key)
        size[key] = n
        return n

    return visit(root)


def safe_load(text: str, source: str = "<string>") -> Any:
    """Parse YAML the way fedwave reads every file (scenarios, sweep specs, ``--set``,
    calibrations).

    Safe (no object construction), YAML 1.2 numbers (``1e1`` is 10.0), and bounded: a
    document whose aliases expand to more than :data:`MAX_YAML_NODES` values, or that refers
    to itself, is refused before anything is built. Raises :class:`YamlError` naming
    ``source`` (and the line, for syntax errors).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise YamlError(
                f"{source}: the YAML expands to more than {MAX_YAML_NODES:,} values through its "
                "anchors and aliases (&name / *name), e.g. an alias bomb. Fix: write the values "
                "out, or use fewer nested aliases.")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlError(f"{source}: not valid YAML ({where}{problem}). Fix: check "
                        "indentation and quoting near that line.") from None
    except _RecursiveAlias as exc:
        raise YamlError(f"{source}: {exc}. Fix: remove the recursive alias.") from None
    except RecursionError:
        raise YamlError(f"{source}: the YAML is nested too deeply. Fix: flatten it.") from None
    finally:
        loader.dispose()

"""State files that cannot execute code: a checkpoint is data, never a program.

A Python object graph (the simulation's state, an algorithm's adapters and optimiser states)
is written as one zip archive holding

- ``manifest.json``: ``{"format": "fedwave-state", "version": 1, "kind": ..., "head": {...},
  "members": {name: sha256}}`` — what the file is, a small header readable without the
  rest (e.g. the scenario it belongs to), and a checksum of every other member;
- ``graph.json``: the object graph as JSON (node types below);
- ``arrays/<n>.npy``: numpy arrays, read with ``allow_pickle=False``;
- ``tensors.safetensors``: torch tensors (only when the graph holds any).

Reading never calls a function named by the file. The only objects it creates are
primitives, containers, numpy arrays/scalars/generators, torch tensors/generators and
optimisers, networkx graphs, and instances of fedwave's own classes (modules under
``channel``, ``sim`` and ``fl``), which are created with ``cls.__new__`` and get their
attributes set — their ``__init__`` does not run. Any other type is refused when written,
naming where it sits in the graph, so an unsupported attribute is found by the tests
rather than by a user's resume.

Objects a fresh build recreates (frozen models, the SimPy environment) are not written:
the writer's ``external(obj) -> key | None`` names them and the reader's ``resolve(key)``
gives them back (keys are JSON values: strings, numbers, lists).

JSON node types (every non-primitive node is a one-key object, plus ``"#"``, the node's
memo id, on nodes that may be shared):

=========  =================================================================
``L``/``T`` list / tuple of nodes
``S``       dict with str keys (``{key: node}``); ``D``: any keys, ``[[k, v], ...]``
``OD``      OrderedDict pairs; ``DD``: defaultdict (``f``: its factory name)
``ST``/``FS`` set / frozenset; ``Q``: deque (``m``: maxlen)
``F``       a float that JSON cannot hold: ``"nan"``, ``"inf"``, ``"-inf"``
``B``       bytes (hex)
``R``       a back-reference to the node with that memo id
``A``       numpy array: member name; ``V``: a view of another array
``N``       numpy scalar: ``[dtype, value]``
``G``       numpy Generator / BitGenerator; ``SS``: SeedSequence
``X``       external object: its key
``O``       instance of an allowed class: ``c`` (module:qualname), ``s`` (state node)
``E``       enum member; ``C``: a class; ``M``: a bound method (``o``, ``n``)
``NX``      networkx graph; ``sl``: slice
``TT``      torch tensor (``t``: member name, ``g``: requires_grad, ``p``: Parameter)
``TG``      torch Generator; ``TD``: torch dtype; ``TV``: torch device
``OPT``     torch optimiser (class, param-group keys, state_dict)
=========  =================================================================
"""

from __future__ import annotations

import collections
import enum
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["StateFileError", "encode", "decode", "write_state_file", "read_state_file",
           "read_state_head", "atomic_write", "atomic_write_bytes", "FORMAT", "VERSION"]

FORMAT = "fedwave-state"
VERSION = 1
_ALLOWED_PACKAGES = ("channel", "sim", "fl")
_ALLOWED_FOREIGN = {  # classes outside fedwave restored from their attributes
    "networkx.classes.graph:Graph", "networkx.classes.digraph:DiGraph",
    "networkx.classes.multigraph:MultiGraph", "networkx.classes.multidigraph:MultiDiGraph",
}
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
_FACTORIES = {"list": list, "dict": dict, "set": set, "int": int, "float": float, "None": None}

# Classes are stored by name (``module:qualname``). Where fedwave moved a module or a class,
# files written before the move name the old place; they are read as naming the new one.
_MOVED_MODULES = {
    **{f"fl.{m}": f"fl.core.{m}" for m in ("actions", "aggregation", "algorithm", "metrics", "payload",
                                            "registry", "runner", "seeding", "statefile", "yamlio")},
    **{f"fl.{m}": f"fl.lm.{m}" for m in ("data", "device", "flops", "models", "multilora", "offline",
                                          "partition", "prefix", "specs", "train")},
    "fl.lm_algorithm": "fl.lm.algorithm",
    **{f"fl.{a}": f"fl.algorithms.{a}.algorithm" for a in ("fedavg_lora", "fedsoda", "kd_topk", "split_lora",
                                                            "surrogate")},
    "fl.distill": "fl.algorithms.kd_topk.distill", "fl.topk_payload": "fl.algorithms.kd_topk.topk_payload",
    "fl.split": "fl.algorithms.split_lora.split", "fl.nf4": "fl.algorithms.fedsoda.nf4",
    "fl.sgp": "fl.algorithms.fedsoda.sgp", "fl.calibration": "fl.algorithms.surrogate.calibration",
}
_MOVED_CLASSES = {
    "fl.specs:AlgorithmConfig": "fl.core.config:AlgorithmConfig",
    **{f"fl.fedavg_lora:{c}": f"fl.lm.lora_update:{c}" for c in ("LoraUpdate", "TrainedUpload", "LocalTrainJob")},
    # the kernel split (issue #19): the entities and the round account left sim.simulation
    **{f"sim.simulation:{c}": f"sim.entities:{c}" for c in ("Cell", "Client", "Server")},
    "sim.simulation:_Acct": "sim.interpreter:RoundAccount",
}


def _current_name(name: str) -> str:
    """Where the class a file names (``module:qualname``) lives now (see ``_MOVED_MODULES``)."""
    if name in _MOVED_CLASSES:
        return _MOVED_CLASSES[name]
    module, _, qual = name.partition(":")
    return f"{_MOVED_MODULES.get(module, module)}:{qual}"
_PRIMITIVE = (str, int, bool, type(None))
_MAX_MEMBER_BYTES = 64 << 30  # refuse absurd sizes in a (possibly forged) archive
_MAX_JSON_BYTES = 4 << 30


class StateFileError(ValueError):
    """A state file that cannot be read (missing, truncated, foreign, tampered, or newer)."""


# --------------------------------------------------------------------------- writing
class _Writer:
    def __init__(self, external: Callable[[Any], Any] | None) -> None:
        self.external = external
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps encoded objects alive so ids stay unique
        self.arrays: dict[str, np.ndarray] = {}
        self.tensors: dict[str, Any] = {}

    def _memo(self, obj: Any, node: dict) -> dict:
        n = len(self.memo)
        self.memo[id(obj)] = n
        self.keep.append(obj)
        node["#"] = n
        return node

    def enc(self, obj: Any, path: str) -> Any:
        t = type(obj)
        if t in _PRIMITIVE:
            return obj
        if t is float:
            return obj if math.isfinite(obj) else {"F": repr(obj)}
        ref = self.memo.get(id(obj))
        if ref is not None:
            return {"R": ref}
        if self.external is not None:
            key = self.external(obj)
            if key is not None:
                return self._memo(obj, {"X": _json_key(key, path)})
        if t is list:
            node = self._memo(obj, {"L": None})
            node["L"] = [self.enc(v, f"{path}[{i}]") for i, v in enumerate(obj)]
            return node
        if t is tuple:
            return {"T": [self.enc(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if t is dict:
            node = self._memo(obj, {})
            if all(type(k) is str for k in obj):
                node["S"] = {k: self.enc(v, f"{path}[{k!r}]") for k, v in obj.items()}
            else:
                node["D"] = self._pairs(obj, path)
            return node
        if t is collections.OrderedDict:
            node = self._memo(obj, {"OD": None})
            node["OD"] = self._pairs(obj, path)
            return node
        if t is collections.defaultdict:
            name = next((n for n, f in _FACTORIES.items() if f is obj.default_factory), None)
            if name is None:
                raise TypeError(f"{path}: a defaultdict with factory {obj.default_factory!r} "
                                "cannot be checkpointed (allowed: list, dict, set, int, float).")
            node = self._memo(obj, {"DD": None, "f": name})
            node["DD"] = self._pairs(obj, path)
            return node
        if t is set or t is frozenset:
            items = [self.enc(v, f"{path}{{}}") for v in obj]
            return self._memo(obj, {"ST" if t is set else "FS": items})
        if t is collections.deque:
            node = self._memo(obj, {"Q": None, "m": obj.maxlen})
            node["Q"] = [self.enc(v, f"{path}[{i}]") for i, v in enumerate(obj)]
            return node
        if t is bytes:
            return {"B": obj.hex()}
        if t is slice:
            return {"sl": [self.enc(obj.start, path), self.enc(obj.stop, path),
                           self.enc(obj.step, path)]}
        if t is np.ndarray:
            return self._array(obj, path)
        if isinstance(obj, np.generic):
            return self._scalar(obj, path)
        if t is np.random.Generator:
            node = self._memo(obj, {"G": None})
            node["G"] = self.enc(obj.bit_generator, f"{path}.bit_generator")
            return node
        if isinstance(obj, np.random.BitGenerator) and t.__name__ in _BIT_GENERATORS:
            node = self._memo(obj, {"G": t.__name__, "s": None})
            node["s"] = self.enc(obj.state, f"{path}.state")
            return node
        if t is np.random.SeedSequence:
            return self._memo(obj, {"SS": [self.enc(obj.entropy, path),
                                           self.enc(tuple(obj.spawn_key), path),
                                           int(obj.pool_size), int(obj.n_children_spawned)]})
        if t is types.MethodType:
            owner = obj.__self__
            if not _allowed_class(type(owner)) or not _plain_method(type(owner), obj.__func__.__name__):
                raise TypeError(f"{path}: bound method {obj!r} cannot be checkpointed.")
            return {"M": self.enc(owner, f"{path}.__self__"), "n": obj.__func__.__name__}
        mod = t.__module__.split(".", 1)[0]
        if mod == "torch":
            return self._torch(obj, path)
        if isinstance(obj, type):
            if not _allowed_class(obj):
                raise TypeError(f"{path}: class {obj!r} cannot be checkpointed.")
            return {"C": _class_name(obj)}
        if isinstance(obj, enum.Enum) and _allowed_class(t):
            return {"E": _class_name(t), "n": obj.name}
        if _allowed_class(t) and not isinstance(obj, enum.Enum):
            return self._instance(obj, path)
        raise TypeError(f"{path}: an object of type {t.__module__}.{t.__qualname__} cannot be "
                        "checkpointed (state files hold data and fedwave's own classes only). "
                        "Fix: keep it out of the state (state_dict/load_state_dict), or rebuild it.")

    def _pairs(self, obj: Mapping, path: str) -> list:
        return [[self.enc(k, f"{path}<key>"), self.enc(v, f"{path}[{k!r}]")] for k, v in obj.items()]

    def _instance(self, obj: Any, path: str) -> dict:
        t = type(obj)
        node = self._memo(obj, {"O": _class_name(t), "s": None})
        getstate = getattr(t, "__getstate__", None)
        if getstate is not None and getstate is not object.__getstate__ \
                and not t.__module__.startswith("networkx"):
            state = obj.__getstate__()  # fedwave's own (or pydantic's) __getstate__
            node["gs"] = True
        else:
            state = dict(getattr(obj, "__dict__", {}))
            if t.__module__.startswith("networkx"):  # cached views, rebuilt on demand
                state = {k: v for k, v in state.items() if k.startswith("_") or k == "graph"}
            slots = {}
            for klass in t.__mro__:
                for name in getattr(klass, "__slots__", ()):
                    if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                        slots[name] = getattr(obj, name)
            if slots or not hasattr(obj, "__dict__"):
                state = {"__dict__": state, "__slots__": slots}
                node["slots"] = True
        node["s"] = self.enc(state, path)
        return node

    def _array(self, arr: np.ndarray, path: str) -> dict:
        if arr.dtype.hasobject:
            raise TypeError(f"{path}: a numpy array of Python objects cannot be checkpointed.")
        root = arr.base
        while isinstance(root, np.ndarray) and isinstance(root.base, np.ndarray):
            root = root.base
        if isinstance(root, np.ndarray) and root.base is None and \
                (root.flags.c_contiguous or root.flags.f_contiguous):
            # A view stays a view of its (shared) base: the channel models keep views into
            # buffers they update in place; writing them apart would break that link.
            offset = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
            node = self._memo(arr, {"V": None})
            node["V"] = [self.enc(root, path), offset, list(arr.shape), list(arr.strides),
                         arr.dtype.str, bool(arr.flags.writeable)]
            return node
        name = f"arrays/{len(self.arrays)}.npy"
        self.arrays[name] = arr
        return self._memo(arr, {"A": name, "w": bool(arr.flags.writeable)})

    def _scalar(self, x: np.generic, path: str) -> dict:
        if x.dtype.hasobject or x.dtype.kind in "MmVSU":
            raise TypeError(f"{path}: numpy scalar of dtype {x.dtype} cannot be checkpointed.")
        v = x.item()
        if isinstance(v, complex):
            v = [self.enc(v.real, path), self.enc(v.imag, path)]
        elif isinstance(v, float):
            v = self.enc(v, path)
        return {"N": [x.dtype.str, v]}

    def _torch(self, obj: Any, path: str) -> dict:
        import torch

        if isinstance(obj, torch.Tensor):
            if obj.is_sparse or obj.dtype in (torch.complex64, torch.complex128):
                raise TypeError(f"{path}: a sparse or complex tensor cannot be checkpointed.")
            name = f"t{len(self.tensors)}"
            # own storage: safetensors refuses tensors that share memory
            self.tensors[name] = obj.detach().to("cpu", copy=True).contiguous()
            return self._memo(obj, {"TT": name, "g": bool(obj.requires_grad),
                                    "p": isinstance(obj, torch.nn.Parameter)})
        if isinstance(obj, torch.Generator):
            return self._memo(obj, {"TG": str(obj.device), "s": self.enc(obj.get_state(), path)})
        if isinstance(obj, torch.dtype):
            return {"TD": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {"TV": str(obj)}
        if isinstance(obj, torch.Size):
            return {"T": list(obj)}
        if _is_optimizer(obj):
            groups = [[self.enc(p, f"{path}.param_groups[{i}]") for p in g["params"]]
                      for i, g in enumerate(obj.param_groups)]
            node = self._memo(obj, {"OPT": type(obj).__name__, "p": groups, "s": None, "d": None})
            node["s"] = self.enc(obj.state_dict(), f"{path}.state_dict()")
            node["d"] = self.enc(dict(obj.defaults), f"{path}.defaults")
            return node
        raise TypeError(f"{path}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be "
                        "checkpointed (torch tensors, generators and optimisers can; modules "
                        "must be rebuilt, not written). Fix: keep it out of the state.")


def _is_optimizer(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return (torch is not None and isinstance(obj, torch.optim.Optimizer)
            and type(obj).__module__.startswith("torch.optim."))


def _json_key(key: Any, path: str) -> Any:
    if isinstance(key, tuple):
        return [_json_key(k, path) for k in key]
    if type(key) in (str, int, bool, float) or key is None:
        return key
    raise TypeError(f"{path}: external key {key!r} is not a JSON value.")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed_module(module: str) -> bool:
    return module.split(".", 1)[0] in _ALLOWED_PACKAGES


def _allowed_class(cls: type) -> bool:
    return _allowed_module(cls.__module__) or _class_name(cls) in _ALLOWED_FOREIGN


def _plain_method(cls: type, name: str) -> bool:
    return isinstance(inspect.getattr_static(cls, name, None), types.FunctionType)


def encode(obj: Any, external: Callable[[Any], Any] | None = None) -> dict:
    """``obj`` as ``{"graph": JSON tree, "arrays": {name: ndarray}, "tensors": {name: tensor}}``.

    ``external(obj)`` returns a key (JSON value or tuple) for objects not to be written,
    else None. Raises ``TypeError`` naming the path of anything that cannot be written.
    """
    w = _Writer(external)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        graph = w.enc(obj, "state")
    finally:
        sys.setrecursionlimit(limit)
    return {"graph": graph, "arrays": w.arrays, "tensors": w.tensors}


# --------------------------------------------------------------------------- reading
class _Reader:
    def __init__(self, arrays: Mapping[str, np.ndarray], tensors: Mapping[str, Any],
                 resolve: Callable[[Any], Any] | None) -> None:
        self.arrays = arrays
        self.tensors = tensors
        self.resolve = resolve
        self.memo: dict[int, Any] = {}

    def dec(self, node: Any) -> Any:
        if not isinstance(node, dict):
            if isinstance(node, list):
                raise StateFileError("malformed graph: a bare list")
            return node
        if "R" in node:
            try:
                return self.memo[node["R"]]
            except KeyError:
                raise StateFileError(f"malformed graph: reference to unknown node {node['R']!r}") from None
        mid = node.get("#")
        if "L" in node:
            out: Any = self._put(mid, [])
            out.extend(self.dec(v) for v in node["L"])
            return out
        if "T" in node:
            return tuple(self.dec(v) for v in node["T"])
        if "S" in node:
            out = self._put(mid, {})
            for k, v in node["S"].items():
                out[k] = self.dec(v)
            return out
        if "D" in node or "OD" in node or "DD" in node:
            if "D" in node:
                out, pairs = self._put(mid, {}), node["D"]
            elif "OD" in node:
                out, pairs = self._put(mid, collections.OrderedDict()), node["OD"]
            else:
                if node.get("f") not in _FACTORIES:
                    raise StateFileError(f"malformed graph: defaultdict factory {node.get('f')!r}")
                out, pairs = self._put(mid, collections.defaultdict(_FACTORIES[node["f"]])), node["DD"]
            for k, v in pairs:
                key = self.dec(k)
                out[key] = self.dec(v)
            return out
        if "ST" in node:
            out = self._put(mid, set())
            out.update(self.dec(v) for v in node["ST"])
            return out
        if "FS" in node:
            return self._put(mid, frozenset(self.dec(v) for v in node["FS"]))
        if "Q" in node:
            out = self._put(mid, collections.deque(maxlen=node.get("m")))
            out.extend(self.dec(v) for v in node["Q"])
            return out
        if "F" in node:
            if node["F"] not in ("nan", "inf", "-inf"):
                raise StateFileError(f"malformed graph: float {node['F']!r}")
            return float(node["F"])
        if "B" in node:
            return bytes.fromhex(node["B"])
        if "sl" in node:
            return slice(*(self.dec(v) for v in node["sl"]))
        if "X" in node:
            if self.resolve is None:
                raise StateFileError(f"the file refers to {node['X']!r}, which nothing provides")
            return self._put(mid, self.resolve(_tuple_key(node["X"])))
        if "A" in node:
            try:
                arr = self.arrays[node["A"]]
            except KeyError:
                raise StateFileError(f"malformed graph: missing array {node['A']!r}") from None
            arr.flags.writeable = bool(node.get("w", True))
            return self._put(mid, arr)
        if "V" in node:
            root, offset, shape, strides, dtype, writeable = node["V"]
            base = self.dec(root)
            view = np.ndarray(tuple(shape), np.dtype(dtype), buffer=base, offset=int(offset),
                              strides=tuple(strides))
            view.flags.writeable = bool(writeable) and base.flags.writeable
            return self._put(mid, view)
        if "N" in node:
            dtype, v = node["N"]
            dt = np.dtype(dtype)
            if dt.hasobject or dt.kind in "MmVSU":
                raise StateFileError(f"malformed graph: numpy scalar dtype {dtype!r}")
            v = complex(self.dec(v[0]), self.dec(v[1])) if isinstance(v, list) else self.dec(v)
            return np.array(v, dtype=dt)[()]
        if "G" in node:
            if isinstance(node["G"], str):
                if node["G"] not in _BIT_GENERATORS:
                    raise StateFileError(f"malformed graph: bit generator {node['G']!r}")
                bg = getattr(np.random, node["G"])()
                self._put(mid, bg)
                bg.state = self.dec(node["s"])
                return bg
            return self._put(mid, np.random.Generator(self.dec(node["G"])))
        if "SS" in node:
            entropy, spawn_key, pool_size, n_children = node["SS"]
            return self._put(mid, np.random.SeedSequence(
                self.dec(entropy), spawn_key=tuple(self.dec(spawn_key)), pool_size=int(pool_size),
                n_children_spawned=int(n_children)))
        if "O" in node:
            cls = _resolve_class(node["O"])
            obj = cls.__new__(cls)
            self._put(mid, obj)
            state = self.dec(node["s"])
            renames = getattr(cls, "_state_renames", None)  # attributes renamed since written
            if renames and isinstance(state, dict):
                inner = state["__dict__"] if node.get("slots") else state
                if isinstance(inner, dict):
                    for old, new in renames.items():
                        if old in inner and new not in inner:
                            inner[new] = inner.pop(old)
            if node.get("slots"):
                if state["__dict__"]:
                    _set_attrs(obj, state["__dict__"])
                for k, v in state["__slots__"].items():
                    object.__setattr__(obj, k, v)
            elif node.get("gs") and hasattr(cls, "__setstate__"):
                obj.__setstate__(state)
            else:
                _set_attrs(obj, state)
            return obj
        if "E" in node:
            cls = _resolve_class(node["E"])
            if not issubclass(cls, enum.Enum):
                raise StateFileError(f"malformed graph: {node['E']!r} is not an enum")
            return cls[node["n"]]
        if "C" in node:
            return _resolve_class(node["C"])
        if "M" in node:
            owner = self.dec(node["M"])
            name = node["n"]
            if not isinstance(name, str) or not _plain_method(type(owner), name):
                raise StateFileError(f"malformed graph: method {name!r}")
            return getattr(owner, name)
        if "TT" in node or "TG" in node or "TD" in node or "TV" in node or "OPT" in node:
            return self._torch(node, mid)
        raise StateFileError(f"malformed graph: unknown node {sorted(node)!r}")

    def _put(self, mid: Any, obj: Any) -> Any:
        if mid is not None:
            self.memo[mid] = obj
        return obj

    def _torch(self, node: dict, mid: Any) -> Any:
        import torch

        if "TT" in node:
            try:
                t = self.tensors[node["TT"]]
            except KeyError:
                raise StateFileError(f"malformed graph: missing tensor {node['TT']!r}") from None
            if node.get("p"):
                t = torch.nn.Parameter(t, requires_grad=bool(node.get("g")))
            elif node.get("g"):
                t.requires_grad_(True)
            return self._put(mid, t)
        if "TG" in node:
            g = torch.Generator(device=node["TG"])
            self._put(mid, g)
            g.set_state(self.dec(node["s"]))
            return g
        if "TD" in node:
            dt = getattr(torch, str(node["TD"]), None)
            if not isinstance(dt, torch.dtype):
                raise StateFileError(f"malformed graph: torch dtype {node['TD']!r}")
            return dt
        if "TV" in node:
            return torch.device(str(node["TV"]))
        cls = getattr(torch.optim, str(node["OPT"]), None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise StateFileError(f"malformed graph: optimiser {node['OPT']!r}")
        groups = [[self.dec(p) for p in ps] for ps in node["p"]]
        defaults = self.dec(node["d"])
        accepted = inspect.signature(cls.__init__).parameters
        opt = cls([{"params": ps} for ps in groups],
                  **{k: v for k, v in defaults.items() if k in accepted})
        opt.defaults = defaults
        self._put(mid, opt)
        opt.load_state_dict(self.dec(node["s"]))
        return opt


def _set_attrs(obj: Any, state: Mapping[str, Any]) -> None:
    if not isinstance(state, dict):
        raise StateFileError(f"malformed graph: the state of a {type(obj).__name__} is not a mapping")
    obj.__dict__.update(state)


def _tuple_key(key: Any) -> Any:
    return tuple(_tuple_key(k) for k in key) if isinstance(key, list) else key


def _resolve_class(name: Any) -> type:
    """The class ``module:qualname`` — only fedwave's own or the few allowed foreign ones."""
    if not isinstance(name, str) or ":" not in name:
        raise StateFileError(f"malformed graph: class name {name!r}")
    name = _current_name(name)
    module, _, qual = name.partition(":")
    if not (_allowed_module(module) or name in _ALLOWED_FOREIGN):
        raise StateFileError(f"the file names class {name!r}, which state files may not create "
                             "(only fedwave's own classes)")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise StateFileError(f"the file names class {name!r}, which this fedwave does not have "
                             "(written by another version?)") from None
    if not isinstance(obj, type) or obj.__module__ != module:
        raise StateFileError(f"the file names {name!r}, which is not a class of that module")
    return obj


def decode(doc: Mapping[str, Any], resolve: Callable[[Any], Any] | None = None) -> Any:
    """The object graph of :func:`encode`'s output (arrays and tensors given alongside).

    ``resolve(key)`` returns the live object for an external key (tuples for JSON lists).
    Raises :class:`StateFileError` on a malformed graph.
    """
    r = _Reader(doc.get("arrays", {}), doc.get("tensors", {}), resolve)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        return r.dec(doc["graph"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, StateFileError):
            raise
        raise StateFileError(f"malformed graph ({type(exc).__name__}: {exc})") from None
    finally:
        sys.setrecursionlimit(limit)


# --------------------------------------------------------------------------- the file
def write_state_file(path: str | Path, kind: str, head: Mapping[str, Any], obj: Any,
                     external: Callable[[Any], Any] | None = None) -> None:
    """Write ``obj`` (and the JSON ``head``) to ``path`` atomically (temp file + rename).

    The file follows the user's umask; a failure leaves any previous file untouched.
    """
    doc = encode(obj, external)
    path = Path(path)
    members: dict[str, bytes] = {"graph.json": json.dumps(doc["graph"], separators=(",", ":"),
                                                          allow_nan=False).encode()}
    for name, arr in doc["arrays"].items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        members[name] = buf.getvalue()
    if doc["tensors"]:
        from safetensors.torch import save

        members["tensors.safetensors"] = save(doc["tensors"])
    manifest = {"format": FORMAT, "version": VERSION, "kind": kind, "head": dict(head),
                "members": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()}}

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest, indent=1, allow_nan=False))
            for name, data in members.items():
                zf.writestr(name, data)

    atomic_write(path, write)


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(binary file)`` on a temp file beside ``path``, then rename it into place:
    readers see the old file or the new one, never half of one, and a failure (or a kill)
    leaves the old file untouched. The file's mode follows the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FIX = "Fix: run again from the start (without --resume) into a new --out directory."


def _open(path: Path, kind: str) -> tuple[zipfile.ZipFile, dict]:
    if not path.is_file():
        raise StateFileError(f"{path}: no such file. {_FIX}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise StateFileError(f"{path}: not a fedwave state file (not a zip archive, or truncated: "
                             f"{exc}). {_FIX}") from None
    try:
        info = zf.getinfo("manifest.json")
        if info.file_size > 1 << 24:
            raise StateFileError(f"{path}: its manifest is implausibly large. {_FIX}")
        manifest = json.loads(zf.read(info))
    except KeyError:
        zf.close()
        raise StateFileError(f"{path}: not a fedwave state file (no manifest.json). {_FIX}") from None
    except StateFileError:
        zf.close()
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        zf.close()
        raise StateFileError(f"{path}: its manifest cannot be read ({exc}). {_FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        zf.close()
        raise StateFileError(f"{path}: not a fedwave state file (format "
                             f"{manifest.get('format') if isinstance(manifest, dict) else None!r}). {_FIX}")
    if manifest.get("version") != VERSION:
        zf.close()
        raise StateFileError(f"{path}: state file version {manifest.get('version')!r}; this fedwave "
                             f"reads version {VERSION}. Fix: resume with the fedwave version that "
                             "wrote it, or run again from the start.")
    if manifest.get("kind") != kind:
        zf.close()
        raise StateFileError(f"{path}: a {manifest.get('kind')!r} state file, not a {kind!r}. {_FIX}")
    return zf, manifest


def read_state_head(path: str | Path, kind: str) -> dict:
    """The header of a state file (checked: format, version, kind), without its body."""
    path = Path(path)
    zf, manifest = _open(path, kind)
    zf.close()
    head = manifest.get("head")
    if not isinstance(head, dict):
        raise StateFileError(f"{path}: its manifest has no header. {_FIX}")
    return head


def read_state_file(path: str | Path, kind: str,
                    resolve: Callable[[Any], Any] | None = None) -> tuple[dict, Any]:
    """``(head, obj)`` of a file :func:`write_state_file` wrote, every member's checksum
    checked; :class:`StateFileError` names the file and the fix for anything else."""
    path = Path(path)
    zf, manifest = _open(path, kind)
    with zf:
        members = manifest.get("members")
        if not isinstance(members, dict) or "graph.json" not in members:
            raise StateFileError(f"{path}: its manifest lists no graph. {_FIX}")
        data: dict[str, bytes] = {}
        for name, digest in members.items():
            try:
                info = zf.getinfo(name)
                if info.file_size > _MAX_MEMBER_BYTES:
                    raise StateFileError(f"{path}: member {name} is implausibly large. {_FIX}")
                blob = zf.read(info)
            except KeyError:
                raise StateFileError(f"{path}: member {name} is missing (truncated file?). {_FIX}") from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise StateFileError(f"{path}: member {name} cannot be read ({exc}); the file is "
                                     f"truncated or damaged. {_FIX}") from None
            if hashlib.sha256(blob).hexdigest() != digest:
                raise StateFileError(f"{path}: member {name} fails its checksum (damaged or "
                                     f"edited). {_FIX}")
            data[name] = blob
    if len(data["graph.json"]) > _MAX_JSON_BYTES:
        raise StateFileError(f"{path}: its graph is implausibly large. {_FIX}")
    try:
        graph = json.loads(data.pop("graph.json"))
        arrays = {n: np.load(io.BytesIO(b), allow_pickle=False)
                  for n, b in data.items() if n.startswith("arrays/")}
        tensors: dict[str, Any] = {}
        if "tensors.safetensors" in data:
            from safetensors.torch import load

            tensors = load(data["tensors.safetensors"])
    except (ValueError, OSError) as exc:
        raise StateFileError(f"{path}: cannot be decoded ({exc}). {_FIX}") from None
    try:
        obj = decode({"graph": graph, "arrays": arrays, "tensors": tensors}, resolve)
    except StateFileError as exc:
        raise StateFileError(f"{path}: {exc}. {_FIX}") from None
    return manifest["head"], obj

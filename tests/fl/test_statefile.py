"""fl.core.statefile: a state file round-trips fedwave's object graphs and never runs code."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import math
import os
import pickle
import zipfile

import networkx as nx
import numpy as np
import pytest

from fl.core.statefile import (StateFileError, decode, encode, read_state_file, read_state_head,
                          write_state_file)
from fl.lm.specs import LoraSpec
from sim.trace import Tracer


@dataclasses.dataclass(frozen=True)
class Frozen:  # defined in tests.*: not a class a state file may create
    x: int


def test_round_trip_of_fedwave_state_keeps_values_types_sharing_and_cycles(tmp_path):
    import torch

    buf = np.arange(12.0).reshape(3, 4)
    shared = [1, 2]
    tracer = Tracer()
    tracer.record(0.5, "round_start", round=0)
    g = nx.Graph()
    g.add_edge("site0", "edge", capacity_bps=1e9)
    g.add_edge("cloud", "edge", capacity_bps=2e9)
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    gen = np.random.default_rng(5)
    gen.random(3)
    state = {
        "floats": [0.1, -0.0, math.inf, -math.inf, 1e300], "nan": math.nan,
        "ints": (1, True, None, 2 ** 70), "bytes": b"\x00\xff", "slice": slice(1, None, 2),
        "buf": buf, "row": buf[1], "col": buf[:, 2],  # views of one buffer
        "shared": shared, "again": shared, "set": {1, 2}, "frozen": frozenset({"a"}),
        "tuple_keys": {(0, "up"): 1.5}, "od": collections.OrderedDict(b=1, a=2),
        "dd": collections.defaultdict(list, {"k": [1]}), "deque": collections.deque([1], maxlen=3),
        "np_scalars": [np.float32(1.25), np.int64(-3), np.uint64(2 ** 63), np.bool_(True),
                       np.complex128(1 + 2j)],
        "gen": gen, "seedseq": np.random.SeedSequence(7, spawn_key=(3,)),
        "tracer": tracer, "record": tracer.record, "lora": LoraSpec(rank=4),
        "graph": g, "tensor": torch.arange(6, dtype=torch.bfloat16), "param": p, "opt": opt,
        "tgen": torch.Generator().manual_seed(3), "dtype": torch.float16,
    }
    state["self"] = state  # a cycle
    path = tmp_path / "s.zip"
    write_state_file(path, "test", {"n": 1}, state)
    head, got = read_state_file(path, "test")
    assert head == {"n": 1} and read_state_head(path, "test") == {"n": 1}
    assert got["self"] is got
    assert got["floats"][:4] == [0.1, -0.0, math.inf, -math.inf] and math.copysign(1, got["floats"][1]) < 0
    assert math.isnan(got["nan"]) and got["ints"] == (1, True, None, 2 ** 70)
    assert type(got["ints"][1]) is bool and got["bytes"] == b"\x00\xff" and got["slice"] == slice(1, None, 2)
    got["buf"][1, 2] = -1.0  # views stay views of the same buffer
    assert got["row"][2] == -1.0 and got["col"][1] == -1.0
    assert got["again"] is got["shared"] and got["set"] == {1, 2} and got["frozen"] == frozenset({"a"})
    assert got["tuple_keys"] == {(0, "up"): 1.5} and list(got["od"]) == ["b", "a"]
    assert got["dd"]["new"] == [] and got["deque"].maxlen == 3
    for a, b in zip(got["np_scalars"], state["np_scalars"]):
        assert type(a) is type(b) and a == b
    assert np.array_equal(got["gen"].random(4), gen.random(4))
    assert got["seedseq"].generate_state(2).tolist() == state["seedseq"].generate_state(2).tolist()
    assert got["tracer"].rows == tracer.rows and got["record"].__self__ is got["tracer"]
    assert got["lora"] == LoraSpec(rank=4)
    assert list(got["graph"].edges(data=True)) == list(g.edges(data=True))
    assert list(got["graph"].adj["edge"]) == list(g.adj["edge"])  # neighbour order too
    assert torch.equal(got["tensor"], state["tensor"]) and got["tensor"].dtype == torch.bfloat16
    assert isinstance(got["param"], torch.nn.Parameter) and torch.equal(got["param"], p)
    assert got["opt"].param_groups[0]["params"][0] is got["param"]  # the optimiser's own param
    st, st0 = got["opt"].state[got["param"]], opt.state[p]
    assert torch.equal(st["exp_avg"], st0["exp_avg"]) and torch.equal(st["exp_avg_sq"], st0["exp_avg_sq"])
    assert torch.equal(torch.rand(3, generator=got["tgen"]), torch.rand(3, generator=state["tgen"]))
    assert got["dtype"] is torch.float16


def test_what_cannot_be_written_is_named_with_its_path():
    with pytest.raises(TypeError, match=r"state\['f'\].*function"):
        encode({"f": lambda: 0})
    with pytest.raises(TypeError, match=r"state\['x'\]\.*.*test_statefile.Frozen|Frozen"):
        encode({"x": Frozen(1)})
    with pytest.raises(TypeError, match="objects"):
        encode({"a": np.array([object()])})


def _forge(path, graph, members=None, manifest=None):
    """A state file with valid checksums around a forged graph."""
    blobs = {"graph.json": json.dumps(graph).encode(), **(members or {})}
    man = {"format": "fedwave-state", "version": 1, "kind": "test", "head": {},
           "members": {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()}}
    man.update(manifest or {})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(man))
        for n, b in blobs.items():
            zf.writestr(n, b)


class _Marker:
    """Pickling this runs code on load: it creates the marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_file_runs_no_code(tmp_path):
    marker = tmp_path / "MARKER"
    pkl = tmp_path / "evil.zip"
    pkl.write_bytes(pickle.dumps({"x": _Marker(marker)}))
    with pytest.raises(StateFileError, match=r"evil\.zip: not a fedwave state file.*Fix"):
        read_state_file(pkl, "test")
    # a forged graph naming a class outside fedwave, a function, or a pickled npy array
    for graph in ({"O": "os:system", "s": {"S": {}}}, {"O": "subprocess:Popen", "s": {"S": {}}},
                  {"C": "builtins:eval"}, {"E": "os:environ", "n": "x"},
                  {"M": {"O": "sim.trace:Tracer", "s": {"S": {}}}, "n": "__class__"}):
        _forge(tmp_path / "f.zip", graph)
        with pytest.raises(StateFileError):
            read_state_file(tmp_path / "f.zip", "test")
    npy = io.BytesIO()
    np.save(npy, np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    _forge(tmp_path / "npy.zip", {"A": "arrays/0.npy"}, {"arrays/0.npy": npy.getvalue()})
    with pytest.raises(StateFileError, match="cannot be decoded"):
        read_state_file(tmp_path / "npy.zip", "test")
    assert not marker.exists()


def test_damaged_foreign_or_newer_files_are_refused_with_the_file_and_fix(tmp_path):
    good = tmp_path / "good.zip"
    write_state_file(good, "test", {}, {"a": np.arange(100.0)})
    data = good.read_bytes()
    cases = {
        "truncated.zip": (data[: len(data) // 2], "not a zip archive, or truncated|truncated"),
        "garbage.zip": (os.urandom(300), "not a fedwave state file"),
        "empty.zip": (b"", "not a fedwave state file"),
    }
    for name, (blob, match) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(StateFileError, match=match) as err:
            read_state_file(tmp_path / name, "test")
        assert name in str(err.value) and "Fix:" in str(err.value)
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(StateFileError, match="no manifest"):
        read_state_file(tmp_path / "foreign.zip", "test")
    tampered = tmp_path / "tampered.zip"  # a member changed, its checksum kept
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            blob = src.read(info)
            dst.writestr(info.filename, blob.replace(b"\x00\x00\x00\x00\x00\x00\xf0?", b"\x00" * 8)
                         if info.filename.endswith(".npy") else blob)
    with pytest.raises(StateFileError, match="fails its checksum"):
        read_state_file(tampered, "test")
    _forge(tmp_path / "newer.zip", {"S": {}}, manifest={"version": 99})
    with pytest.raises(StateFileError, match="version 99"):
        read_state_file(tmp_path / "newer.zip", "test")
    with pytest.raises(StateFileError, match="not a 'other'"):
        read_state_file(good, "other")
    with pytest.raises(StateFileError, match="no such file"):
        read_state_file(tmp_path / "missing.zip", "test")


def test_state_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_state_file(tmp_path / "s.zip", "test", {}, {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "s.zip").stat().st_mode & 0o777 == 0o640


def test_decode_of_encode_without_a_file():
    doc = encode({"k": [1, 2.5, "x"]})
    assert decode(doc) == {"k": [1, 2.5, "x"]}


def test_files_naming_classes_at_their_places_before_the_fl_layout_move_still_load():
    """Classes are stored by name; a file written before fl/ moved into core/, lm/ and
    algorithms/<name>/ names the old modules and still loads (fl.core.statefile._MOVED_*)."""
    import torch

    from fl.algorithms.fedavg_lora.algorithm import BaseModelPayload
    from fl.core.payload import LoraPayload
    from fl.lm.lora_update import LoraUpdate

    state = {"spec": LoraSpec(rank=4), "base": BaseModelPayload(10, "fp16"),
             "update": LoraUpdate({"a": torch.ones(2)}, "adapter", 64, 0.5),
             "payload": LoraPayload.encode({"a": torch.ones(2)}, "fp16", 0)}
    doc = encode(state)
    old = json.dumps(doc["graph"])
    for new, before in (("fl.lm.specs:", "fl.specs:"), ("fl.algorithms.fedavg_lora.algorithm:", "fl.fedavg_lora:"),
                        ("fl.lm.lora_update:LoraUpdate", "fl.fedavg_lora:LoraUpdate"),
                        ("fl.core.payload:", "fl.payload:")):
        assert new in old
        old = old.replace(new, before)
    back = decode({**doc, "graph": json.loads(old)})
    assert back["spec"] == state["spec"] and back["base"] == state["base"]
    assert type(back["update"]) is LoraUpdate and back["update"].state["a"].equal(torch.ones(2))
    assert type(back["payload"]) is LoraPayload and back["payload"].bits == state["payload"].bits

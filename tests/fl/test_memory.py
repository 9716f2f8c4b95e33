"""One shared frozen base: N clients cost one base + (at most) N adapters, never N bases."""

from __future__ import annotations

import torch

from fl.core.algorithm import AlgorithmContext, get_algorithm
from fl.lm.models import lora_state


def tensor_bytes(obj, seen_objs=None, seen_storage=None) -> int:
    """Bytes of every distinct tensor storage reachable from ``obj`` (modules, containers,
    fedwave objects), each storage counted once."""
    seen_objs = set() if seen_objs is None else seen_objs
    seen_storage = set() if seen_storage is None else seen_storage
    if id(obj) in seen_objs or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return 0
    seen_objs.add(id(obj))
    if isinstance(obj, torch.Tensor):
        s = obj.untyped_storage()
        if s.data_ptr() in seen_storage:
            return 0
        seen_storage.add(s.data_ptr())
        return s.nbytes()
    if isinstance(obj, torch.nn.Module):
        return sum(tensor_bytes(t, seen_objs, seen_storage)
                   for t in [*obj.parameters(), *obj.buffers()])
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen_objs, seen_storage) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(v, seen_objs, seen_storage) for v in obj)
    if type(obj).__module__.split(".")[0] in ("fl", "sim") and hasattr(obj, "__dict__"):
        return tensor_bytes(vars(obj), seen_objs, seen_storage)
    return 0


def _build(name, n_clients, **options):
    cls = get_algorithm(name)
    return cls(cls.Config(**options), AlgorithmContext(n_clients=n_clients, seed=0))


DATA = {"max_per_class": 40, "n_test": 6, "max_len": 96}


def test_fedavg_clients_share_one_base_and_keep_nothing_per_client():
    sizes = {n: tensor_bytes(_build("fedavg_lora", n, model={"kind": "tiny"}, data=DATA, lora={"layers": {"top": 1}}))
             for n in (1, 8, 32)}
    assert sizes[1] == sizes[8] == sizes[32]  # flat: clients receive the global adapter each round


def test_kd_clients_cost_one_base_plus_their_adapters():
    opts = dict(model={"kind": "tiny"}, client_keep_layers=[0], lora={"rank": 4, "alpha": 8},
                data={**DATA, "n_public": 6}, partition={"kind": "iid"}, public_batch_size=2)
    per = {}
    for n in (2, 8):
        algo = _build("kd_topk", n, **opts)
        empty = tensor_bytes(algo)
        for c in range(n):  # what each client keeps once its upload completed: its adapter
            algo.client_states[c] = lora_state(algo.client_model)
        adapter = tensor_bytes(algo.client_states[0])
        per[n] = (empty, tensor_bytes(algo) - empty, adapter)
    (e2, d2, a), (e8, d8, _) = per[2], per[8]
    assert e2 == e8  # the frozen bases: the same whatever the number of clients
    assert d2 == 2 * a and d8 == 8 * a  # + one adapter per client
    assert a < e2 / 50


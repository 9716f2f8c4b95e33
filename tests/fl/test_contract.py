"""Every registered algorithm has the same shape and keeps the contract of fl.core.actions;
the contract modules stay torch-free.

The behavioural checks run on tiny models over every name in the registry, so a new
algorithm is covered by registering it (add its fast options to ``TINY`` if its defaults
are slow; a language-model learner starts from ``LM_TINY``).
"""

import copy
import math
import pickle
import subprocess
import sys
from dataclasses import fields, is_dataclass

import numpy as np
import pytest

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, ServerCompute
from fl.core.algorithm import (ALGORITHMS, Algorithm, AlgorithmConfig, AlgorithmContext, algorithm_config,
                               get_algorithm, iter_registry)
from fl.core.runner import drive
from fl.lm.specs import LMConfig

#: Fast options of every language-model learner: a 2-layer random Llama, a few dozen prompts.
LM_TINY = dict(model={"kind": "tiny", "n_layers": 2, "hidden": 32, "intermediate": 64},
               lora={"rank": 2, "alpha": 4}, partition={"kind": "iid"},
               data={"max_per_class": 12, "n_test": 4, "max_len": 80, "n_public": 8},
               local_steps=1, batch_size=2, lr=1e-2)
#: Per-algorithm additions (what their own tests use to stay fast).
TINY = {
    "kd_topk": dict(client_keep_layers=[0], public_batch_size=2, server_steps=1, k=4, k_down=4, k_min=2),
    "split_lora": dict(cut_layer=1),
    "fedsoda": dict(model={"kind": "tiny", "n_layers": 4, "hidden": 32, "intermediate": 64}, sgp_keep=3,
                    sgp_calibration=4, oda_initial_steps=1, oda_steps=1, oda_batch_size=2, probe_batch_size=2),
}
N_CLIENTS = 3


def _build(name, seed=4):
    cls = get_algorithm(name)
    base = LM_TINY if issubclass(cls.Config, LMConfig) else {}
    return cls(cls.Config(**{**base, **TINY.get(name, {})}), AlgorithmContext(n_clients=N_CLIENTS, seed=seed))


def _to_send(gen):
    """Drive a client round as a host with perfect links would, up to its first ``Send``
    that has work."""
    action, value = next(gen), None
    while not (isinstance(action, Send) and action.work is not None):
        if isinstance(action, Receive):
            value = action.payload
        elif isinstance(action, (Compute, ServerCompute)):
            value = action.work() if action.work else None
        else:
            value = None  # a Send without work
        action = gen.send(value)
    return action


def _equal(a, b) -> bool:
    """Exact equality through dataclasses, containers, tensors and arrays (NaN equals NaN)."""
    import torch

    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b) or
                                                                  torch.isnan(a).all() and torch.isnan(b).all())
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if is_dataclass(a):
        return all(_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return a == b


def _round(algo, rnd, clients=(0, 1)):
    """One synchronous round with perfect links: (every Send's result, aggregation, metrics)."""
    sent, results = [], []
    for client in clients:
        gen = algo.client_round(rnd, client)
        update, _ = drive(_recording(gen, sent))
        results.append(ClientResult(client, update, algo.n_samples(client), base_round=rnd))
    extra, _ = drive(algo.server_round(rnd, results, []))
    return sent, extra, dict(algo.evaluate(rnd))


def _recording(gen, sent):
    """``gen`` with every Send's work result appended to ``sent``."""
    value = None
    try:
        action = gen.send(None)
        while True:
            if isinstance(action, Send) and action.work is not None:
                work = action.work

                def recorded(plan, work=work):
                    out = work(plan)
                    sent.append(out)
                    return out

                action = Send(action.sizer, recorded, action.label, action.job, action.budget_s)
            value = yield action
            action = gen.send(value)
    except StopIteration as stop:
        return stop.value


ALL = ALGORITHMS.names()


@pytest.mark.parametrize("name", ALL)
def test_sizer_bits_equal_the_bits_of_the_payload_the_work_returns(name):
    algo = _build(name)
    for capacity in (math.inf, 2e5):
        send = _to_send(algo.client_round(0, 1))
        plan = send.sizer(capacity)
        out = send.work(plan)
        assert int(out.bits) == int(plan.bits), f"{name}: sizer {plan.bits} bits, payload {out.bits}"


@pytest.mark.parametrize("name", ALL)
def test_a_job_run_on_a_replica_returns_what_the_inline_work_returns(name):
    algo = _build(name)
    send = _to_send(algo.client_round(0, 1))
    if send.job is None:
        pytest.skip(f"{name}'s uploads carry no job (hosts run its work inline)")
    replica = pickle.loads(pickle.dumps(algo.replica()))()  # what a worker builds
    job = pickle.loads(pickle.dumps(send.job))  # what travels to it
    other = _to_send(algo.client_round(0, 2))
    other.job(replica, other.sizer(math.inf))  # the replica ran another client first
    plan = send.sizer(math.inf)
    assert _equal(job(replica, plan), send.work(plan))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trips_and_a_restored_algorithm_continues_identically(name):
    algo = _build(name)
    _round(algo, 0)
    restored = _build(name)
    restored.load_state_dict(copy.deepcopy(algo.state_dict()))
    sent_a, extra_a, metrics_a = _round(algo, 1)
    sent_b, extra_b, metrics_b = _round(restored, 1)
    assert sent_a and _equal(sent_a, sent_b)
    assert _equal(extra_a, extra_b) and _equal(metrics_a, metrics_b)


@pytest.mark.parametrize("name", ALL)
def test_a_failed_send_never_runs_its_work(name, monkeypatch):
    """The host closes the round's generator when an upload fails (after the sizer ran):
    the work must not run then — no training step, no payload — and aggregation takes the
    failure as data."""
    import torch

    algo = _build(name)
    ran = []
    gen = algo.client_round(0, 1)
    send = _to_send(gen)
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: ran.append("backward"))
    monkeypatch.setattr(torch.autograd, "backward", lambda *a, **k: ran.append("backward"))
    send.sizer(math.inf)  # the transfer starts ...
    gen.close()  # ... and fails: no training step may have run
    assert ran == []
    monkeypatch.undo()
    update, _ = drive(algo.client_round(0, 0))
    extra, _ = drive(algo.server_round(0, [ClientResult(0, update, algo.n_samples(0), base_round=0)],
                                       [Failure(1, "deadline", send.label)]))
    assert isinstance(extra, dict)


@pytest.mark.parametrize("name", [name for name, _ in iter_registry()])
def test_registered_algorithms_have_the_same_shape(name):
    try:
        cls = get_algorithm(name)
    except NotImplementedError:
        pytest.skip(f"{name} is registered but not implemented yet")
    assert issubclass(cls, Algorithm) and cls.name == name
    assert cls.Config is algorithm_config(name)  # the registered (torch-free) config
    assert issubclass(cls.Config, AlgorithmConfig)
    assert cls.Config.model_config.get("extra") == "forbid"
    cls.Config()  # every option has a default


def test_light_fl_modules_do_not_import_torch():
    code = ("import sys, fl, fl.core.actions, fl.core.algorithm, fl.lm.specs, fl.lm.partition, fl.core.seeding; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_algorithm_configs_are_torch_free():
    """Every algorithm's config (fl/algorithms/<name>/config.py) builds without torch, so a
    scenario validates without it."""
    code = ("import sys, fl.core.algorithm as a; [a.algorithm_config(n)() for n in a.algorithm_names()]; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_seed_streams_are_stable_and_distinct():
    from fl.core.seeding import int_seed, numpy_stream

    assert int_seed(0, "train", 1, 2) == int_seed(0, "train", 1, 2)
    assert len({int_seed(0, "train", 1, 2), int_seed(0, "train", 2, 1), int_seed(1, "train", 1, 2),
                int_seed(0, "lora_init")}) == 4
    assert numpy_stream(3, "partition").integers(1 << 30) == numpy_stream(3, "partition").integers(1 << 30)
    with pytest.raises(ValueError, match="root seed must be a non-negative integer. Got -1"):
        int_seed(-1, "x")

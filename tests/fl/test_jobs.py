"""Send.job (fl.core.actions): run on a fresh replica, after pickling, it equals Send.work.

The contract a worker backend (sim.execution) relies on, checked for every algorithm whose
uploads carry a job, without any worker process.
"""

import math
import pickle

import pytest

from fl.core.actions import Compute, Job, Receive, Send
from fl.core.algorithm import AlgorithmContext, get_algorithm

SODA = dict(model={"kind": "tiny", "n_layers": 6}, data={"max_per_class": 40, "n_test": 8, "max_len": 96,
                                                         "n_public": 16},
            sgp_keep=4, sgp_calibration=8, oda_initial_steps=2, oda_batch_size=4, probe_batch_size=4)


def _send(algo, rnd, client):
    """Drive ``client_round`` up to its upload; return the Send."""
    gen = algo.client_round(rnd, client)
    action, value = next(gen), None
    while not isinstance(action, Send):
        value = action.payload if isinstance(action, Receive) else None
        assert isinstance(action, (Receive, Compute))
        action = gen.send(value)
    return action


def _same(a, b) -> bool:
    ta, tb = a.payload.tensors, b.payload.tensors
    return a.losses == b.losses and list(ta) == list(tb) and all(ta[n].equal(tb[n]) for n in ta)


@pytest.mark.parametrize("name, over", [
    ("fedavg_lora", {}),
    ("fedavg_lora", {"upload": "delta", "upload_dtype": "int8", "lora": {"rank": 4, "dropout": 0.1}}),
    ("fedsoda", SODA),
])
def test_job_on_a_fresh_replica_equals_work(name, over, small_options):
    cls = get_algorithm(name)
    options = small_options(**over) if name == "fedavg_lora" else {**small_options(), **over}
    host = cls(cls.Config(**options), AlgorithmContext(n_clients=3, seed=4, run_dir=None))
    send = _send(host, 0, 1)
    assert isinstance(send.job, Job)
    replica = pickle.loads(pickle.dumps(host.replica()))()  # what a worker builds
    job = pickle.loads(pickle.dumps(send.job))  # what travels to it
    other = _send(host, 0, 2)  # the replica ran another client first: nothing carries over
    other.job(replica, other.sizer(math.inf))
    plan = send.sizer(math.inf)
    remote = job(replica, plan)
    inline = send.work(plan)
    assert remote.bits == inline.bits == plan.bits
    assert _same(remote, inline)
    assert not _same(remote, other.work(other.sizer(math.inf)))  # a different client differs


def test_kd_topk_job_on_a_fresh_replica_equals_work():
    """kd_topk's DistilJob (warm-up, distillation from the downlink, adaptive_mass counts)
    run on a worker's replica after pickling equals the host's work, adapter state included."""
    cls = get_algorithm("kd_topk")
    options = dict(model={"kind": "tiny"}, client_keep_layers=[0], lora={"rank": 4, "alpha": 8},
                   data={"max_per_class": 30, "n_test": 6, "max_len": 96, "n_public": 6},
                   partition={"kind": "iid"}, local_steps=1, batch_size=2, lr=1e-2, public_batch_size=2,
                   server_steps=1, k="adaptive_mass", values="logprobs", mass_target=0.002, k_down="full",
                   k_min=2, k_max=512, warmup_steps=1, mutual=True)  # adaptive_mass needs the downlink
    host = cls(cls.Config(**options), AlgorithmContext(n_clients=3, seed=4, run_dir=None))
    send = _send(host, 0, 1)
    assert isinstance(send.job, Job)
    replica = pickle.loads(pickle.dumps(host.replica()))()
    job = pickle.loads(pickle.dumps(send.job))
    other = _send(host, 0, 2)
    other.job(replica, other.sizer(math.inf))  # the replica ran another client first
    plan = send.sizer(math.inf)
    remote, inline = job(replica, plan), send.work(plan)
    assert remote.bits == inline.bits == plan.bits and remote.losses == inline.losses
    assert remote.payload.counts.equal(inline.payload.counts) and len(set(inline.payload.counts.tolist())) > 1
    assert remote.payload.values.equal(inline.payload.values) and remote.payload.indices.equal(inline.payload.indices)
    assert list(remote.state) == list(inline.state) and all(remote.state[n].equal(inline.state[n]) for n in inline.state)

import math

import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

import fl.algorithms.fedavg_lora.algorithm as fedavg_module
from fl.core.actions import ClientResult, Compute, Failure, Receive, Send
from fl.core.aggregation import fedavg
from fl.core.algorithm import AlgorithmContext, get_algorithm
from fl.algorithms.fedavg_lora.algorithm import FedAvgLoRA, FedAvgLoRAConfig
from fl.lm.models import lora_state
from fl.core.payload import DTYPE_BITS
from fl.core.runner import drive, run_plain


def _algo(small_options, seed=0, n_clients=3, **over):
    cls = get_algorithm("fedavg_lora")
    return cls(cls.Config(**small_options(**over)), AlgorithmContext(n_clients=n_clients, seed=seed))


def _one_round(algo, clients=(0, 1, 2), rnd=0):
    results = [ClientResult(c, drive(algo.client_round(rnd, c))[0], algo.n_samples(c), rnd) for c in clients]
    return results, algo.aggregate(rnd, results, [])


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registry_builds_it():
    cls = get_algorithm("fedavg_lora")
    assert cls is FedAvgLoRA and cls.Config is FedAvgLoRAConfig and not cls.is_surrogate


@pytest.mark.parametrize("options, match", [
    ({"lora": {"rank": 0}}, r"lora\.rank\n.*greater than 0"),
    ({"local_step": 3}, r"local_step\n.*Extra inputs are not permitted"),
    ({"upload_dtype": "fp8"}, r"upload_dtype\n.*'fp32', 'fp16', 'bf16' or 'int8'"),
    ({"partition": {"kind": "dirichlet", "alpha": -1}}, r"partition\.dirichlet\.alpha\n.*greater than 0"),
    ({"partition": {"kind": "random"}}, r"partition\n.*unknown partitioner 'random'; use one of: "
                                        r"by_category, dirichlet, iid, shards"),
    ({"data": {"min_chars": 300, "max_chars": 100}}, r"data\n.*min_chars \(300\) must be <= max_chars \(100\)"),
    ({"model": {"name_or_path": "smollm2", "keep_layers": [5, 2]}}, r"model\.pretrained\.keep_layers\n.*strictly increasing"),
    ({"model": {"kind": "tiny", "heads": 3}}, r"model\.tiny\n.*multiple of heads"),
    ({"lora": {"target_modules": []}}, r"lora\.target_modules\n.*must list module names"),
])
def test_config_errors_name_the_key(options, match):
    with pytest.raises(ValidationError, match=match):
        FedAvgLoRAConfig(**options)


def test_model_shorthand():
    assert FedAvgLoRAConfig(model="smollm2").model.name_or_path == "smollm2"
    assert FedAvgLoRAConfig(model={"name_or_path": "x", "dtype": "bfloat16"}).model.dtype == "bfloat16"
    assert FedAvgLoRAConfig(model={"kind": "tiny", "n_layers": 3}).model.n_layers == 3


def test_client_round_is_receive_compute_send_and_trains_only_when_the_upload_completes(small_options, monkeypatch):
    algo = _algo(small_options)
    calls = []
    real = type(algo).train_model
    monkeypatch.setattr(type(algo), "train_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = lora_state(algo.model)

    gen = algo.client_round(0, 1)
    receive = next(gen)
    assert isinstance(receive, Receive) and receive.payload.bits == algo.download_bits
    compute = gen.send(receive.payload)
    assert isinstance(compute, Compute) and compute.flops > 0 and compute.work is None
    send = gen.send(None)
    assert isinstance(send, Send)
    plan = send.sizer(1e3)  # the adapter's size does not depend on the capacity
    assert plan.bits == algo.upload_bits and send.sizer(math.inf).bits == plan.bits
    assert calls == [] and _equal(lora_state(algo.model), before)  # nothing real ran yet
    payload = send.work(plan)
    assert calls == [1] and payload.bits == plan.bits
    with pytest.raises(StopIteration) as stop:
        gen.send(payload)
    update = stop.value.value
    assert update.bits == plan.bits and math.isfinite(update.train_loss)
    assert not _equal(update.state, before)

    failed = algo.client_round(0, 2)  # an upload that never completes: no real compute
    next(failed); failed.send(algo.download_payload()); failed.send(None)
    failed.close()
    assert calls == [1]


def test_payload_sizes_are_exact(small_options):
    algo = _algo(small_options, upload_dtype="int8", download_dtype="fp32", header_bits=100)
    n = sum(4 * (i + o) for i, o in [(64, 64), (64, 32)]) * 2  # r·(d_in + d_out), q and v, 2 layers
    assert algo.upload_bits == n * DTYPE_BITS["int8"] + 32 * 8 + 100  # 8 tensors, one fp32 scale each
    assert algo.download_bits == n * 32 + 100
    _, traffic = drive(algo.client_round(0, 0))
    assert (traffic.bits_up, traffic.bits_down) == (algo.upload_bits, algo.download_bits)


def test_model_download_once_per_client(small_options):
    algo = _algo(small_options, model_download=True, model_download_dtype="fp16", header_bits=10)
    frozen = sum(p.numel() for p in algo.model.parameters() if not p.requires_grad)
    assert algo.base_payload.bits == frozen * 16 + 10
    gen = algo.client_round(0, 0)
    first = next(gen)
    assert isinstance(first, Receive) and first.label == "base_model" and first.payload.bits == algo.base_payload.bits
    assert gen.send(first.payload).label == "model"  # then the adapter, as without the option
    gen.close()
    _, traffic = drive(algo.client_round(1, 0))  # client 0 holds the model now
    assert traffic.bits_down == algo.download_bits
    _, traffic = drive(algo.client_round(1, 1))  # client 1 does not yet
    assert traffic.bits_down == algo.download_bits + algo.base_payload.bits
    assert algo.info()["bits_base_model"] == algo.base_payload.bits


def test_compute_flops_are_what_the_work_really_multiplies(small_options):
    algo = _algo(small_options)
    algo.model.get_base_model().set_attn_implementation("eager")  # so FlopCounterMode sees attention
    gen = algo.client_round(0, 0)
    received = next(gen).payload
    compute = gen.send(received)
    send = gen.send(None)
    counter = FlopCounterMode(display=False)
    with counter:
        send.work(send.sizer(math.inf))
    assert compute.flops == counter.get_total_flops()


def test_same_seed_same_adapters_different_seed_different(small_options):
    a, b, c = (_algo(small_options, seed=s) for s in (0, 0, 1))
    for algo in (a, b, c):
        _one_round(algo)
    assert _equal(a.global_state, b.global_state)
    assert not _equal(a.global_state, c.global_state)


def test_client_updates_do_not_depend_on_run_order(small_options):
    algo = _algo(small_options)
    forward = {c: drive(algo.client_round(0, c))[0].state for c in (0, 1, 2)}
    backward = {c: drive(algo.client_round(0, c))[0].state for c in (2, 1, 0)}
    assert all(_equal(forward[c], backward[c]) for c in forward)
    assert not _equal(forward[0], forward[1])


def test_aggregate_is_sample_weighted_fedavg_and_counts_failures(small_options):
    algo = _algo(small_options, upload_dtype="fp32")
    results = [ClientResult(c, drive(algo.client_round(0, c))[0], algo.n_samples(c), 0) for c in (0, 2)]
    results[1] = ClientResult(2, results[1].update, 3 * results[1].n_samples, 0)  # unequal weights
    failures = [Failure(1, "deadline", "update", bits_delivered=1234.0)]
    out = algo.aggregate(0, results, failures)
    expected = fedavg([r.update.state for r in results], [r.n_samples for r in results])
    assert _equal(algo.global_state, expected)
    assert out["n_failed"] == 1 and out["n_aggregated"] == 2
    before = dict(algo.global_state)
    out = algo.aggregate(1, [], failures * 2)  # nobody delivered: the global adapter stays
    assert _equal(algo.global_state, before) and out["n_failed"] == 2 and math.isnan(out["train_loss"])


def test_delta_upload_equals_adapter_upload_in_fp32(small_options):
    states = []
    for upload in ("adapter", "delta"):
        algo = _algo(small_options, upload=upload, upload_dtype="fp32", download_dtype="fp32")
        _one_round(algo)
        states.append(algo.global_state)
    assert all(torch.allclose(states[0][k], states[1][k], atol=1e-6) for k in states[0])


def test_int8_upload_really_quantises(small_options):
    exact = _algo(small_options, upload_dtype="fp32")
    int8 = _algo(small_options, upload_dtype="int8")
    u32 = drive(exact.client_round(0, 0))[0].state
    u8 = drive(int8.client_round(0, 0))[0].state
    diffs = [(u32[k] - u8[k]).abs().max() / u32[k].abs().max() for k in u32 if u32[k].abs().max() > 0]
    assert max(diffs) > 0 and max(diffs) <= 0.5 / 127 * 1.01


def test_evaluate_follows_eval_every(small_options):
    algo = _algo(small_options, eval_every=2)
    assert algo.evaluate(0) == {}
    m = algo.evaluate(1)
    assert set(m) == {"accuracy", "accuracy_lo", "accuracy_hi", "loss", "n_eval"} and 0 <= m["accuracy"] <= 1
    assert algo.evaluate(-1) == m  # the initial model: same global state


def test_label_histogram_and_info(small_options):
    algo = _algo(small_options, n_clients=4)
    rows = algo.label_histogram()
    assert [r["n_samples"] for r in rows] == [algo.n_samples(c) for c in range(4)]
    info = algo.info()
    assert info["n_train"] == sum(algo.n_samples(c) for c in range(4))
    assert info["bits_up"] == algo.upload_bits and info["client_storage_bytes"] > 4 * info["n_params"] - 1


def test_run_plain_two_rounds_learns(small_options):
    """The tiny random model's loss on the held-out set falls measurably after 2 rounds."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    algo = _algo(small_options, n_clients=4, lora={"rank": 8, "alpha": 16, "target_modules": targets},
                 local_steps=5, batch_size=8, lr=1e-2)
    rows = run_plain(algo, rounds=2, clients_per_round=2, seed=0, evaluate_initial=True)
    assert [r["round"] for r in rows] == [-1, 0, 1]
    assert rows[1]["n_selected"] == 2 and rows[1]["bits_up"] == 2 * algo.upload_bits
    assert rows[1]["flops"] > 0
    losses = [r["loss"] for r in rows]
    assert losses[2] < losses[1] < losses[0] - 0.1, losses

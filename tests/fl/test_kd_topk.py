"""kd_topk on tiny models: the contract (k decided at send start, real work only on
completion), k against capacity, exact sizes, FLOPs, determinism, run_plain."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, ServerCompute
from fl.core.algorithm import AlgorithmContext, get_algorithm
from fl.lm.data import collate
from fl.algorithms.kd_topk.distill import Teacher
from fl.algorithms.kd_topk.algorithm import KDTopK, KDTopKConfig, choose_k
from fl.lm.models import lora_state
from fl.core.runner import drive, run_plain
from fl.algorithms.kd_topk.topk_payload import topk_bits

V = 49152  # SmolLM2's vocabulary (the tiny models share the tokenizer)


def _options(**over):
    options = dict(
        model={"kind": "tiny"},
        client_keep_layers=[0],
        lora={"rank": 4, "alpha": 8},
        data={"max_per_class": 30, "n_test": 6, "max_len": 96, "n_public": 6},
        partition={"kind": "iid"},
        local_steps=1, batch_size=2, lr=1e-2, public_batch_size=2, server_steps=1,
        k="adaptive", k_min=2, k_max=512, mutual=True,  # the tests exercise the downlink teacher
    )
    options.update(over)
    return options


def _algo(seed=0, n_clients=3, **over):
    cls = get_algorithm("kd_topk")
    return cls(cls.Config(**_options(**over)), AlgorithmContext(n_clients=n_clients, seed=seed))


@pytest.fixture(scope="module")
def algo():
    return _algo(projection={"rank": 3})


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _to_send(algo, rnd, client):
    """Step a client's generator to its Send; returns (generator, compute, send)."""
    gen = algo.client_round(rnd, client)
    receive = next(gen)
    assert isinstance(receive, Receive) and receive.label == "teacher"
    compute = gen.send(receive.payload)
    assert isinstance(compute, Compute) and compute.flops > 0 and compute.work is None
    send = gen.send(None)
    assert isinstance(send, Send) and send.label == "logits"
    return gen, compute, send


def test_registered_with_its_config():
    assert get_algorithm("kd_topk") is KDTopK and KDTopK.Config is KDTopKConfig


@pytest.mark.parametrize("options, match", [
    ({"aggregation": "prob_tail"}, r"prob_tail' needs values: logprobs"),
    ({"data": {"n_public": 2}, "public_batch_size": 4}, r"data.n_public \(2\) must be >= public_batch_size \(4\)"),
    ({"k_min": 8, "k_max": 4}, r"k_max \(4\) must be >= k_min \(8\)"),
    ({"k": 0}, r"k must be >= 1"),
    ({"k": "adaptve"}, r"k\.literal"),
    ({"value_dtype": "fp8"}, r"value_dtype\n.*'fp32', 'fp16', 'bf16' or 'int8'"),
    ({"projection": {"rank": -1}}, r"projection\.rank\n.*greater than or equal to 0"),
])
def test_config_errors_name_the_key(options, match):
    with pytest.raises(ValidationError, match=match):
        KDTopKConfig(**options)


def test_k_monotone_in_capacity_and_clipped():
    """T = 10 positions, fp16 values + 16-bit indices = 32 bits per entry, overhead 100."""
    T, over = 10, 100
    caps = np.concatenate([[0.0, 50.0], np.geomspace(1e2, 1e9, 300), [math.inf]])
    ks = [choose_k(c, T, V, "fp16", 4, 300, over) for c in caps]
    assert all(4 <= k <= 300 for k in ks) and ks[0] == 4 and ks[-1] == 300
    assert all(a <= b for a, b in zip(ks, ks[1:]))
    assert choose_k(over + T * 32 * 7 + 5, T, V, "fp16", 1, 300, over) == 7  # floor((C − o)/(T·32))
    assert choose_k(over + T * 32 * 7 - 1, T, V, "fp16", 1, 300, over) == 6
    assert choose_k(over + T * 24 * 7, T, V, "int8", 1, 300, over) == 7  # int8: 8 + 16 bits per entry
    # with k_max = V the dense message (T·V·16 bits) is chosen as soon as it fits
    dense = over + T * V * 16
    assert choose_k(dense, T, V, "fp16", 1, V, over) == V
    assert choose_k(dense - 1, T, V, "fp16", 1, V, over) == (dense - 1 - over) // (T * 32)
    with pytest.raises(ValueError, match="k_min <= k_max <= V"):
        choose_k(1e6, T, V, "fp16", 10, 5, over)


def test_a_deep_fade_gives_a_smaller_k(algo):
    """Capacity = Shannon rate × airtime budget on 1 MHz for 50 ms: 15 dB constant link vs
    the same link in a 20 dB fade. The sizer sees only the capacity."""
    _, _, send = _to_send(algo, 0, 0)
    cap = lambda snr_db: 1e6 * math.log2(1 + 10 ** (snr_db / 10)) * 0.05  # noqa: E731
    steady, faded = send.sizer(cap(15.0)), send.sizer(cap(-5.0))
    assert 2 <= faded.k < steady.k <= 512
    T = steady.info["n_tokens"]
    for plan in (steady, faded):
        assert plan.bits == topk_bits(T, plan.k, V, "fp16", proj_rank=3)
    assert steady.bits <= cap(15.0) and faded.bits <= cap(-5.0)
    assert topk_bits(T, faded.k + 1, V, "fp16", proj_rank=3) > cap(-5.0)  # the largest k that fits


def test_failed_upload_does_no_real_work(algo, monkeypatch):
    calls = []
    monkeypatch.setattr(algo, "train", lambda *a, **k: calls.append(1) or [])
    before = lora_state(algo.client_model)
    states = dict(algo.client_states)
    gen, _, send = _to_send(algo, 0, 1)
    send.sizer(1e5)  # the transfer starts ...
    gen.close()  # ... and fails: the driver closes the generator
    assert calls == [] and algo.client_states == states and _equal(lora_state(algo.client_model), before)


def test_upload_is_what_the_sizer_announced_and_trains_the_client(algo):
    gen, _, send = _to_send(algo, 0, 2)
    plan = send.sizer(2e5)
    assert 2 not in algo.client_states
    sent = send.work(plan)
    payload = sent.payload
    assert payload.bits == plan.bits and payload.k == plan.k and payload.proj.shape == (plan.info["n_tokens"], 3)
    assert 2 not in algo.client_states  # kept only once the upload completed
    with pytest.raises(StopIteration) as stop:
        gen.send(sent)
    assert 2 in algo.client_states and not _equal(algo.client_states[2], algo.client_init)
    update = stop.value.value
    assert update.k == plan.k and update.bits == plan.bits and math.isfinite(update.train_loss)


def test_adaptive_mass_counts_follow_the_teacher_and_the_cap():
    # the tiny random model is nearly uniform over V: a 0.2 % mass needs some 100 entries
    algo = _algo(k="adaptive_mass", values="logprobs", aggregation="prob_tail", mass_target=0.002,
                 k_down="full", n_clients=2)
    gen, _, send = _to_send(algo, 0, 0)
    down = algo.download_payload(0)
    plan = send.sizer(math.inf)  # cap = k_max = 512
    payload = send.work(plan).payload
    counts = payload.counts
    T = len(counts)
    msg, _ = down.decode()
    p = msg.values.exp()  # the server's full distribution (k_down = V): exact mass
    need = (p.sort(-1, descending=True).values.cumsum(-1) < 0.002).sum(-1) + 1
    assert counts.tolist() == need.clamp(2, 512).tolist() and len(set(counts.tolist())) > 1
    assert payload.bits == plan.bits == topk_bits(T, None, V, "fp16", counts_total=int(counts.sum()), counts_bits=10)
    tight = send.sizer(2000.0)  # the budget caps every position: (2000 − T·10) // (T·32)
    assert tight.info["k_cap"] == (2000 - T * 10) // (T * 32) < int(need.min())
    assert tight.k == tight.info["k_cap"] and tight.bits <= 2000


def test_compute_flops_are_what_the_work_multiplies(algo):
    """Local step (CE + distillation + projection term) and the public forward, all counted."""
    lm = algo.client_model.get_base_model()
    before = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # so FlopCounterMode sees attention
    try:
        _, compute, send = _to_send(algo, 3, 0)
        counter = FlopCounterMode(display=False)
        with counter:
            send.work(send.sizer(math.inf))
    finally:
        lm.set_attn_implementation(before)
    assert compute.flops == counter.get_total_flops()


def test_server_round_is_one_timed_server_compute_and_reports_k(algo):
    results = []
    for c, cap in ((0, 5e4), (1, 5e5)):
        update, _ = drive(algo.client_round(1, c), capacity_bits=cap)
        results.append(ClientResult(c, update, algo.n_samples(c), 1))
    gen = algo.server_round(1, results, [Failure(2, "deadline", "logits", 10.0)])
    action = next(gen)
    assert isinstance(action, ServerCompute) and action.flops > 0 and action.label == "distil"
    assert 2 not in algo._downlink  # the next downlink is computed by the server's work
    with pytest.raises(StopIteration) as stop:
        gen.send(action.work())
    m = stop.value.value
    ks = [r.update.k for r in results]
    assert ks[0] < ks[1] and m["k_mean"] == np.mean(ks) and m["k_min"] == ks[0] and m["k_max"] == ks[1]
    assert m["n_aggregated"] == 2 and m["n_failed"] == 1 and m["teacher_support"] >= ks[1]
    assert 2 in algo._downlink and algo._downlink[2].k == 64
    assert m["teacher_accuracy"] in (0.0, 0.5, 1.0)  # two public examples


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_teacher_votes_rank_the_labels_first_tokens_at_the_deciding_position(algo, positions):
    if positions != algo.config.positions:
        algo = _algo(positions=positions)
    public = algo.public_indices(0)
    batch = collate(algo.task, public)
    sel = algo.selection(batch)
    first = [a[0] for a in algo.task.answers]
    truth = [int(algo.task.labels[i]) for i in public]
    wrong = [(t + 1) % len(first) for t in truth]

    def teacher(favour, tie=False, elsewhere=None):
        """Uniform over the label tokens except ``favour`` (per example) at the deciding
        position; everywhere else (and with ``elsewhere``) the truth is made to look best."""
        log_probs = torch.full((sel.n_tokens, V), -torch.inf)
        for t, (row, col) in enumerate(zip(sel.rows.tolist(), sel.cols.tolist())):
            log_probs[t, first] = -3.0
            if col == int(batch.target_pos[row, 0]):
                log_probs[t, first[favour[row]]] = -3.0 if tie else -1.0
            else:
                log_probs[t, first[truth[row]]] = -0.1  # a non-deciding position must not count
        return Teacher(log_probs)

    assert algo.teacher_votes(teacher(truth), batch, sel, public) == [1.0, 1.0]
    assert algo.teacher_votes(teacher([truth[0], wrong[1]]), batch, sel, public) == [1.0, 0.0]
    assert algo.teacher_votes(teacher(truth, tie=True), batch, sel, public) == [0.0, 0.0]  # ties are wrong
    outside = teacher(truth)
    outside.log_probs[:, first[truth[0]]] = -torch.inf  # the true token outside the support ranks last
    assert algo.teacher_votes(outside, batch, sel, public)[0] == 0.0


def test_run_plain_two_rounds_same_seed_identical():
    rows, states = [], []
    for _ in range(2):
        a = _algo(seed=0, n_clients=2, eval_clients=True)
        rows.append(run_plain(a, rounds=2, seed=0))
        states.append(lora_state(a.server_model))
    assert [r["round"] for r in rows[0]] == [0, 1]
    for r in rows[0]:
        assert r["n_completed"] == 2 and r["k_mean"] == 512 and 0 <= r["accuracy"] <= 1
        assert r["bits_up"] == 2 * r["bits_up_mean"] and r["bits_down"] > 0 and "client_accuracy" in r
    assert rows[0] == rows[1] and _equal(states[0], states[1])
    other = _algo(seed=1, n_clients=2)  # another seed: other public batches, other adapters
    assert other.public_indices(0) != a.public_indices(0)
    assert not _equal(other.client_init, a.client_init) and not _equal(lora_state(other.server_model), states[0])


def test_warmup_runs_once_per_client_and_its_flops_are_counted():
    """warmup_steps: CE-only steps at a client's first participation, FLOPs exact; not again."""
    algo = _algo(warmup_steps=2, n_clients=2)
    lm = algo.client_model.get_base_model()
    lm.set_attn_implementation("eager")
    calls = []
    train = algo.train
    algo.train = lambda model, steps, *a, **k: calls.append((steps, a[5] is None)) or train(model, steps, *a, **k)
    first = []
    for rnd in (0, 1):
        gen, compute, send = _to_send(algo, rnd, 0)
        counter = FlopCounterMode(display=False)
        with counter:
            sent = send.work(send.sizer(math.inf))
        assert compute.flops == counter.get_total_flops()
        first.append(compute.flops)
        with pytest.raises(StopIteration):
            gen.send(sent)
    # round 0: 2 warm-up steps without a teacher, then the round's step with one; round 1: no warm-up
    assert calls == [(2, True), (1, False), (1, False)]
    assert first[0] > first[1]
    plain = _algo(n_clients=2)  # warm-up off: the same client round as before the option existed
    _, c0, _ = _to_send(plain, 1, 0)
    assert c0.flops == first[1]


def test_client_alpha_weights_the_downlink_teacher_only_on_clients():
    """client_alpha = 0: a client trains as without mutual distillation (same adapter, same
    message, no distillation FLOPs) although it still receives the server's logits; the
    server's own distillation keeps alpha."""
    runs = {}
    for name, over in (("off", {"mutual": False}), ("zero", {"client_alpha": 0.0}), ("half", {"client_alpha": 0.5}),
                       ("default", {})):
        a = _algo(n_clients=2, **over)
        (update, traffic) = drive(a.client_round(0, 0))
        runs[name] = (a, update, traffic)
    off, zero, half, default = (runs[k] for k in ("off", "zero", "half", "default"))
    assert zero[2].bits_down > 0 and off[2].bits_down == 0
    assert zero[2].flops == off[2].flops < half[2].flops == default[2].flops
    assert _equal(zero[0].client_states[0], off[0].client_states[0])
    assert torch.equal(zero[1].payload.decode()[0].values, off[1].payload.decode()[0].values)
    assert not _equal(half[0].client_states[0], default[0].client_states[0])
    assert zero[0].client_alpha == 0.0 and default[0].client_alpha == 1.0
    assert zero[0].server_flops(0, []) == default[0].server_flops(0, [])


def test_server_minibatches_distil_each_step_on_its_examples_and_count_their_flops():
    """server_batch_size: each server step distils a sub-batch of the round's public batch
    (its teacher rows, in order); the server's FLOPs are those of the steps that run."""
    algo = _algo(public_batch_size=4, server_batch_size=2, server_steps=3, data={
        "max_per_class": 30, "n_test": 6, "max_len": 96, "n_public": 8}, projection={"rank": 3})
    public = algo.public_indices(1)
    batch = collate(algo.task, public)
    sel = algo.selection(batch)
    with torch.no_grad():
        logits, proj = algo.public_outputs(algo.server_model, public, sel, -1, None)
    teacher = Teacher(torch.log_softmax(logits.float(), -1))
    part, psel, teach, target = algo._public_part(public, sel, teacher, proj, [3, 1])
    assert part == [public[1], public[3]]
    with torch.no_grad():
        sub_logits, sub_proj = algo.public_outputs(algo.server_model, part, psel, -1, None)
    assert torch.allclose(torch.log_softmax(sub_logits.float(), -1), teach.log_probs, atol=1e-5)
    assert torch.allclose(sub_proj, target, atol=1e-5)
    plan = algo.server_plan(1, len(public))
    assert len(plan) == 3 and all(len(r) == 2 for r in plan)
    assert algo.server_plan(1, 2) is None  # a batch no bigger than the minibatch: whole
    results = []
    for c in (0, 1):
        update, _ = drive(algo.client_round(1, c), capacity_bits=1e6)
        results.append(ClientResult(c, update, algo.n_samples(c), 1))
    lm = algo.server_model.get_base_model()
    before = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # so FlopCounterMode sees attention
    try:
        action = next(algo.server_round(1, results, []))
        counter = FlopCounterMode(display=False)
        with counter:
            m = action.work()
    finally:
        lm.set_attn_implementation(before)
    assert action.flops == counter.get_total_flops()
    assert math.isfinite(m["server_kd_loss"])

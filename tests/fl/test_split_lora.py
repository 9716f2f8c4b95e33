"""split_lora without a radio: the split equals the unsplit model, exact message sizes,
quantised messages really reach the other side, FLOPs, averaging, determinism."""

import math

import pytest
import torch
from pydantic import ValidationError

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, ServerCompute
from fl.core.algorithm import AlgorithmContext, get_algorithm
from fl.lm.data import collate
from fl.lm.models import add_lora, lora_state, set_lora_state, tiny_llama
from fl.core.payload import LoraPayload
from fl.core.runner import drive
from fl.lm.specs import LoraSpec
from fl.algorithms.split_lora.split import CutActivations, SplitModel, WireTensor, activation_bits, side_bits, split_profile
from fl.algorithms.split_lora.algorithm import SplitLoRA, SplitLoRAConfig, SplitUpdate, StepRecord
from fl.lm.train import answer_loss, local_train

FP32 = dict(activation_dtype="fp32", upload_dtype="fp32", download_dtype="fp32")
SMALL = dict(model={"kind": "tiny", "n_layers": 2, "hidden": 32, "intermediate": 64},
             data={"max_per_class": 12, "n_test": 6, "max_len": 80}, batch_size=2, cut_layer=1)


def _algo(small_options, seed=0, n_clients=1, **over):
    """A fast split_lora: tiny 2-layer model (hidden 32) cut after layer 0, 2 examples per step."""
    over = {**SMALL, **over}
    cls = get_algorithm("split_lora")
    return cls(cls.Config(**small_options(**over)), AlgorithmContext(n_clients=n_clients, seed=seed))


def test_registry_builds_it():
    assert get_algorithm("split_lora") is SplitLoRA and not SplitLoRA.is_surrogate


@pytest.mark.parametrize("options, match", [
    ({"cut_layer": 0}, r"cut_layer\n.*greater than or equal to 1"),
    ({"activation_dtype": "fp8"}, r"activation_dtype\n.*'fp32', 'fp16', 'bf16' or 'int8'"),
    ({"client_weighting": "k"}, r"client_weighting\n.*'samples' or 'steps'"),
    ({"partial": "keep"}, r"partial\n.*'aggregate' or 'discard'"),
    ({"cutlayer": 2}, r"cutlayer\n.*Extra inputs are not permitted"),
])
def test_config_errors_name_the_key(options, match):
    with pytest.raises(ValidationError, match=match):
        SplitLoRAConfig(**options)


def test_cut_layer_out_of_range_is_a_clear_error(small_options):
    with pytest.raises(ValueError, match=r"'cut_layer' option of split_lora must be in \[1, 1\] .* Got 2 instead"):
        _algo(small_options, cut_layer=2)


def test_a_side_without_adapters_is_a_clear_error(small_options):
    with pytest.raises(ValueError, match=r"leave the client side without adapters at cut_layer=1"):
        _algo(small_options, lora={"rank": 2, "alpha": 4, "target_modules": ["lm_head"]})


def test_a_non_llama_decoder_is_a_clear_error():
    class NotLlama(torch.nn.Module):
        def get_decoder(self):
            return torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"Llama-family decoder .* Linear has no \['embed_tokens', 'layers', 'norm', 'rotary_emb'\]"):
        SplitModel(NotLlama(), 1)


@pytest.mark.parametrize("cut", [1, 2])
def test_split_equals_unsplit_fp32(small_options, cut):
    """The proof that the split is right: one client, fp32 on the wire, the same batches —
    the per-step losses and the trained adapters (both sides) equal plain local_train on
    the unsplit model."""
    algo = _algo(small_options, model={"kind": "tiny", "n_layers": 3}, cut_layer=cut, local_steps=3, batch_size=3,
                 **FP32)
    init = lora_state(algo.model)
    plan = algo.batch_plan(0, 0)
    update, traffic = drive(algo.client_round(0, 0))

    model, _ = tiny_llama(n_layers=3, seed=0)
    model = add_lora(model, LoraSpec(rank=4, alpha=8), seed=0)
    set_lora_state(model, init)
    cfg = algo.config
    ref = local_train(model, (collate(algo.task, i) for i in plan), 3, cfg.lr, torch.Generator().manual_seed(0))

    assert update.steps_completed == 3 and len(update.losses) == 3
    assert update.losses == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert ref[-1] != ref[0]  # it trained: the comparison is not between constants
    trained = lora_state(model)
    for name in algo.split.client_names:
        torch.testing.assert_close(update.state[name], trained[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(trained[name], init[name]) or "lora_A" in name
    live = dict(algo.model.named_parameters())
    for name in algo.split.server_names:
        torch.testing.assert_close(live[name].detach(), trained[name], rtol=1e-5, atol=1e-6)
    assert traffic.server_flops > 0 and traffic.flops > 0


def test_split_forward_is_answer_loss(small_options, task):
    model, _ = tiny_llama(n_layers=3, seed=1)
    model = add_lora(model, LoraSpec(rank=4, alpha=8), seed=1)
    with torch.no_grad():  # give B a value so the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    batch = collate(task, [0, 7, 30, 61])
    split = SplitModel(model, 2)
    msg = CutActivations.encode(split.client_forward(batch), batch, "fp32", split.vocab_size)
    assert torch.equal(msg.target_pos()[batch.target_mask], batch.target_pos[batch.target_mask])
    loss = split.server_loss(msg.acts.decode(), msg.attention_mask, msg.target_ids, msg.target_mask, msg.target_pos())
    assert loss.item() == pytest.approx(answer_loss(model, batch).item(), rel=1e-6)


# --- exact sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, act_bits", [
    ("fp32", 2 * 5 * 8 * 32),
    ("bf16", 2 * 5 * 8 * 16),
    ("fp16", 2 * 5 * 8 * 16 + 32),  # one power-of-two scale per tensor
    ("int8", 2 * 5 * 8 * 8 + 32 * 2 * 5),  # one absmax scale per token
])
def test_bits_per_message_formula(dtype, act_bits):
    """B=2, T=5, H=8, A=3, V=49152 (16-bit ids): activations + mask (B·T) + answers (B·A·17)."""
    x = torch.randn(2, 5, 8)
    assert WireTensor.encode(x, dtype).bits == act_bits == activation_bits(2, 5, 8, dtype)
    assert side_bits(2, 5, 3, 49152) == 2 * 5 + 2 * 3 * (16 + 1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    msg = CutActivations(WireTensor.encode(x, dtype), mask, torch.zeros(2, 3, dtype=torch.long),
                         torch.ones(2, 3, dtype=torch.bool), 49152, header_bits=40)
    assert msg.bits == act_bits + 10 + 102 + 40


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "int8"])
def test_every_step_sends_exactly_the_announced_bits(small_options, dtype):
    """drive() raises if a payload's bits differ from its sizer's; the totals follow the formula."""
    algo = _algo(small_options, activation_dtype=dtype, local_steps=1)
    rows = algo.round_plan(0, 0)
    H, V = algo.split.hidden_size, algo.split.vocab_size
    up = sum(activation_bits(r["B"], r["T"], H, dtype) + side_bits(r["B"], r["T"], r["A"], V) for r in rows)
    down = sum(activation_bits(r["B"], r["T"], H, dtype) for r in rows)
    update, traffic = drive(algo.client_round(0, 0))
    assert traffic.bits_up == up + algo.upload_bits
    assert traffic.bits_down == down + algo.download_bits
    assert algo.upload_bits == LoraPayload.encode(update.state, "fp16").bits


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_server_and_client_receive_the_quantised_tensors(small_options, dtype):
    algo = _algo(small_options, activation_dtype=dtype, local_steps=1, batch_size=2)
    seen = {}
    server_loss = algo.split.server_loss

    def spy(hidden, *args):
        seen["hidden"] = hidden.detach().clone()
        return server_loss(hidden, *args)

    algo.split.server_loss = spy
    gen = algo.client_round(0, 0)
    action = next(gen)
    value = action.payload
    while True:
        action = gen.send(value)
        if isinstance(action, Send):
            value = action.work(action.sizer(math.inf))
            if action.label == "activations":
                msg = value
        elif isinstance(action, Receive):
            value = action.payload
            grads = value
        elif isinstance(action, ServerCompute):
            value = action.work()
        elif isinstance(action, Compute):
            value = action.work() if action.work else None
            if action.label == "client_bwd":
                break
    assert torch.equal(seen["hidden"], msg.acts.decode())  # what the server trained on
    assert msg.acts.data.dtype == {"fp16": torch.float16, "int8": torch.int8}[dtype]
    assert grads.grads.dtype == dtype and grads.bits == activation_bits(*msg.acts.shape, dtype)


@pytest.mark.parametrize("dtype, rel", [("fp16", 2.0 ** -11), ("bf16", 2.0 ** -8), ("int8", None)])
def test_wire_codec_error_bounds(dtype, rel):
    x = torch.randn(3, 7, 16) * torch.logspace(-6, 2, 16)  # magnitudes 1e-6 .. 1e2 along H
    y = WireTensor.encode(x, dtype).decode()
    if dtype == "int8":  # half a step of each token's absmax/127 scale
        bound = x.abs().amax(-1, keepdim=True) / 127 / 2 + 1e-12
        assert ((y - x).abs() <= bound * (1 + 1e-6)).all()
    else:  # relative rounding, plus fp16's subnormal spacing 2^-24 in units of its scale
        floor = x.abs().max() * 2.0 ** -38 if dtype == "fp16" else 0.0
        assert ((y - x).abs() <= x.abs() * rel + floor).all()
    assert torch.equal(WireTensor.encode(x, "fp32").decode(), x)


def test_fp16_gradients_do_not_underflow():
    tiny = torch.full((2, 3, 4), 1e-9)  # below fp16's smallest subnormal (6e-8)
    assert torch.equal(tiny.half().float(), torch.zeros_like(tiny))
    torch.testing.assert_close(WireTensor.encode(tiny, "fp16").decode(), tiny, rtol=1e-3, atol=0)


def test_flops_split_into_client_and_server_parts(small_options):
    algo = _algo(small_options, model={"kind": "tiny", "n_layers": 3}, cut_layer=1)
    for r in algo.round_plan(0, 0):
        total = algo.flop_profile.train_step(r["B"], r["T"], head_tokens=r["A"] + 1)
        assert r["client_fwd_flops"] + r["client_bwd_flops"] + r["server_flops"] == total
        assert 0 < r["client_fwd_flops"] + r["client_bwd_flops"] < r["server_flops"]
    client, server = split_profile(algo.flop_profile, 1)
    assert {l.name.split(".layers.")[1].split(".")[0] for l in client.linears} == {"0"}
    assert any(l.is_head for l in server.linears) and not any(l.is_head for l in client.linears)


# --- the contract and aggregation ----------------------------------------------------------------


def test_round_shape_and_real_work_only_when_events_complete(small_options):
    """Each real computation runs in the work of the event that models it: the server's
    adapter changes only in ``server_step``, the client's only in ``client_bwd``."""
    algo = _algo(small_options, local_steps=2)
    live = dict(algo.model.named_parameters())

    def snapshot():
        prog = algo._progress.get(0)
        client = {n: t.detach().clone() for n, t in prog.tensors.items()} if prog else {}
        return client, {n: live[n].detach().clone() for n in algo.split.server_names}

    def changed(a, b):
        return any(not torch.equal(a[n], b[n]) for n in a)

    gen = algo.client_round(0, 0)
    labels, value = [], None
    action = next(gen)
    while True:
        labels.append(action.label)
        c0, s0 = snapshot()
        if isinstance(action, Receive):
            value = action.payload
        elif isinstance(action, Send):
            value = action.work(action.sizer(0.0))
        else:
            value = action.work() if action.work else None
        c1, s1 = snapshot()
        assert changed(s0, s1) == (action.label == "server_step"), action.label
        if c0:
            assert changed(c0, c1) == (action.label == "client_bwd"), action.label
        try:
            action = gen.send(value)
        except StopIteration:
            break
    step = ["client_fwd", "activations", "server_step", "gradients", "client_bwd"]
    assert labels == ["model", *step, *step, "update"]
    shared = {n: live[n] for n in algo.split.client_names}  # the shared model's client side is untouched
    assert all(torch.equal(shared[n], algo.global_client_state[n]) for n in shared)


def _state(algo, value):
    return {n: torch.full(s, float(value)) for n, s in algo.client_shapes.items()}


@pytest.mark.parametrize("weighting, expected", [("samples", (10 * 1 + 30 * 5) / 40), ("steps", (3 * 1 + 1 * 5) / 4)])
def test_client_adapters_are_averaged_by_samples_or_steps(small_options, weighting, expected):
    algo = _algo(small_options, n_clients=2, client_weighting=weighting)
    results = [ClientResult(0, SplitUpdate(_state(algo, 1), 0, 3, 3, (1.0,)), 10, 0),
               ClientResult(1, SplitUpdate(_state(algo, 5), 0, 1, 3, (2.0,)), 30, 0)]
    row = algo.aggregate(0, results, [])
    for t in algo.global_client_state.values():
        torch.testing.assert_close(t, torch.full_like(t, expected))
    assert row["n_aggregated"] == 2 and row["steps_completed"] == 4 and row["train_loss"] == 1.5


def test_identical_clients_average_to_themselves(small_options):
    algo = _algo(small_options, n_clients=3)
    state = {n: torch.randn(s) for n, s in algo.client_shapes.items()}
    algo.aggregate(0, [ClientResult(c, SplitUpdate(state, 0, 2, 2, (1.0,)), 5 + c, 0) for c in range(3)], [])
    assert all(torch.equal(algo.global_client_state[n], state[n]) for n in state)


def _run_until(algo, client, stop_label, count):
    """Drive a client's round by hand and abandon it (as a deadline would) when ``stop_label``
    is about to run for the ``count``-th time."""
    gen = algo.client_round(0, client)
    action, value, seen = next(gen), None, {}
    while True:
        seen[action.label] = seen.get(action.label, 0) + 1
        if action.label == stop_label and seen[action.label] == count:
            gen.close()
            return
        if isinstance(action, Receive):
            value = action.payload
        elif isinstance(action, Send):
            value = action.work(action.sizer(math.inf))
        else:
            value = action.work() if action.work else None
        action = gen.send(value)


@pytest.mark.parametrize("partial", ["aggregate", "discard"])
def test_cut_off_client_contributes_its_completed_steps(small_options, partial):
    """Client 1 is cut off while its 2nd step's gradients travel: 1 step completed, 2 server
    steps applied. With ``aggregate`` its adapter after step 1 enters the average."""
    algo = _algo(small_options, n_clients=2, local_steps=3, client_weighting="steps", partial=partial, **FP32)
    ok, _ = drive(algo.client_round(0, 0))
    _run_until(algo, 1, "gradients", 2)
    after_one = {n: t.detach().clone() for n, t in algo._progress[1].tensors.items()}
    row = algo.aggregate(0, [ClientResult(0, ok, algo.n_samples(0), 0)], [Failure(1, "deadline", "gradients")])
    rec = algo.step_log[-1]
    w = 1.0 if partial == "aggregate" else 0.0
    assert rec == StepRecord(0, 1, "partial", "deadline", 3, 1, 2, w)
    assert algo.step_log[-2] == StepRecord(0, 0, "completed", "", 3, 3, 3, 3.0)
    assert row["steps_completed"] == 4 and row["server_steps"] == 5 and row["n_partial"] == 1
    if partial == "aggregate":
        expected = {n: (3 * ok.state[n].double() + after_one[n].double()) / 4 for n in after_one}
        assert row["partial_adapter_bits"] == algo.upload_bits and row["n_aggregated"] == 2
    else:
        expected = {n: ok.state[n].double() for n in after_one}
        assert row["partial_adapter_bits"] == 0 and row["n_aggregated"] == 1
    for n, t in expected.items():
        torch.testing.assert_close(algo.global_client_state[n], t.float())


def test_client_cut_off_before_any_step_contributes_no_adapter(small_options):
    algo = _algo(small_options, n_clients=2, local_steps=2)
    ok, _ = drive(algo.client_round(0, 0))
    _run_until(algo, 1, "client_bwd", 1)
    row = algo.aggregate(0, [ClientResult(0, ok, algo.n_samples(0), 0)], [Failure(1, "outage", "client_bwd")])
    assert algo.step_log[-1].status == "no_step" and algo.step_log[-1].server_steps == 1
    assert row["n_aggregated"] == 1 and row["server_steps"] == 3


def test_evaluate_uses_global_client_adapter_and_server_adapter(small_options):
    algo = _algo(small_options, local_steps=1)
    m0 = algo.evaluate(-1)
    assert set(m0) == {"accuracy", "accuracy_lo", "accuracy_hi", "loss", "n_eval"} and math.isfinite(m0["loss"])
    algo.global_client_state = {n: t + 0.5 for n, t in algo.global_client_state.items()}
    algo.load_global_client_state()
    live = dict(algo.model.named_parameters())
    assert all(torch.equal(live[n], algo.global_client_state[n]) for n in algo.split.client_names)
    assert algo.evaluate(0)["loss"] != m0["loss"]

"""The frozen prefix computed once, and clients batched: exact against the plain computation."""

from __future__ import annotations

import pytest
import torch

from fl.lm.data import collate, encode_task, load_dataset
from fl.lm.models import full_precision_norms, lora_state, set_lora_state, tiny_llama
from fl.lm.multilora import train_clients
from fl.lm.prefix import FrozenPrefix, prefix_layer, shared_head
from fl.lm.specs import DataSpec
from fl.lm.train import answer_loss, local_train, score_labels


def _model(layers, n_layers=4, dtype=torch.float32, dropout=0.0, seed=0):
    from peft import LoraConfig, get_peft_model

    base, tok = tiny_llama(n_layers=n_layers, hidden=64)
    base = base.to(dtype)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"],
                     layers_to_transform=layers, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, cfg)
        with torch.no_grad():  # a trained-looking adapter (B is zero when fresh)
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.05)
    return model, tok


@pytest.fixture
def exact64():
    """float64 computed in float64 throughout (transformers' RMSNorm is float32 otherwise)."""
    with full_precision_norms():
        yield


@pytest.fixture(scope="module")
def task():
    _, tok = tiny_llama(n_layers=1, hidden=32)
    return encode_task(load_dataset(DataSpec(max_per_class=20, n_test=12)), tok, 128)


def test_prefix_layer_is_the_lowest_trainable_layer():
    assert prefix_layer(_model([2, 3])[0]) == 2
    assert prefix_layer(_model(None)[0]) == 0  # LoRA in every layer: nothing to cache


def test_cached_loss_and_scores_equal_the_plain_model(task):
    model, _ = _model([2, 3])
    pf = FrozenPrefix(model, task, 2)
    for idx in ([0, 5, 9, 13], [5, 20, 0], [7]):  # paddings differ from batch to batch
        assert pf.answer_loss(idx).item() == pytest.approx(answer_loss(model, collate(task, idx)).item(), rel=1e-5)
    ref = score_labels(model, task, list(range(10)), 4)
    got = pf.score_labels(list(range(10)), 4)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-5)
    assert pf.hits > 0 and pf.nbytes > 0


def test_cached_training_gives_the_same_adapter(task, exact64):
    """float64: nothing but summation order differs, so the adapters agree to 1e-10 (in
    float32 Adam turns rounding noise on near-zero gradients into visible steps)."""
    model, _ = _model([2, 3], dtype=torch.float64)
    start = lora_state(model)
    plan = [[0, 4, 8, 12], [1, 5, 9], [2, 6, 10, 14]]
    ref_losses = local_train(model, (collate(task, b) for b in plan), 3, 1e-2, torch.Generator().manual_seed(1))
    ref = lora_state(model)
    set_lora_state(model, start)
    pf = FrozenPrefix(model, task, prefix_layer(model))
    losses = local_train(model, iter(plan), 3, 1e-2, torch.Generator().manual_seed(1), loss_fn=pf.answer_loss)
    assert losses == pytest.approx(ref_losses, rel=1e-6)
    for k in ref:
        assert torch.allclose(lora_state(model)[k], ref[k], atol=1e-10)


@pytest.mark.parametrize("cached", [False, True])
def test_batched_clients_equal_clients_trained_alone(task, cached, exact64):
    model, _ = _model([2, 3], dtype=torch.float64)
    starts = []
    for c in range(3):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.05)
        starts.append(lora_state(model))
    plans = [[[c * 10 + s * 3 + j for j in range(4)] for s in range(3)] for c in range(3)]
    alone = []
    for c in range(3):
        set_lora_state(model, starts[c])
        losses = local_train(model, (collate(task, b) for b in plans[c]), 3, 1e-2,
                             torch.Generator().manual_seed(0), weight_decay=0.01)
        alone.append((lora_state(model), losses))
    prefix = FrozenPrefix(model, task, 2) if cached else None
    got = train_clients(model, task, starts, plans, 1e-2, weight_decay=0.01, prefix=prefix)
    for (state, losses), (ref, ref_losses) in zip(got, alone):
        assert list(state) == list(ref)
        assert losses == pytest.approx(ref_losses, rel=1e-6)
        for k in ref:
            assert torch.allclose(state[k], ref[k], atol=1e-10)


def test_batching_refuses_dropout_and_unequal_plans(task):
    model, _ = _model([2, 3], dropout=0.1)
    s = lora_state(model)
    with pytest.raises(ValueError, match="lora.dropout 0"):
        train_clients(model, task, [s, s], [[[0, 1]], [[2, 3]]], 1e-3)
    model, _ = _model([2, 3])
    with pytest.raises(ValueError, match="same number of steps"):
        train_clients(model, task, [s, s], [[[0, 1]], [[2, 3], [4, 5]]], 1e-3)


def test_the_cache_is_bounded_and_can_be_cleared(task):
    model, _ = _model([2, 3])
    pf = FrozenPrefix(model, task, 2, max_bytes=30_000)
    ref = answer_loss(model, collate(task, list(range(8)))).item()
    assert pf.answer_loss(list(range(8))).item() == pytest.approx(ref, rel=1e-5)
    assert 0 < pf.nbytes <= 30_000 and len(pf._train) < 8  # some kept, the rest computed for the batch only
    pf.clear()
    assert pf.nbytes == 0 and pf.answer_loss(list(range(8))).item() == pytest.approx(ref, rel=1e-5)


def test_cached_states_depend_on_the_sequence_only(task):
    """Whatever batch asks first, an example's state is the same bits (so runs, resumes and
    worker replicas agree whatever each one's cache history)."""
    model, _ = _model([2, 3])
    a, b = FrozenPrefix(model, task, 2), FrozenPrefix(model, task, 2)
    _, ha = a.train_states([3, 11, 40])
    _, hb = b.train_states([40, 2, 3, 7, 11])
    assert all(torch.equal(a._train[i], b._train[i]) for i in (3, 11, 40))
    a.score_labels([5, 6], 2)
    b.score_labels([6, 9, 5], 3)
    for i in (5, 6):
        assert torch.equal(a._eval[i][0], b._eval[i][0]) and torch.equal(a._eval[i][1], b._eval[i][1])


def test_the_shared_head_runs_once_and_changes_nothing(task, exact64):
    """Every prompt starts with the same template tokens: they run once per step (per client
    when batched), the states kept are those after the head; losses, gradients and scores
    equal those of every row running its whole sequence."""
    h = shared_head(task)
    assert h > 0 and all(p[:h] == task.prompts[0][:h] for p in task.prompts)
    assert h < min(len(p) for p in task.prompts)
    model, _ = _model([2, 3], dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    shared, whole = FrozenPrefix(model, task, 2), FrozenPrefix(model, task, 2, share_head=False)
    assert shared.head_len == h and whole.head_len == 0
    idx = [0, 5, 9, 13, 30]
    got = []
    for pf in (shared, whole):
        model.zero_grad()
        loss = pf.answer_loss(idx)
        loss.backward()
        got.append((loss.item(), [p.grad.clone() for p in params]))
    assert got[0][0] == pytest.approx(got[1][0], rel=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-13) for a, b in zip(got[0][1], got[1][1]))
    assert sum(s.shape[0] for s in shared._train.values()) == sum(s.shape[0] for s in whole._train.values()) - h * len(idx)
    order = [40, 3, 17, 8, 25]  # any order: the scores come back in it
    assert torch.allclose(shared.score_labels(order, 2), whole.score_labels(order, 3), atol=1e-10)
    assert torch.allclose(shared.score_labels(order, 2), score_labels(model, task, order, 2), atol=1e-10)


def test_fedavg_run_jobs_batches_clients_like_their_own_updates(exact64):
    """FedAvgLoRA.run_jobs (execution.batch_clients) gives each client the upload its own
    local_update gives (float64 model: to 1e-10)."""
    from fl.core.algorithm import AlgorithmContext
    from fl.algorithms.fedavg_lora.algorithm import FedAvgLoRA, FedAvgLoRAConfig

    cfg = FedAvgLoRAConfig(model={"kind": "tiny", "n_layers": 3}, lora={"layers": {"top": 1}},
                           data={"max_per_class": 30, "n_test": 6, "max_len": 128},
                           local_steps=2, batch_size=3, upload_dtype="fp32", download_dtype="fp32")
    algo = FedAvgLoRA(cfg, AlgorithmContext(n_clients=4, seed=0))
    assert algo.prefix is not None and algo.prefix.layer == 2
    algo.model.double()
    jobs = []
    for c in range(3):
        gen = algo.client_round(0, c)
        payload = next(gen).payload
        gen.send(payload)
        send = gen.send(None)
        jobs.append((send.job, send.sizer(1e9)))
        gen.close()
    together = algo.run_jobs(jobs)
    for (job, plan), got in zip(jobs, together):
        alone = job(algo, plan)
        assert got.losses == pytest.approx(alone.losses, rel=1e-9)
        a, b = got.payload.decode(), alone.payload.decode()
        assert all(torch.allclose(a[k].double(), b[k].double(), atol=1e-6) for k in a)

import numpy as np
import pytest
import torch

from fl.lm.data import collate
from fl.lm.models import add_lora, lora_state, tiny_llama
from fl.lm.specs import LoraSpec
from fl.lm.train import answer_loss, causal_lm, draw_batches, evaluate, local_train, score_labels

IDX = [0, 41, 82, 123, 164, 205, 30, 100]


def _model(seed=0):
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return add_lora(tiny_llama(seed=seed)[0], LoraSpec(rank=8, alpha=16, target_modules=targets), seed=seed)


def test_a_few_lora_steps_reduce_the_loss_on_a_fixed_batch(task):
    model = _model()
    batch = collate(task, IDX)
    with torch.no_grad():
        before = answer_loss(model, batch).item()
    base = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = local_train(model, [batch] * 8, steps=8, lr=2e-2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = answer_loss(model, batch).item()
    assert losses[0] == pytest.approx(before, abs=1e-4)
    assert after < before - 0.1, (before, after)  # a random tiny model cannot go far below 9.5
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if not p.requires_grad)  # base frozen
    assert not model.training  # left in eval mode


def test_local_train_is_deterministic_and_leaves_global_rng_alone(task):
    states = []
    for _ in range(2):
        model = add_lora(tiny_llama()[0], LoraSpec(rank=4, dropout=0.1), seed=0)  # dropout draws too
        torch.manual_seed(999)
        before = torch.random.get_rng_state()
        local_train(model, [collate(task, IDX)] * 3, steps=3, lr=1e-2, generator=torch.Generator().manual_seed(5))
        assert torch.equal(torch.random.get_rng_state(), before)
        states.append(lora_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_local_train_needs_trainable_parameters(task):
    model, _ = tiny_llama()
    with pytest.raises(ValueError, match="no trainable parameters"):
        local_train(model, [collate(task, IDX)], 1, 1e-3, torch.Generator())


def test_draw_batches_are_epochs_of_permutations():
    idx = np.arange(100, 110)
    batches = draw_batches(idx, batch_size=4, steps=5, generator=torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4] * 5
    flat = sum(batches, [])
    assert sorted(flat[:10]) == list(range(100, 110))  # the first epoch is a permutation
    again = draw_batches(idx, 4, 5, torch.Generator().manual_seed(0))
    assert again == batches


def test_score_labels_equals_scoring_each_sequence_alone(task):
    model = _model(seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    idx = [0, 45, 90, 150, 200]
    fast = score_labels(model, task, idx, batch_size=2)  # batched, left-padded, KV cache reused
    lm = causal_lm(model)
    slow = torch.zeros_like(fast)
    with torch.no_grad():
        for r, i in enumerate(idx):
            for k, answer in enumerate(task.answers):
                seq = torch.tensor([list(task.prompts[i]) + list(answer)])
                logp = lm(seq).logits[0].log_softmax(-1)  # (T, V)
                P = len(task.prompts[i])
                slow[r, k] = sum(logp[P - 1 + j, a] for j, a in enumerate(answer))
    assert torch.allclose(fast, slow, atol=1e-4)


def test_evaluate_accuracy_and_loss(task):
    model = _model(seed=1)
    model.train()
    idx = list(range(0, 240, 12))
    m = evaluate(model, task, idx)
    assert model.training  # mode restored
    scores = score_labels(model, task, idx)
    truth = torch.as_tensor(task.labels[idx])
    assert m["accuracy"] == pytest.approx(float((scores.argmax(1) == truth).float().mean()))
    n_tok = sum(len(task.answers[task.labels[i]]) for i in idx)
    assert m["loss"] == pytest.approx(float(-scores[torch.arange(len(idx)), truth].sum() / n_tok), rel=1e-6)

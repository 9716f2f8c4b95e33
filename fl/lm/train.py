"""Local LoRA training and rank-classification evaluation (read top to bottom).

Loss: cross-entropy on the answer tokens only (label word + end-of-turn), averaged over
the answer tokens of the batch. Batches are left-padded, so every answer ends at the last
position and the output head runs only on the last few positions (``logits_to_keep``),
not on the whole sequence: with a 49k vocabulary the head is a fifth of SmolLM2-135M's
matmuls per token and nearly all of a tiny test model's. Evaluation scores each label's
answer given the prompt and takes the argmax.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fl.lm.data import Batch, EncodedTask

__all__ = ["causal_lm", "upcast", "model_device", "rank_metrics", "answer_loss", "draw_batches", "local_train", "evaluate", "score_labels"]


def causal_lm(model: nn.Module) -> nn.Module:
    """The underlying ``*ForCausalLM`` (a peft model's adapters stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least: losses and log-probabilities of half-precision logits are
    taken in float32; float32 and float64 stay as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # positions count real tokens only, so left padding does not shift them
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (batches are moved there)."""
    return next(model.parameters()).device


def answer_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens of ``batch`` (a scalar tensor)."""
    batch = batch.to(model_device(model))
    T = batch.input_ids.shape[1]
    keep = T - int(batch.target_pos[batch.target_mask].min())  # head runs on the last `keep` positions
    out = causal_lm(model)(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=_positions(batch.attention_mask),
        use_cache=False,
        logits_to_keep=keep,
    )
    logits = out.logits  # (B, keep, V)
    rel = batch.target_pos - (T - keep)  # (B, A) index into the kept positions
    picked = logits.gather(1, rel.clamp(min=0).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, A, V)
    return F.cross_entropy(upcast(picked[batch.target_mask]), batch.target_ids[batch.target_mask])


def draw_batches(indices: Sequence[int] | np.ndarray, batch_size: int, steps: int,
                 generator: torch.Generator) -> list[list[int]]:
    """``steps`` batches of ``batch_size`` indices: random permutations of ``indices`` (drawn
    from ``generator``) back to back, so a batch may span two epochs."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("draw_batches needs at least one example.")
    flat: list[int] = []
    while len(flat) < batch_size * steps:
        flat.extend(indices[torch.randperm(len(indices), generator=generator).numpy()].tolist())
    return [flat[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def local_train(
    model: nn.Module, batches: Iterable, steps: int, lr: float,
    generator: torch.Generator, weight_decay: float = 0.0,
    loss_fn: Callable[[object], torch.Tensor] | None = None,
    forward_ctx: Callable[[], ContextManager] | None = None,
) -> list[float]:
    """``steps`` AdamW steps on the trainable (LoRA) parameters; returns the step losses.

    A fresh optimiser each call (a client keeps no optimiser state between rounds). Dropout
    draws come from a torch RNG seeded from ``generator``; the global RNG is left untouched.
    ``loss_fn(item)`` gives the loss of each item of ``batches`` (default:
    :func:`answer_loss` of a :class:`~fl.lm.data.Batch`; e.g. a
    :meth:`~fl.lm.prefix.FrozenPrefix.answer_loss` of index lists). ``forward_ctx()`` wraps
    each forward pass and loss (e.g. :func:`fl.lm.device.autocast`), not the backward pass.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("local_train: the model has no trainable parameters (add LoRA adapters first).")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    batches = iter(batches)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for _ in range(steps):
            batch = next(batches)
            with forward_ctx() if forward_ctx is not None else contextlib.nullcontext():
                loss = answer_loss(model, batch) if loss_fn is None else loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def score_labels(model: nn.Module, task: EncodedTask, indices: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """Log-likelihood of every label's answer given each prompt: (len(indices), n_labels).

    The prompts run once (left-padded, KV cache kept); the cache is repeated per label and
    the answers' remaining tokens run on top of it.
    """
    lm = causal_lm(model)
    dev = model_device(model)
    L = len(task.answers)
    A = max(len(a) for a in task.answers)
    answers = torch.full((L, A), task.pad_id, dtype=torch.long)
    answer_mask = torch.zeros((L, A), dtype=torch.bool)
    for k, a in enumerate(task.answers):
        answers[k, :len(a)] = torch.tensor(a)
        answer_mask[k, :len(a)] = True
    answers, answer_mask = answers.to(dev), answer_mask.to(dev)
    scores = []
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start:start + batch_size])
        B = len(chunk)
        Tp = max(len(task.prompts[i]) for i in chunk)
        ids = torch.full((B, Tp), task.pad_id, dtype=torch.long)
        mask = torch.zeros((B, Tp), dtype=torch.long)
        for row, i in enumerate(chunk):
            p = task.prompts[i]
            ids[row, Tp - len(p):] = torch.tensor(p)
            mask[row, Tp - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        out = lm(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True, logits_to_keep=1)
        first = upcast(out.logits[:, -1]).log_softmax(-1)  # (B, V): the first answer token
        score = first[:, answers[:, 0]]  # (B, L)
        if A > 1:
            cache = out.cache
            cache.batch_repeat_interleave(L)  # row b*L + k: prompt b, label k
            cont = answers[:, :-1].repeat(B, 1)  # (B*L, A-1) answer tokens fed after the prompt
            cont_mask = torch.cat([mask.repeat_interleave(L, 0), answer_mask[:, :-1].long().repeat(B, 1)], 1)
            n_prompt = mask.sum(1).repeat_interleave(L)  # (B*L,)
            pos = n_prompt[:, None] + torch.arange(A - 1, device=dev)[None, :]  # (B*L, A-1)
            out2 = lm(input_ids=cont, attention_mask=cont_mask, position_ids=pos, cache=cache, use_cache=True)
            logp = upcast(out2.logits).log_softmax(-1)  # (B*L, A-1, V)
            nxt = answers[:, 1:].repeat(B, 1)  # (B*L, A-1) the tokens they predict
            tok = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)  # (B*L, A-1)
            tok = tok * answer_mask[:, 1:].repeat(B, 1)
            score = score + tok.sum(-1).view(B, L)
        scores.append(score.cpu())
    return torch.cat(scores)


@torch.no_grad()
def evaluate(model: nn.Module, task: EncodedTask, indices: Sequence[int] | None = None,
             batch_size: int = 16) -> dict[str, Any]:
    """Rank-classification accuracy and answer loss on ``indices`` (default: all of ``task``)
    — :func:`rank_metrics`, the per-prompt results included.

    accuracy: share of examples whose true label's answer has the highest log-likelihood.
    loss: mean negative log-likelihood per answer token of the true answers.
    """
    if indices is None:
        indices = range(len(task))
    indices = list(indices)
    was_training = model.training
    model.eval()
    try:
        scores = score_labels(model, task, indices, batch_size)  # (N, L)
    finally:
        model.train(was_training)
    return rank_metrics(scores, task, indices)


def rank_metrics(scores: torch.Tensor, task: EncodedTask, indices: Sequence[int]) -> dict[str, Any]:
    """Accuracy (with its 95 % Wilson interval ``accuracy_lo``/``accuracy_hi``), answer loss
    and ``n_eval`` from label scores (N, L) of the examples ``indices``; and ``prompts``, a
    :class:`fl.core.metrics.PromptResults` saying which prompts were answered right (what pairs
    two variants scored on the same prompts)."""
    from fl.core.metrics import PromptResults, wilson_interval

    idx = np.asarray(list(indices), dtype=np.int64)
    truth = torch.as_tensor(task.labels[idx])
    lengths = torch.tensor([len(a) for a in task.answers])[truth]  # answer tokens per example
    nll = -scores.gather(1, truth[:, None]).squeeze(1)
    predicted = scores.argmax(1)  # (N,) the label ranked first
    correct = predicted == truth  # (N,) bool
    right = int(correct.sum())
    lo, hi = wilson_interval(right, len(idx))
    return {
        "accuracy": right / len(idx),
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "loss": float(nll.sum() / lengths.sum()),
        "n_eval": float(len(idx)),
        "prompts": PromptResults(prompt=idx, correct=correct.numpy().copy(),  # owned (checkpointable)
                                 label=truth.numpy().astype(np.int64),
                                 predicted=predicted.numpy().astype(np.int64),
                                 label_names=tuple(task.label_names)),
    }

"""Clients batched: several clients' LoRA steps as one forward/backward over a shared base.

The clients of a round all hold the same frozen base weights and differ only in their LoRA
tensors. :func:`train_clients` stacks the C clients' adapters — A (C, r, d_in), B (C, d_out, r)
per adapted linear — and runs their step-s batches as one batch of C·B sequences: the base
matmuls run once over all of them, each client's LoRA update is a grouped (batched) matmul
on its own rows only (as multi-LoRA trainers such as mLoRA/ASPEN and LoRAFusion do).

Each client keeps its own optimiser: the loss is the *sum* of the clients' mean losses, so
the gradient of client c's tensors is exactly the gradient of its own loss, and AdamW is
elementwise, so one AdamW over the stacked tensors is C independent AdamWs. Every adapter
therefore equals the one its client gets training alone on the same batches, to float
tolerance (the grouped matmuls sum in another order; tested). LoRA dropout must be 0 (the
clients' dropout draws would otherwise differ from training alone).

With a :class:`~fl.lm.prefix.FrozenPrefix` only layers >= L run; without one, the whole model.
"""

from __future__ import annotations

import contextlib
import types
from collections import OrderedDict
from contextlib import contextmanager
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fl.lm.data import Batch, collate
from fl.lm.train import upcast

__all__ = ["lora_modules", "multi_lora", "train_clients"]


def lora_modules(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """name -> peft LoRA linear of every adapted layer (one active adapter each)."""
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for name, m in model.named_modules():
        if hasattr(m, "lora_A") and hasattr(m, "base_layer") and len(getattr(m, "lora_A", {})):
            out[name] = m
    return out


def _adapter(m: nn.Module) -> str:
    names = list(m.active_adapters) if hasattr(m, "active_adapters") else list(m.lora_A)
    if len(names) != 1:
        raise ValueError(f"multi-LoRA batching needs exactly one active adapter; got {names}.")
    return names[0]


def _multi_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    A, B, scale, n = self._fw_multi  # (C, r, d_in), (C, d_out, r), float, C
    out = self.base_layer(x, *args, **kwargs)  # the shared frozen base: once for all rows
    xs = x.reshape(n, -1, x.shape[-1]).to(A.dtype)  # (C, rows per client, d_in)
    delta = torch.bmm(torch.bmm(xs, A.transpose(1, 2)), B.transpose(1, 2))  # (C, rows, d_out)
    return out + (delta * scale).reshape(out.shape).to(out.dtype)


@contextmanager
def multi_lora(model: nn.Module, A: Mapping[str, torch.Tensor], B: Mapping[str, torch.Tensor]):
    """Within the block, every LoRA linear of ``model`` applies client c's tensors
    ``A[name][c]``, ``B[name][c]`` to the c-th of C equal slices of its input's rows."""
    mods = lora_modules(model)
    try:
        for name, m in mods.items():
            ad = _adapter(m)
            if float(getattr(m.lora_dropout[ad], "p", 0.0)) != 0.0:
                raise ValueError("multi-LoRA batching needs lora.dropout 0 (each client's dropout "
                                 "draws would differ from training alone). Fix: set lora.dropout: 0, "
                                 "or execution.batch_clients: false.")
            m._fw_multi = (A[name], B[name], float(m.scaling[ad]), A[name].shape[0])
            m.forward = types.MethodType(_multi_forward, m)
        yield mods
    finally:
        for m in mods.values():
            m.__dict__.pop("forward", None)
            m.__dict__.pop("_fw_multi", None)


def _names(model: nn.Module) -> dict[str, tuple[str, str]]:
    """module name -> (state name of its A, state name of its B), as in fl.lm.models.lora_state."""
    out = {}
    for name, m in lora_modules(model).items():
        ad = _adapter(m)
        out[name] = (f"{name}.lora_A.{ad}.weight", f"{name}.lora_B.{ad}.weight")
    return out


def _client_losses(logits_of, batch: Batch, n: int) -> torch.Tensor:
    """(C,) mean answer loss of each client's rows of ``batch`` (C equal slices)."""
    T = batch.input_ids.shape[1]
    keep = T - int(batch.target_pos[batch.target_mask].min())
    logits = logits_of(keep)  # (C*B, keep, V)
    rel = batch.target_pos - (T - keep)
    picked = logits.gather(1, rel.clamp(min=0).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (C*B, A, V)
    tok = F.cross_entropy(upcast(picked).flatten(0, 1), batch.target_ids.flatten(), reduction="none")
    tok = tok.view(batch.target_ids.shape) * batch.target_mask  # (C*B, A)
    per = tok.view(n, -1).sum(1) / batch.target_mask.view(n, -1).sum(1)  # (C,)
    return per


def _step_losses(model: nn.Module, task, idx: list[int], n: int, prefix) -> torch.Tensor:
    """(C,) mean answer loss of each client's slice of the batch ``idx`` (forward only)."""
    if prefix is not None:
        batch, hidden = prefix.rest_states(idx)  # after the shared head, run once per client
        batch = batch.to(hidden.device)
        h = prefix.upper_rest(hidden, batch.attention_mask, groups=n)

        def logits_of(keep):
            return prefix.head(prefix.norm(h[:, -keep:, :]))
    else:
        batch = collate(task, idx).to(next(model.parameters()).device)
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)

        def logits_of(keep):
            return lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=pos, use_cache=False, logits_to_keep=keep).logits
    return _client_losses(logits_of, batch, n)


def train_clients(model: nn.Module, task, starts: Sequence[Mapping[str, torch.Tensor]],
                  plans: Sequence[Sequence[Sequence[int]]], lr: float, weight_decay: float = 0.0,
                  prefix=None, forward_ctx=None) -> list[tuple["OrderedDict[str, torch.Tensor]", list[float]]]:
    """Train C clients at once: client c starts from adapter ``starts[c]`` and takes one
    AdamW step per batch of ``plans[c]`` (all plans: the same number of steps and batch size).

    Returns per client (trained adapter, step losses), as :func:`fl.lm.train.local_train` would
    give training each alone on the model with that adapter (to float tolerance).
    ``forward_ctx()`` wraps each forward pass and loss (e.g. :func:`fl.lm.device.autocast`).
    """
    n = len(starts)
    steps = {len(p) for p in plans}
    sizes = {len(b) for p in plans for b in p}
    if n == 0 or len(plans) != n or len(steps) != 1 or len(sizes) != 1:
        raise ValueError("train_clients needs one plan per client, all with the same number of "
                         "steps and the same batch size.")
    names = _names(model)
    params = dict(model.named_parameters())
    trainable = [k for k, p in params.items() if p.requires_grad]
    covered = {s for pair in names.values() for s in pair}
    if set(trainable) != covered:
        raise ValueError(f"train_clients trains LoRA A/B tensors only; also trainable: "
                         f"{sorted(set(trainable) - covered)[:3]}.")
    # the clients' tensors where and as the model holds its own (as set_lora_state copies them)
    A = {m: torch.stack([s[a] for s in starts]).to(params[a].device, params[a].dtype).requires_grad_(True)
         for m, (a, _) in names.items()}  # (C, r, d_in)
    B = {m: torch.stack([s[b] for s in starts]).to(params[b].device, params[b].dtype).requires_grad_(True)
         for m, (_, b) in names.items()}  # (C, d_out, r)
    opt = torch.optim.AdamW([*A.values(), *B.values()], lr=lr, weight_decay=weight_decay)
    losses: list[list[float]] = [[] for _ in range(n)]
    was_training = model.training
    model.train()
    try:
        with multi_lora(model, A, B):
            for s in range(steps.pop()):
                idx = [int(i) for p in plans for i in p[s]]  # client c's rows: the c-th slice
                with forward_ctx() if forward_ctx is not None else contextlib.nullcontext():
                    per = _step_losses(model, task, idx, n, prefix)  # (C,)
                opt.zero_grad(set_to_none=True)
                per.sum().backward()  # client c's tensors get the gradient of its own loss only
                opt.step()
                for c, v in enumerate(per.detach().tolist()):
                    losses[c].append(v)
    finally:
        model.train(was_training)
    out = []
    for c in range(n):
        state = OrderedDict()
        for m, (a, b) in names.items():
            state[a] = A[m][c].detach().to("cpu", copy=True)
            state[b] = B[m][c].detach().to("cpu", copy=True)
        out.append((OrderedDict((k, state[k]) for k in trainable), losses[c]))
    return out

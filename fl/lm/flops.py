"""Compute model: matmul FLOPs of a forward pass and of a LoRA training step.

Leading terms, with P the weights of the linear layers (output head included) and T the
tokens through them: a forward pass costs 2·P·T; a training step with a frozen base costs
about 4·P·T — forward, plus the input-gradient matmuls of the backward pass; the frozen
weights need no weight gradients (the "6·P·T" rule counts those too). Each LoRA pair
(rank r, d_in → d_out) adds 2·r·(d_in + d_out)·T forward and up to 4·r·(d_in + d_out)·T
backward (weight gradients of A and B, input gradients).

This module counts that exactly, per linear layer, from a :class:`FlopProfile` recorded by
one small probe forward pass (:func:`profile`): for each ``nn.Linear`` it records its size
and whether its input and its weight need gradients. Hence the exceptions to 4·P·T are
counted, not estimated: the first layer's q/k/v projections read the frozen embedding and
get no backward at all unless they are adapted; the output head may run on fewer
positions than the decoder (``head_tokens``: the loss needs logits at answer positions only).

Attention's own matmuls (Q·Kᵀ and P·V, 4·B·H·S²·d_head forward per layer over the full
S × S score matrix, and one 2·B·H·S²·d_head product per needed gradient dP, dV, dQ, dK) are
included when ``attention=True``. What is counted matches
``torch.utils.flop_counter.FlopCounterMode``: exactly, with eager attention; with SDPA on CPU
FlopCounterMode does not see the fused attention kernel, and ``attention=False`` matches it.
Element-wise work (norms, activations, softmax, optimiser) is not counted; it is a few
percent of the matmuls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LinearUse", "AttentionUse", "FlopProfile", "profile"]


@dataclass(frozen=True)
class LinearUse:
    """One linear layer as a training step uses it."""

    name: str
    d_in: int
    d_out: int
    input_grad: bool  # its input requires grad: the backward computes dX (2·d_in·d_out per token)
    weight_grad: bool  # its weight is trained: the backward computes dW (2·d_in·d_out per token)
    is_head: bool  # the output head (runs on ``head_tokens`` positions per sequence)
    is_lora: bool


@dataclass(frozen=True)
class AttentionUse:
    """One attention layer: heads, head size, and which of Q, K, V need gradients."""

    layer: int
    n_heads: int
    head_dim: int
    q_grad: bool
    k_grad: bool
    v_grad: bool


@dataclass(frozen=True)
class FlopProfile:
    """What a model's training step multiplies, recorded once by :func:`profile`."""

    linears: tuple[LinearUse, ...]
    attention: tuple[AttentionUse, ...]

    @property
    def base_params(self) -> int:
        """P: weights of the frozen linear layers, output head included."""
        return sum(l.d_in * l.d_out for l in self.linears if not l.is_lora)

    @property
    def lora_params(self) -> int:
        return sum(l.d_in * l.d_out for l in self.linears if l.is_lora)

    def forward(self, batch_size: int, seq_len: int, head_tokens: int | None = None,
                attention: bool = True) -> int:
        """Matmul FLOPs of one forward pass over ``batch_size × seq_len`` tokens.

        head_tokens: positions per sequence on which the output head runs (default all).
        """
        return self._count(batch_size, seq_len, head_tokens, attention, backward=False)

    def train_step(self, batch_size: int, seq_len: int, head_tokens: int | None = None,
                   attention: bool = True) -> int:
        """Matmul FLOPs of one forward + backward pass (optimiser not included)."""
        return self._count(batch_size, seq_len, head_tokens, attention, backward=True)

    def _count(self, B: int, S: int, head_tokens: int | None, attention: bool, backward: bool) -> int:
        head_tokens = S if head_tokens is None else min(int(head_tokens), S)
        total = 0
        for l in self.linears:
            tokens = B * (head_tokens if l.is_head else S)
            per_pass = 2 * l.d_in * l.d_out * tokens
            total += per_pass
            if backward:
                total += per_pass * (int(l.input_grad) + int(l.weight_grad))
        if attention:
            for a in self.attention:
                product = 2 * B * a.n_heads * S * S * a.head_dim  # one S×S×d_head matmul over heads
                total += 2 * product  # Q·Kᵀ and P·V
                if backward:
                    d_scores = a.q_grad or a.k_grad
                    total += product * (int(d_scores) + int(a.v_grad) + int(a.q_grad) + int(a.k_grad))
        return total


_LAYER = re.compile(r"layers\.(\d+)\.")


def profile(model: nn.Module) -> FlopProfile:
    """Record the linear layers and attention of ``model`` with one 4-token probe forward.

    Hooks on every ``nn.Linear`` note whether its input and output require grad; q/k/v
    projections (``*.layers.<i>.*.{q,k,v}_proj``, Llama-family names) give each layer's
    attention. A peft LoRA layer shows up as its frozen base layer plus its lora_A/lora_B.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    config = base.config
    n_heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
    uses: dict[str, tuple] = {}
    proj_grad: dict[tuple[int, str], bool] = {}
    handles = []

    def hook(name: str, module: nn.Linear):
        def fn(mod, args, output):
            if name in uses:  # a module called twice would need counting twice; none is
                raise RuntimeError(f"flops.profile: {name} ran twice in one forward pass.")
            uses[name] = (bool(args[0].requires_grad), bool(mod.weight.requires_grad))
            m = _LAYER.search(name)
            leaf = name.rsplit(".", 1)[-1]
            if m and leaf in ("q_proj", "k_proj", "v_proj"):
                proj_grad[(int(m.group(1)), leaf)] = bool(output.requires_grad)
        return fn

    names = {}
    for name, module in base.named_modules():
        if isinstance(module, nn.Linear):
            names[name] = module
            handles.append(module.register_forward_hook(hook(name, module)))
    # peft's LoRA wrapper is named like the projection; its output carries the adapter's grad
    for name, module in base.named_modules():
        if not isinstance(module, nn.Linear) and hasattr(module, "base_layer") and name.rsplit(".", 1)[-1] in (
            "q_proj", "k_proj", "v_proj"
        ):
            def wrap_fn(mod, args, output, name=name):
                m = _LAYER.search(name)
                if m:
                    proj_grad[(int(m.group(1)), name.rsplit(".", 1)[-1])] = bool(output.requires_grad)
            handles.append(module.register_forward_hook(wrap_fn))
    was_training = base.training
    try:
        base.eval()
        with torch.enable_grad():
            ids = torch.zeros((1, 4), dtype=torch.long)
            base(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        base.train(was_training)
    linears = []
    for name, module in names.items():
        if name not in uses:
            continue  # not used by the forward pass
        input_grad, weight_grad = uses[name]
        linears.append(LinearUse(
            name=name, d_in=module.in_features, d_out=module.out_features,
            input_grad=input_grad, weight_grad=weight_grad, is_head=module is head,
            is_lora=".lora_" in name,
        ))
    layers = sorted({layer for layer, _ in proj_grad})
    attention = tuple(
        AttentionUse(layer, n_heads, head_dim, proj_grad.get((layer, "q_proj"), False),
                     proj_grad.get((layer, "k_proj"), False), proj_grad.get((layer, "v_proj"), False))
        for layer in layers
    )
    return FlopProfile(tuple(linears), attention)

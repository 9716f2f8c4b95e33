"""The FLOP model against torch's FlopCounterMode on a tiny model whose head does not dominate."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fl.lm.data import Batch
from fl.lm.flops import profile
from fl.lm.models import add_lora, tiny_llama
from fl.lm.specs import LoraSpec
from fl.lm.train import answer_loss

ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _model(targets, attn):
    # vocab 512: layers are ~70 % of the matmuls, so errors in their terms would show
    model, _ = tiny_llama(vocab_size=512, n_layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128)
    model.set_attn_implementation(attn)
    return add_lora(model, LoraSpec(rank=4, target_modules=targets))


def _batch(B=3, T=24, A=3):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 512, (B, T), generator=g)
    target_pos = torch.arange(T - A - 1, T - 1).repeat(B, 1)
    return Batch(ids, torch.ones(B, T, dtype=torch.long), ids, target_pos, ids[:, -A:],
                 torch.ones(B, A, dtype=torch.bool))


def _counted(fn):
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


# Exact equality is the right tolerance: both sides count the same matmuls. With SDPA on CPU
# FlopCounterMode does not see the fused attention kernel, so attention=False matches it;
# with eager attention the score/value matmuls are visible and attention=True matches.
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ("gate_proj", "up_proj", "down_proj"), ("k_proj", "o_proj"), ALL])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_train_step_flops_match_flop_counter(targets, attn):
    model = _model(targets, attn)
    prof = profile(model)
    batch = _batch()
    B, T = batch.input_ids.shape
    A = batch.target_ids.shape[1]

    def step():
        answer_loss(model, batch).backward()

    assert prof.train_step(B, T, head_tokens=A + 1, attention=attn == "eager") == _counted(step)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_forward_flops_match_flop_counter(attn):
    model = _model(("q_proj", "v_proj"), attn)
    ids = _batch().input_ids
    with torch.no_grad():
        counted = _counted(lambda: model(input_ids=ids))
    assert profile(model).forward(*ids.shape, attention=attn == "eager") == counted


def test_leading_terms():
    """Without attention and with the head on every position: forward = 2·P·T + 2·L·T and a
    training step = 4·P·T + (LoRA terms) − (first layer's q/k/v backward, which reads the
    frozen embedding), with P base linear weights and L LoRA weights."""
    model = _model(ALL, "sdpa")
    prof = profile(model)
    B, T = 2, 16
    P, L = prof.base_params, prof.lora_params
    assert prof.forward(B, T, attention=False) == 2 * (P + L) * B * T
    step = prof.train_step(B, T, attention=False)
    first_qkv = sum(l.d_in * l.d_out for l in prof.linears if not l.is_lora and ".layers.0.self_attn." in l.name
                    and l.name.split(".")[-2] in ("q_proj", "k_proj", "v_proj"))
    assert first_qkv > 0
    assert step < 4 * P * B * T + 6 * L * B * T
    assert step == 4 * P * B * T - 2 * first_qkv * B * T + sum(
        2 * l.d_in * l.d_out * B * T * (1 + l.input_grad + l.weight_grad) for l in prof.linears if l.is_lora)


def test_lora_counts_from_profile():
    model = _model(("q_proj", "v_proj"), "sdpa")
    prof = profile(model)
    # q: 64→64, v: 64→32 (2 kv heads × 16), rank 4, 2 layers: r·(d_in + d_out) per matrix pair
    assert prof.lora_params == 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == prof.lora_params

"""NF4 quantisation (fl.algorithms.fedsoda.nf4): error bound, exact bytes, the NF4Linear module under LoRA."""

import math

import pytest
import torch

from fl.algorithms.fedsoda.nf4 import NF4_CODE, NF4_MAX_HALF_GAP, NF4Linear, dequantize_nf4, nf4_bytes, quantize_model, quantize_nf4


def test_code_book_is_qlora_nf4():
    assert NF4_CODE.numel() == 16 and NF4_CODE[0] == -1 and NF4_CODE[7] == 0 and NF4_CODE[15] == 1
    assert bool((NF4_CODE[1:] > NF4_CODE[:-1]).all())
    assert NF4_MAX_HALF_GAP == pytest.approx((1.0 - 0.6961928009986877) / 2)  # largest gap: -1 .. -0.696


@pytest.mark.parametrize("shape", [(64, 64), (70, 33), (5,), (3, 64, 2)])
def test_error_within_half_gap_times_block_absmax(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.05
    w.view(-1)[0] = 3.0  # an outlier: only its own block gets a coarse scale
    packed, absmax = quantize_nf4(w, 64, "fp32")
    back = dequantize_nf4(packed, absmax, shape, 64)
    assert back.shape == w.shape
    n = w.numel()
    blocks = torch.nn.functional.pad((back - w).abs().view(-1), (0, absmax.numel() * 64 - n)).view(-1, 64)
    bound = absmax[:, None] * NF4_MAX_HALF_GAP * (1 + 1e-6) + 1e-12
    assert bool((blocks <= bound).all())
    # each block's absmax value itself is represented exactly (code ±1)
    assert float(back.view(-1)[0]) == pytest.approx(3.0)
    # re-quantising the dequantised tensor gives the same codes (NF4 values are fixed points)
    p2, a2 = quantize_nf4(back, 64, "fp32")
    assert torch.equal(p2, packed) and torch.allclose(a2, absmax)


@pytest.mark.parametrize("numel,block,dtype,expected", [
    (4096, 64, "fp32", 2048 + 64 * 4),
    (4096, 64, "fp16", 2048 + 64 * 2),
    (70 * 33, 64, "fp32", 37 * 32 + 37 * 4),  # 2310 values -> 37 blocks, last one padded
    (5, 64, "fp32", 32 + 4),
])
def test_exact_byte_count(numel, block, dtype, expected):
    packed, absmax = quantize_nf4(torch.randn(numel), block, dtype)
    assert packed.dtype == torch.uint8
    assert packed.numel() + absmax.numel() * absmax.element_size() == expected == nf4_bytes(numel, block, dtype)


def test_zero_block_and_bad_options():
    packed, absmax = quantize_nf4(torch.zeros(128))
    assert float(absmax.abs().max()) == 0 and float(dequantize_nf4(packed, absmax, (128,)).abs().max()) == 0
    with pytest.raises(ValueError, match="block_size must be an even integer >= 2. Got 63"):
        quantize_nf4(torch.zeros(8), 63)
    with pytest.raises(ValueError, match="absmax_dtype must be 'fp32' or 'fp16'. Got 'int8'"):
        quantize_nf4(torch.zeros(8), 64, "int8")


def test_nf4_linear_holds_four_bits_and_matches_its_dequantised_weight():
    from fl.lm.models import bytes_resident

    lin = torch.nn.Linear(96, 40, bias=False)
    q = NF4Linear(lin)
    assert bytes_resident(q) == nf4_bytes(96 * 40) == 96 * 40 // 2 + 60 * 4
    x = torch.randn(3, 5, 96)
    assert torch.allclose(q(x), x @ q.dequantized_weight().T, atol=1e-6)
    assert (q(x) - lin(x)).abs().max() < 0.2 * (lin(x).abs().max())


def test_lora_trains_on_top_of_nf4(tiny_lora, task):
    from fl.lm.data import collate
    from fl.lm.models import lora_state
    from fl.lm.train import answer_loss

    names = quantize_model(tiny_lora, lambda name, lin: ".layers." in name)
    # q/v are LoRA wrappers (their base_layer quantised), k/o/gate/up/down plain: 7 per layer
    assert len(names) == 7 * 2 and any(n.endswith("q_proj") for n in names)
    assert not any(isinstance(m, torch.nn.Linear) and ".layers." in n and ".lora_" not in n
                   for n, m in tiny_lora.named_modules())
    before = lora_state(tiny_lora)
    batch = collate(task, [0, 1, 2, 3])
    tiny_lora.train()
    loss = answer_loss(tiny_lora, batch)
    loss.backward()
    grads = [p.grad for p in tiny_lora.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    assert lora_state(tiny_lora).keys() == before.keys()
    assert math.isfinite(loss.item())

import pytest
import torch

from fl.core.payload import DTYPE_BITS, SCALE_BITS, LoraPayload, payload_bits


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(8, 64, generator=g),
        "b": torch.randn(64, 8, generator=g) * 1e-3,
        "c": torch.randn(3, generator=g),
        "zero": torch.zeros(5, 7),
    }


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "int8"])
@pytest.mark.parametrize("header_bits", [0, 256])
def test_bits_equal_sum_of_tensor_sizes(dtype, header_bits):
    state = _state()
    payload = LoraPayload.encode(state, dtype, header_bits=header_bits)
    n_values = sum(t.numel() for t in state.values())
    scales = SCALE_BITS * len(state) if dtype == "int8" else 0
    expected = n_values * DTYPE_BITS[dtype] + scales + header_bits
    assert payload.bits == expected
    assert payload.bits == payload_bits({k: tuple(v.shape) for k, v in state.items()}, dtype, header_bits)
    # what is stored is what the figure claims: element sizes of the encoded tensors
    stored = sum(t.numel() * t.element_size() * 8 for t in payload.tensors.values())
    assert stored + scales + header_bits == payload.bits


def test_int8_round_trip_error_bound():
    state = _state()
    decoded = LoraPayload.encode(state, "int8").decode()
    for name, x in state.items():
        absmax = x.abs().max()
        err = (decoded[name] - x).abs().max()
        # rounding to the nearest of 255 levels: at most half a step (+ float slack)
        assert err <= absmax / 127 / 2 * (1 + 1e-5) + 1e-12, name
        if absmax > 0:
            assert torch.isclose(decoded[name].abs().max(), absmax, rtol=1e-6)
    assert torch.equal(decoded["zero"], state["zero"])


@pytest.mark.parametrize("dtype, atol_rel", [("fp32", 0.0), ("fp16", 2**-11), ("bf16", 2**-8)])
def test_float_round_trip(dtype, atol_rel):
    state = _state()
    decoded = LoraPayload.encode(state, dtype).decode()
    for name, x in state.items():
        assert decoded[name].dtype == torch.float32
        assert torch.allclose(decoded[name], x, rtol=atol_rel, atol=1e-7 if dtype == "fp16" else 0.0)
    if dtype != "fp32":  # quantisation error is real
        assert any(not torch.equal(decoded[n], state[n]) for n in state)


def test_receiver_gets_a_copy():
    state = _state()
    payload = LoraPayload.encode(state, "fp32")
    state["a"].add_(1.0)
    assert not torch.equal(payload.decode()["a"], state["a"])


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match=r"one of \['bf16', 'fp16', 'fp32', 'int8'\]. Got 'fp8'"):
        LoraPayload.encode(_state(), "fp8")

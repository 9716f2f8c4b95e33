import pytest
import torch

from fl.core.aggregation import fedavg


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"lora_A": torch.randn(4, 16, generator=g), "lora_B": torch.randn(16, 4, generator=g)}


@pytest.mark.parametrize("weights", [[1, 1, 1], [3, 17, 250], [0.1, 0.7, 1e-3]])
def test_fedavg_of_identical_clients_is_identity(weights):
    s = _state(0)
    out = fedavg([s, {k: v.clone() for k, v in s.items()}, s], weights)
    for k in s:
        assert torch.equal(out[k], s[k])


def test_weighted_mean_hand_example():
    a = {"w": torch.tensor([1.0, 2.0, -4.0])}
    b = {"w": torch.tensor([3.0, 6.0, 4.0])}
    out = fedavg([a, b], [1, 3])  # (1·a + 3·b) / 4
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0, 2.0]))
    assert out["w"].dtype == torch.float32


def test_zero_weight_client_has_no_influence():
    a, b = _state(0), _state(1)
    out = fedavg([a, b], [5, 0])
    assert all(torch.equal(out[k], a[k]) for k in a)


@pytest.mark.parametrize("states, weights, match", [
    ([], [], "at least one state"),
    ([{"w": torch.ones(2)}], [1, 2], "1 states but 2 weights"),
    ([{"w": torch.ones(2)}], [-1], "must be >= 0"),
    ([{"w": torch.ones(2)}, {"v": torch.ones(2)}], [1, 1], "different tensor names"),
    ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], [1, 1], "shapes"),
])
def test_errors(states, weights, match):
    with pytest.raises((ValueError, KeyError), match=match):
        fedavg(states, weights)

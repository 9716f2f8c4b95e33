"""Similarity group pruning (fl.algorithms.fedsoda.sgp): grouping rules and a model with duplicated layers."""

import json

import numpy as np
import pytest
import torch


def _duplicated_model(pattern, hidden=64, intermediate=128):
    """A tiny Llama whose layers with the same letter in ``pattern`` have identical weights.

    Each distinct layer adds a large vector along its own direction (attention off, an MLP
    whose down projection has rank one), ten times larger than everything before it: the
    output of a run of identical layers keeps pointing the same way (cosine ~1 between
    consecutive copies), while a new letter turns it (cosine ~0).
    """
    from fl.lm.models import tiny_llama

    model, _ = tiny_llama(n_layers=len(pattern), hidden=hidden, intermediate=intermediate, seed=0)
    g = torch.Generator().manual_seed(0)
    letters = sorted(set(pattern), key=pattern.index)
    directions = torch.linalg.qr(torch.randn(hidden, len(letters), generator=g))[0].T  # orthonormal rows
    weights = {}
    for k, letter in enumerate(letters):
        gate = torch.randn(intermediate, hidden, generator=g)
        down = (10.0 ** (k + 1)) * directions[k][:, None] * torch.ones(1, intermediate) / intermediate
        weights[letter] = (gate, down)
    with torch.no_grad():
        for layer, letter in zip(model.model.layers, pattern):
            gate, down = weights[letter]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.gate_proj.weight.copy_(gate)
            layer.mlp.up_proj.weight.copy_(gate)  # silu(z)·z >= -0.28: the MLP output keeps its sign
            layer.mlp.down_proj.weight.copy_(down)
    return model


@pytest.fixture(scope="module")
def duplicated(task):
    from fl.algorithms.fedsoda.sgp import layer_representations

    model = _duplicated_model("FAAABBL")  # first, 3 copies of A, 2 of B, last
    return model, layer_representations(model, task, list(range(6)), batch_size=3)


def test_keeps_one_layer_of_each_duplicate_group(duplicated):
    from fl.algorithms.fedsoda.sgp import group_layers, similarity_matrix

    _, reps = duplicated
    sim = similarity_matrix(reps, "cosine")
    assert sim.shape == (8, 8) and np.allclose(np.diag(sim), 1.0, atol=1e-4)
    for kept, groups, _ in (group_layers(sim, n_keep=4), group_layers(sim, threshold=0.9)):
        assert groups == ((0,), (1, 2, 3), (4, 5), (6,))
        assert kept[0] == 0 and kept[-1] == 6
        assert kept[1] in (1, 2, 3) and kept[2] in (4, 5)
        # the most important layer is the one that turns the representation: the first copy
        assert kept == (0, 1, 4, 6)


def test_linear_cka_is_rotation_and_scale_invariant():
    from fl.algorithms.fedsoda.sgp import similarity_matrix

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g)
    rot = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    sim = similarity_matrix([x, 3.0 * x @ rot + 1.0, torch.randn(300, 16, generator=g)], "cka")
    assert sim[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert sim[0, 2] < 0.2 and sim[2, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="similarity must be 'cosine' or 'cka'. Got 'l2'"):
        similarity_matrix([x], "l2")


def test_first_and_last_always_kept_and_group_count():
    from fl.algorithms.fedsoda.sgp import group_layers

    rng = np.random.default_rng(0)
    for L in (3, 5, 9, 12):
        s = rng.uniform(0, 1, (L + 1, L + 1))
        s = (s + s.T) / 2
        np.fill_diagonal(s, 1.0)
        for n_keep in range(2, L + 1):
            kept, groups, _ = group_layers(s, n_keep=n_keep)
            assert kept[0] == 0 and kept[-1] == L - 1 and len(kept) == n_keep
            assert list(kept) == sorted(set(kept))
            assert [l for g in groups for l in g] == list(range(L))  # contiguous cover
            assert all(k in g for k, g in zip(kept, groups))
    with pytest.raises(ValueError, match=r"n_keep must be in \[2, 5\] for this 5-layer model. Got 6"):
        group_layers(np.eye(6), n_keep=6)
    with pytest.raises(ValueError, match="exactly one of n_keep and threshold"):
        group_layers(np.eye(6))


def test_sgp_result_saves_map_and_plot(duplicated, task, tmp_path):
    from fl.algorithms.fedsoda.sgp import similarity_group_pruning

    model, _ = duplicated
    res = similarity_group_pruning(model, task, list(range(6)), n_keep=4, batch_size=3)
    paths = res.save(tmp_path)
    data = json.loads((tmp_path / "sgp_map.json").read_text())
    assert data["kept"] == [0, 1, 4, 6] and data["kept_to_original"] == {"0": 0, "1": 1, "2": 4, "3": 6}
    assert data["groups"] == [[0], [1, 2, 3], [4, 5], [6]]
    assert res.group_ends == (0, 3, 5, 6)
    assert (tmp_path / "sgp_similarity.png").stat().st_size > 1000 and len(paths) == 2

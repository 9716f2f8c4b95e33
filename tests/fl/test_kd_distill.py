"""fl.algorithms.kd_topk.distill and fl.algorithms.kd_topk.topk_payload: aggregation rules on hand-worked examples, the KD loss
against full-logit KD, the projection term, and exact message sizes for every dtype."""

import math

import pytest
import torch

from fl.algorithms.kd_topk.distill import (SparseLogits, Teacher, adaptive, build_teacher, full_kd_loss, kd_loss, mass_k,
                        message_probs, prob_tail, projection_loss, top_k, zero_pad)
from fl.algorithms.kd_topk.topk_payload import TopKPayload, count_bits, index_bits, topk_bits

NEG = -math.inf


def _msg(rows):
    """A message from per-position lists of (index, value); shorter rows are padded."""
    K = max(len(r) for r in rows)
    values = torch.zeros(len(rows), K)
    indices = torch.zeros(len(rows), K, dtype=torch.long)
    mask = torch.zeros(len(rows), K, dtype=torch.bool)
    for t, row in enumerate(rows):
        used = {i for i, _ in row}
        free = [j for j in range(100) if j not in used]
        for j, (i, v) in enumerate(row):
            values[t, j], indices[t, j], mask[t, j] = v, i, True
        for j in range(len(row), K):  # padding: distinct unused indices, masked out
            indices[t, j] = free[j - len(row)]
    return SparseLogits(values, indices, mask)


# Three clients, V = 6, two positions. Position 0 is the worked example; position 1 checks that
# positions are aggregated independently.
A = _msg([[(0, 4.0), (1, 2.0), (2, 1.0)], [(5, 1.0), (4, 0.5), (3, 0.0)]])  # k = 3
B = _msg([[(1, 3.0), (3, -1.0)], [(5, 3.0), (0, -2.0)]])  # k = 2
C = _msg([[(0, 2.0)], [(4, 1.0)]])  # k = 1
W = [1.0, 1.0, 2.0]  # sample counts


def test_adaptive_aggregation_hand_worked():
    """Position 0, weights 1, 1, 2: index 0 reported by A (4) and C (2): (4·1 + 2·2)/3 = 8/3;
    index 1 by A (2) and B (3): 5/2; index 2 by A only: 1; index 3 by B only: −1; indices
    4, 5 by nobody: −inf. Position 1: index 5: (1 + 3)/2 = 2; 4: (0.5 + 1·2)/3 = 5/6; 3: 0;
    0: −2."""
    out = adaptive([A, B, C], W, 6)
    expected = torch.tensor([[8 / 3, 5 / 2, 1.0, -1.0, NEG, NEG],
                             [-2.0, NEG, NEG, 0.0, 5 / 6, 2.0]])
    torch.testing.assert_close(out, expected)
    # weights ∝ k (A 3, B 2, C 1): index 0: (4·3 + 2·1)/4 = 3.5; index 1: (2·3 + 3·2)/5 = 2.4
    k_weights = [m.k_per_token.double() for m in (A, B, C)]
    out_k = adaptive([A, B, C], k_weights, 6)
    torch.testing.assert_close(out_k[0, :4], torch.tensor([3.5, 2.4, 1.0, -1.0]))
    teacher = build_teacher("adaptive", [A, B, C], W, 6, temperature=1.0)
    q = torch.softmax(torch.tensor([8 / 3, 5 / 2, 1.0, -1.0]), 0)
    torch.testing.assert_close(teacher.probs()[0], torch.cat([q, torch.zeros(2)]))
    assert teacher.support[0].tolist() == [True] * 4 + [False] * 2 and teacher.tail_log_prob is None


def test_zero_pad_hand_worked():
    """Same messages, total weight 4: index 0: (4 + 0 + 2·2)/4 = 2; 1: (2 + 3)/4 = 1.25;
    2: 1/4; 3: −1/4; 4, 5: 0 — the fake zeros outrank the real −1/4 of index 3. Position 1:
    5: (1 + 3)/4 = 1; 4: (0.5 + 1·2)/4 = 0.625; 0: −2/4."""
    out = zero_pad([A, B, C], W, 6)
    torch.testing.assert_close(out[0], torch.tensor([2.0, 1.25, 0.25, -0.25, 0.0, 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([-0.5, 0.0, 0.0, 0.0, 0.625, 1.0]))
    teacher = build_teacher("zero_pad", [A, B, C], W, 6)
    assert bool(teacher.support.all())
    assert teacher.probs()[0, 4] > teacher.probs()[0, 3]


def test_prob_tail_hand_worked():
    """Probabilities A: {0: .5, 1: .2, 2: .1} tail .2; B: {1: .6, 3: .1} tail .3; C: {0: .7}
    tail .3; weights 1, 1, 2. Entries over reporters: 0: (.5 + 1.4)/3 = 19/30; 1: .4; 2: .1;
    3: .1; tail over all: (.2 + .3 + .6)/4 = .275. Sum 181/120 → 76, 48, 12, 12, 33 (/181)."""
    lp = lambda rows: _msg([[(i, math.log(p)) for i, p in r] for r in rows])  # noqa: E731
    a, b, c = lp([[(0, .5), (1, .2), (2, .1)]]), lp([[(1, .6), (3, .1)]]), lp([[(0, .7)]])
    out = prob_tail([a, b, c], W, 6)
    torch.testing.assert_close(out.probs[0], torch.tensor([76, 48, 12, 12, 0, 0], dtype=torch.float64) / 181)
    torch.testing.assert_close(out.tail, torch.tensor([33 / 181], dtype=torch.float64))
    assert out.support[0].tolist() == [True] * 4 + [False] * 2
    teacher = build_teacher("prob_tail", [a, b, c], W, 6)
    torch.testing.assert_close(teacher.tail_log_prob.exp(), torch.tensor([33 / 181]))


def test_kd_loss_with_tail_matches_a_loop_oracle():
    """KL over the buckets (support entries + tail), with the student's full softmax."""
    torch.manual_seed(0)
    lp = lambda rows: _msg([[(i, math.log(p)) for i, p in r] for r in rows])  # noqa: E731
    a, b = lp([[(0, .5), (1, .2)], [(2, .9)]]), lp([[(1, .6), (3, .1)], [(2, .5), (5, .3)]])
    teacher = build_teacher("prob_tail", [a, b], [1.0, 3.0], 6)
    s = torch.randn(2, 6)
    got = kd_loss(s, teacher)
    p = torch.softmax(s, -1)
    for t in range(2):
        sup = [j for j in range(6) if teacher.support[t, j]]
        q = {j: float(teacher.probs()[t, j]) for j in sup}
        qt = float(teacher.tail_log_prob[t].exp())
        pt = 1.0 - sum(float(p[t, j]) for j in sup)
        ref = sum(q[j] * math.log(q[j] / float(p[t, j])) for j in sup) + qt * math.log(qt / pt)
        assert float(got[t]) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("aggregation, temperature", [
    ("adaptive", 1.0), ("adaptive", 2.0), ("zero_pad", 1.0), ("zero_pad", 2.0),
    ("prob_tail", 1.0),  # prob_tail applies τ to buckets: exact at τ = 1
])
def test_k_equal_v_is_full_logit_kd(aggregation, temperature):
    """With k = V every rule gives the full teacher softmax(t/τ) and the full KL, also after
    the message travels (dense fp32 payload)."""
    torch.manual_seed(1)
    T, V = 4, 50
    teacher_logits = torch.randn(T, V) * 3
    student = torch.randn(T, V) * 3
    scores = torch.log_softmax(teacher_logits, -1) if aggregation == "prob_tail" else teacher_logits
    payload = TopKPayload.encode(top_k(scores, V), V, "fp32")
    assert payload.indices is None and payload.bits == T * V * 32  # dense: no indices
    msg, _ = payload.decode()
    teacher = build_teacher(aggregation, [msg, msg], [1.0, 3.0], V, temperature)
    torch.testing.assert_close(teacher.log_probs, torch.log_softmax(teacher_logits / temperature, -1))
    torch.testing.assert_close(kd_loss(student, teacher, temperature),
                               full_kd_loss(student, teacher_logits, temperature))


@pytest.mark.parametrize("aggregation", ["adaptive", "zero_pad"])
def test_dense_messages_aggregate_exactly_as_scattered_ones(aggregation):
    """k = V comes back from top_k in vocabulary order (no sort) and aggregates without a
    scatter; the result is bit-for-bit what the same entries in another order give through the
    scatter, alone and mixed with a sparse message."""
    torch.manual_seed(4)
    T, V = 5, 40
    scores = [torch.randn(T, V) * 2 for _ in range(3)]
    dense = top_k(scores[0], V)
    assert torch.equal(dense.indices, torch.arange(V).expand(T, V)) and torch.equal(dense.values, scores[0])
    perm = torch.stack([torch.randperm(V) for _ in range(T)])  # the same entries, shuffled per row
    shuffled = SparseLogits(scores[0].gather(1, perm), perm, torch.ones(T, V, dtype=torch.bool))
    other = top_k(scores[1], V)
    sparse = top_k(scores[2], 7)
    w = [2.0, torch.rand(T).double() + 0.5, 1.0]
    for tail in ([other], [other, sparse]):
        fast = build_teacher(aggregation, [dense, *tail], w[:1 + len(tail)], V)
        slow = build_teacher(aggregation, [shuffled, *tail], w[:1 + len(tail)], V)
        assert torch.equal(fast.log_probs, slow.log_probs)
    # the dense payload is the same whichever order the entries came in
    a = TopKPayload.encode(dense, V, "fp16")
    b = TopKPayload.encode(shuffled, V, "fp16")
    assert a.indices is None and torch.equal(a.values, b.values)


def test_kd_loss_restricted_to_support_ignores_the_rest():
    """Without a tail, student logits outside the teacher's support do not matter."""
    torch.manual_seed(2)
    teacher = build_teacher("adaptive", [A, B, C], W, 6)
    s = torch.randn(2, 6)
    s2 = s.masked_fill(~teacher.support, 50.0)
    torch.testing.assert_close(kd_loss(s, teacher), kd_loss(s2, teacher))
    assert (kd_loss(s, teacher) > 0).all()
    # a student equal to the teacher on the support has zero loss
    same = torch.where(teacher.support, teacher.log_probs, torch.full_like(s, 7.0))
    torch.testing.assert_close(kd_loss(same, teacher), torch.zeros(2), atol=1e-6, rtol=0)


def test_projection_term_is_zero_when_projections_agree():
    torch.manual_seed(3)
    p = torch.randn(5, 4)
    assert projection_loss(p, p.clone()).abs().max() == 0
    assert projection_loss(p, 3.0 * p).abs().max() < 1e-6  # normalised: only directions count
    assert projection_loss(p, 3.0 * p, normalise=False).min() > 0
    assert projection_loss(p, -p).min() == pytest.approx(4.0)  # opposite unit vectors


def test_top_k_per_position_and_mass():
    scores = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.25, 0.25, 0.25, 0.25]]))
    msg = top_k(scores, torch.tensor([1, 3]))
    assert msg.k_per_token.tolist() == [1, 3] and msg.indices[0, 0] == 0
    probs = message_probs(top_k(scores, 4), "logprobs")
    assert mass_k(probs, 0.9).tolist() == [2, 4]
    assert mass_k(probs[:, :2], 0.9).tolist() == [2, 0]  # row 1 never reaches 0.9 in 2 entries
    rel = message_probs(top_k(scores, 2), "logits")  # relative to the entries sent
    torch.testing.assert_close(rel[0], torch.tensor([2 / 3, 1 / 3]))


# --- exact bits ----------------------------------------------------------------------------------

BV = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8}


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "int8"])
def test_payload_bits_formula_every_dtype(dtype):
    """T = 3 positions, V = 50 (b_i = 6), k = 4, r = 2, header 40."""
    torch.manual_seed(4)
    T, V, k, r, header = 3, 50, 4, 2, 40
    bv, scale = BV[dtype], (32 if dtype == "int8" else 0)
    assert index_bits(V) == 6 and index_bits(49152) == 16 and count_bits(4) == 3
    logits = torch.randn(T, V)
    proj = torch.randn(T, r)
    sparse = TopKPayload.encode(top_k(logits, k), V, dtype, proj=proj, header_bits=header)
    assert sparse.bits == T * k * (bv + 6) + T * scale + T * (r * bv + scale) + header
    assert sparse.bits == topk_bits(T, k, V, dtype, r, header)
    dense = TopKPayload.encode(top_k(logits, V), V, dtype)
    assert dense.bits == T * V * bv + T * scale == topk_bits(T, V, V, dtype)
    counts = torch.tensor([1, 4, 2])
    var = TopKPayload.encode(top_k(logits, counts), V, dtype, variable=True, counts_bits=count_bits(4))
    assert var.bits == 7 * (bv + 6) + T * 3 + T * scale
    assert var.bits == topk_bits(T, None, V, dtype, counts_total=7, counts_bits=3)
    # what arrives is what was sent, up to the dtype's rounding
    msg, p = sparse.decode()
    ref = top_k(logits, k)
    tol = {"fp32": 0.0, "fp16": 1e-3, "bf16": 1e-2, "int8": 0.02}[dtype]
    assert torch.equal(msg.indices, ref.indices)
    assert (msg.values - ref.values).abs().max() <= tol * ref.values.abs().max() + 1e-12
    assert (p - proj).abs().max() <= tol * proj.abs().max() + 1e-12
    got, _ = var.decode()
    assert got.k_per_token.tolist() == [1, 4, 2]


def test_uniform_payload_rejects_ragged_messages():
    with pytest.raises(ValueError, match="uniform-k message must have every entry valid"):
        TopKPayload.encode(top_k(torch.randn(2, 10), torch.tensor([1, 2])), 10, "fp16")
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        top_k(torch.randn(2, 10), 11)


def test_teacher_type():
    t = build_teacher("adaptive", [A], [1.0], 6)
    assert isinstance(t, Teacher) and t.log_probs.shape == (2, 6)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        build_teacher("median", [A], [1.0], 6)

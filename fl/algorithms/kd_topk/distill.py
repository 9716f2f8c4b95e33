"""Distillation from sparse (top-k) logits: aggregation rules and losses, as pure functions.

Shapes: T token positions of the public batch that count (see ``kd_topk``'s ``positions``),
V the vocabulary, K the most entries any position of a message carries, r the projection
rank. Every function works on whole messages at once (no loop over tokens or entries), on
the device its inputs are on (``kd_topk`` aggregates on the CPU, where messages arrive, and
moves the teacher to its model's device: :meth:`Teacher.to`).

A message is a :class:`SparseLogits`: per position, up to K ``(index, value)`` pairs; a
``mask`` marks the valid ones, so that positions may carry different numbers of entries
(``adaptive_mass``). Values are raw logits or log-probabilities (``log_softmax`` over the
whole vocabulary at temperature 1), as the sender chose.

Aggregation (``kd_topk`` option ``aggregation``), each a function of the messages of one
round and one weight per message (a float, or a (T,) tensor when weights are per position):

- :func:`zero_pad`: scatter each message into a dense V-vector with zeros elsewhere and
  average over *all* messages. The zeros are fake evidence (the baseline).
- :func:`adaptive`: per position, on the union of reported indices, average each entry
  over the messages that reported it; entries nobody reported are ``-inf``, i.e. masked
  out of the teacher's softmax [P1] ("Communication-Aware Knowledge Distillation for
  Federated LLM Fine-Tuning over Wireless Networks", arXiv:2509.01750).
- :func:`prob_tail`: per message, probabilities of its entries (values must be
  log-probabilities) and the residual mass in one tail bucket; average every entry over
  its reporters and the tail over all messages; renormalise.

:func:`build_teacher` turns either result into a :class:`Teacher` at a temperature, and
:func:`kd_loss` is KL(teacher ‖ student) restricted to the teacher's support (plus the tail
bucket for ``prob_tail``). :func:`projection_loss` is the hidden-projection term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "SparseLogits",
    "Teacher",
    "top_k",
    "message_probs",
    "mass_k",
    "zero_pad",
    "adaptive",
    "prob_tail",
    "TailProbs",
    "AGGREGATIONS",
    "build_teacher",
    "kd_loss",
    "full_kd_loss",
    "projection_matrix",
    "projection_loss",
]

Weight = Union[float, torch.Tensor]  # a scalar per message, or (T,) per position


@dataclass(frozen=True)
class SparseLogits:
    """Up to K (index, value) pairs per position: what one top-k message carries.

    values: (T, K) float32. indices: (T, K) int64, distinct within a row.
    mask: (T, K) bool, the valid entries (row t holds ``mask[t].sum()`` of them).
    """

    values: torch.Tensor
    indices: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if not (self.values.shape == self.indices.shape == self.mask.shape) or self.values.dim() != 2:
            raise ValueError(
                f"SparseLogits needs values, indices and mask of one (T, K) shape. Got "
                f"{tuple(self.values.shape)}, {tuple(self.indices.shape)}, {tuple(self.mask.shape)}."
            )

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[0])

    @property
    def k_per_token(self) -> torch.Tensor:
        """(T,) int64: entries carried per position."""
        return self.mask.sum(1)


@dataclass(frozen=True)
class Teacher:
    """A teacher distribution per position, over its support (and maybe a tail bucket).

    log_probs: (T, V) float32, ``-inf`` outside the support.
    tail_log_prob: (T,) float32 log-mass of everything outside the support (``-inf`` where
        none), or None when the teacher is renormalised over its support (no tail bucket).
    """

    log_probs: torch.Tensor
    tail_log_prob: torch.Tensor | None = None

    @property
    def support(self) -> torch.Tensor:
        """(T, V) bool."""
        return torch.isfinite(self.log_probs)

    def probs(self) -> torch.Tensor:
        """(T, V) float32 probabilities (0 outside the support)."""
        return self.log_probs.exp()

    def to(self, device: torch.device | str) -> "Teacher":
        """This teacher on ``device`` (itself when it is there already): teachers are
        aggregated on the CPU and distilled into a model wherever the model is."""
        if self.log_probs.device == torch.device(device):
            return self
        tail = None if self.tail_log_prob is None else self.tail_log_prob.to(device)
        return Teacher(self.log_probs.to(device), tail)


# --- what clients send -----------------------------------------------------------------------


def top_k(scores: torch.Tensor, k: int | torch.Tensor) -> SparseLogits:
    """The k largest entries of every row of ``scores`` (T, V), largest first.

    k: one int for every row, or a (T,) int tensor (each row keeps its own k; the message is
    padded to the largest and ``mask`` marks the valid entries). k = V keeps everything.
    The message is on ``scores``' device. k = V (an int) keeps every entry in vocabulary
    order (there is nothing to select, and sorting 49,152 entries per row costs more than the
    rest of the encoding): the same entries, so every aggregate and payload is the same.
    """
    T, V = scores.shape
    if isinstance(k, torch.Tensor):
        k = k.to(scores.device, torch.int64)
        if k.shape != (T,) or int(k.min()) < 1 or int(k.max()) > V:
            raise ValueError(f"top_k: per-row k must be (T,)=({T},) ints in [1, {V}]. Got {k.tolist()} instead.")
        k_max = int(k.max())
        values, indices = scores.float().topk(k_max, dim=-1)  # (T, k_max), sorted
        mask = torch.arange(k_max, device=scores.device)[None, :] < k[:, None]
        values = values.masked_fill(~mask, 0.0)
        return SparseLogits(values, indices, mask)
    if not 1 <= int(k) <= V:
        raise ValueError(f"top_k: k must be in [1, {V}]. Got {k!r} instead.")
    if int(k) == V:
        values = scores.float()
        indices = torch.arange(V, device=scores.device).expand(T, V)
        return SparseLogits(values, indices, torch.ones(T, V, dtype=torch.bool, device=scores.device))
    values, indices = scores.float().topk(int(k), dim=-1)
    return SparseLogits(values, indices, torch.ones_like(indices, dtype=torch.bool))


def message_probs(msg: SparseLogits, values: str) -> torch.Tensor:
    """(T, K) probabilities of a message's entries (0 where masked).

    values: ``"logprobs"`` (entries are log-probabilities: their exp, which sums to at most
    1) or ``"logits"`` (the message does not carry the normaliser: softmax over the entries).
    """
    if values == "logprobs":
        return msg.values.exp() * msg.mask
    if values == "logits":
        return torch.softmax(msg.values.masked_fill(~msg.mask, -torch.inf), dim=-1)
    raise ValueError(f"values must be 'logits' or 'logprobs'. Got {values!r} instead.")


def mass_k(probs: torch.Tensor, target: float) -> torch.Tensor:
    """(T,) int64: per row of (T, K) probabilities (any order), the smallest number of
    entries whose mass reaches ``target``; 0 where the row never reaches it."""
    if not 0 < target <= 1:
        raise ValueError(f"mass target must be in (0, 1]. Got {target!r} instead.")
    cum = probs.double().sort(-1, descending=True).values.cumsum(-1)  # (T, K), largest first
    reached = cum >= target - 1e-12
    first = reached.to(torch.int64).argmax(-1) + 1  # (T,) position of the first True, 1-based
    return torch.where(reached.any(-1), first, torch.zeros_like(first))


# --- aggregation rules -------------------------------------------------------------------------


def _check(messages: Sequence[SparseLogits], weights: Sequence[Weight], vocab_size: int) -> int:
    if len(messages) == 0:
        raise ValueError("Aggregation needs at least one message.")
    if len(weights) != len(messages):
        raise ValueError(f"Aggregation: {len(messages)} messages but {len(weights)} weights.")
    T = messages[0].n_tokens
    for i, m in enumerate(messages):
        if m.n_tokens != T:
            raise ValueError(f"Aggregation: message {i} covers {m.n_tokens} positions, message 0 covers {T}.")
        if m.indices.numel() and (int(m.indices.min()) < 0 or int(m.indices.max()) >= vocab_size):
            raise ValueError(f"Aggregation: message {i} has indices outside [0, {vocab_size}).")
    for w in weights:
        w = torch.as_tensor(w, dtype=torch.float64)
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"Aggregation weights must be finite and >= 0. Got {w.tolist()} instead.")
    return T


def _dense(m: SparseLogits, vocab_size: int) -> bool:
    """The message reports every entry, entry j at column j (a k = V message as decoded, or
    as :func:`top_k` returns it): aggregations add its values without a scatter."""
    T, K = m.indices.shape
    if K != vocab_size or not bool(m.mask.all()):
        return False
    ar = torch.arange(K, device=m.indices.device)
    return bool((m.indices == ar).all())


def _col(w: Weight, T: int, device: torch.device) -> torch.Tensor:
    """A weight as a (T, 1) float64 column on ``device``."""
    return torch.as_tensor(w, dtype=torch.float64, device=device).expand(T).reshape(T, 1)


def zero_pad(messages: Sequence[SparseLogits], weights: Sequence[Weight], vocab_size: int) -> torch.Tensor:
    """(T, V) float32: the weighted mean over all messages of their dense V-vectors, with
    zeros where a message reported nothing (the zero-padding baseline; support = all V)."""
    T = _check(messages, weights, vocab_size)
    dev = messages[0].values.device
    num = torch.zeros(T, vocab_size, dtype=torch.float64, device=dev)
    den = torch.zeros(T, 1, dtype=torch.float64, device=dev)
    for m, w in zip(messages, weights):
        wc = _col(w, T, dev)
        if _dense(m, vocab_size):  # the same sums as the scatter, without it
            num += wc * m.values.double()
        else:
            num.scatter_add_(1, m.indices, wc * (m.values.double() * m.mask))
        den += wc
    if not (den > 0).all():
        raise ValueError("zero_pad: the weights of some position sum to 0.")
    return (num / den).float()


def adaptive(messages: Sequence[SparseLogits], weights: Sequence[Weight], vocab_size: int) -> torch.Tensor:
    """(T, V) float32: per entry, the weighted mean over the messages that reported it;
    ``-inf`` where none did (masked out of the teacher's softmax) [P1]."""
    T = _check(messages, weights, vocab_size)
    dev = messages[0].values.device
    num = torch.zeros(T, vocab_size, dtype=torch.float64, device=dev)
    den = torch.zeros(T, vocab_size, dtype=torch.float64, device=dev)
    for m, w in zip(messages, weights):
        if _dense(m, vocab_size):  # every entry reported, in vocabulary order: no scatter
            wc = _col(w, T, dev)
            num += wc * m.values.double()
            den += wc
            continue
        wm = _col(w, T, dev) * m.mask  # (T, K) weight of each valid entry
        num.scatter_add_(1, m.indices, wm * m.values.double())
        den.scatter_add_(1, m.indices, wm)
    if all(_dense(m, vocab_size) for m in messages):  # every entry seen: the weighted mean
        return (num / den).float()
    out = torch.full((T, vocab_size), -torch.inf, dtype=torch.float64, device=dev)
    seen = den > 0
    out[seen] = num[seen] / den[seen]
    return out.float()


@dataclass(frozen=True)
class TailProbs:
    """The result of :func:`prob_tail`: probs (T, V) float64, 0 outside ``support`` (T, V)
    bool; tail (T,) float64 mass of the tail bucket; each row sums to 1."""

    probs: torch.Tensor
    support: torch.Tensor
    tail: torch.Tensor


def prob_tail(messages: Sequence[SparseLogits], weights: Sequence[Weight], vocab_size: int) -> TailProbs:
    """Probability averaging with a tail bucket. Message values must be log-probabilities.

    Per message i and position t: p_ij = exp(value), tail_i = max(0, 1 − Σ_j p_ij) (exactly 0
    for a message covering all V entries). Per entry: the weighted mean of p_ij over the
    messages that reported j; tail: the weighted mean of tail_i over all messages. The row
    (entries + tail) is then renormalised to sum to 1; where the union covers all V
    entries, the tail is 0.
    """
    T = _check(messages, weights, vocab_size)
    dev = messages[0].values.device
    num = torch.zeros(T, vocab_size, dtype=torch.float64, device=dev)
    den = torch.zeros(T, vocab_size, dtype=torch.float64, device=dev)
    tail_num = torch.zeros(T, dtype=torch.float64, device=dev)
    tail_den = torch.zeros(T, dtype=torch.float64, device=dev)
    for m, w in zip(messages, weights):
        wc = _col(w, T, dev)  # (T, 1)
        p = m.values.double().exp() * m.mask  # (T, K)
        tail = (1.0 - p.sum(1)).clamp(min=0.0)  # (T,)
        tail = torch.where(m.mask.sum(1) == vocab_size, torch.zeros_like(tail), tail)
        num.scatter_add_(1, m.indices, wc * p)
        den.scatter_add_(1, m.indices, wc * m.mask)
        tail_num += wc[:, 0] * tail
        tail_den += wc[:, 0]
    support = den > 0
    probs = torch.where(support, num / den.clamp(min=1e-300), torch.zeros_like(num))
    tail = torch.where(tail_den > 0, tail_num / tail_den.clamp(min=1e-300), torch.zeros_like(tail_num))
    tail = torch.where(support.all(1), torch.zeros_like(tail), tail)  # nothing left outside
    z = probs.sum(1) + tail  # (T,)
    return TailProbs(probs / z[:, None], support, tail / z)


AGGREGATIONS: dict[str, Callable] = {"zero_pad": zero_pad, "adaptive": adaptive, "prob_tail": prob_tail}


def build_teacher(aggregation: str, messages: Sequence[SparseLogits], weights: Sequence[Weight],
                  vocab_size: int, temperature: float = 1.0) -> Teacher:
    """Aggregate ``messages`` with the named rule and form the teacher at ``temperature``.

    zero_pad, adaptive: ``log_softmax(aggregate / temperature)`` over the support (all V for
    zero_pad; the union of reported entries for adaptive); no tail.
    prob_tail: the bucketed distribution (entries + tail) raised to ``1 / temperature`` and
    renormalised (exact at temperature 1; the tail is treated as one bucket otherwise).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0. Got {temperature!r} instead.")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}. Got {aggregation!r} instead.")
    if aggregation != "prob_tail":
        agg = AGGREGATIONS[aggregation](messages, weights, vocab_size)  # (T, V), -inf outside
        return Teacher(torch.log_softmax(agg / temperature, dim=-1))
    tp = prob_tail(messages, weights, vocab_size)
    log_p = torch.where(tp.support, tp.probs.log(), torch.full_like(tp.probs, -torch.inf)) / temperature
    log_tail = tp.tail.log() / temperature  # -inf where the tail is empty
    log_z = torch.logsumexp(torch.cat([log_p, log_tail[:, None]], 1), dim=1)  # (T,)
    return Teacher((log_p - log_z[:, None]).float(), (log_tail - log_z).float())


# --- losses ------------------------------------------------------------------------------------


def kd_loss(student_logits: torch.Tensor, teacher: Teacher, temperature: float = 1.0) -> torch.Tensor:
    """(T,) KL(teacher ‖ student) per position, restricted to the teacher's support.

    student_logits: (T, V) raw logits (gradients flow through them).
    Without a tail bucket the student is renormalised over the teacher's support:
    p̃_j = softmax over the support of s / temperature. With a tail bucket (``prob_tail``)
    the student's full softmax is used on the support and its mass outside the support
    forms the student's tail. Multiply by α·temperature² for the loss term.
    """
    if student_logits.shape != teacher.log_probs.shape:
        raise ValueError(f"kd_loss: student logits {tuple(student_logits.shape)} vs teacher "
                         f"{tuple(teacher.log_probs.shape)}.")
    s = student_logits.float() / temperature  # (T, V)
    support = teacher.support
    log_q = teacher.log_probs
    q = log_q.exp()  # 0 outside the support
    if teacher.tail_log_prob is None:
        log_p = torch.log_softmax(s.masked_fill(~support, -torch.inf), dim=-1)
        return torch.where(support, q * (log_q - log_p), torch.zeros_like(s)).sum(-1)
    log_p = torch.log_softmax(s, dim=-1)
    on = torch.where(support, q * (log_q - log_p), torch.zeros_like(s)).sum(-1)  # (T,)
    log_p_tail = torch.logsumexp(log_p.masked_fill(support, -torch.inf), dim=-1)  # (T,) -inf if empty
    q_tail = teacher.tail_log_prob.exp()
    tail = torch.where(q_tail > 0, q_tail * (teacher.tail_log_prob - log_p_tail), torch.zeros_like(q_tail))
    return on + tail


def full_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(T,) KL(softmax(t/τ) ‖ softmax(s/τ)) over the whole vocabulary: the full-logit reference."""
    log_p = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_q = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1)


def projection_matrix(rank: int, hidden: int, seed: int) -> torch.Tensor:
    """(rank, hidden) float32 down-projection A, initialised as LoRA's A (Kaiming-uniform,
    a = √5, as peft does), from a torch RNG seeded with ``seed``; the same for every party."""
    a = torch.empty(rank, hidden)
    g = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / hidden ** 0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in = hidden gives 1/sqrt(fan_in)
    return a.uniform_(-bound, bound, generator=g)


def projection_loss(p_student: torch.Tensor, p_teacher: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """(T,) ‖P_S(h_S) − P_T(h_T)‖² per position, on unit-normalised projections by default.

    p_student, p_teacher: (T, r) projections (r numbers per position).
    """
    if p_student.shape != p_teacher.shape:
        raise ValueError(f"projection_loss: shapes {tuple(p_student.shape)} and {tuple(p_teacher.shape)} differ.")
    s, t = p_student.float(), p_teacher.float()
    if normalise:
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    return ((s - t) ** 2).sum(-1)

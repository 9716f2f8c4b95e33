"""The top-k logit message on the wire: exact bits, encoding, decoding.

What travels, for T positions, vocabulary V, b_v bits per value (fp32 32, fp16/bf16 16,
int8 8) and b_i = ceil(log2 V) bits per index:

==============================  ===============================================================
layout                          bits
==============================  ===============================================================
sparse, one k for all positions T·k·(b_v + b_i)
sparse, k_t per position        Σ_t k_t·(b_v + b_i) + T·b_c   (b_c = bits of one count)
dense (k = V)                   T·V·b_v   (indices implied by the position in the vector)
int8 values                     + T·32    (one fp32 absmax scale per position)
hidden projection (rank r)      + T·r·b_v (+ T·32 for int8: one scale per position)
header                          + header_bits
==============================  ===============================================================

int8 is symmetric absmax quantisation per position: scale = max|x| / 127 over the
position's valid entries, q = round(x / scale) ∈ [−127, 127]; the receiver decodes q·scale,
so what it aggregates is what travelled, quantisation error included. The same holds for
fp16/bf16 (cast on encode, float32 on decode). A payload's tensors are on the CPU whatever
device the logits were computed on (messages are aggregated, checkpointed and sent to other
processes from there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fl.algorithms.kd_topk.distill import SparseLogits
from fl.core.payload import DTYPE_BITS, SCALE_BITS
from fl.core.config import WireDtype

__all__ = ["index_bits", "count_bits", "topk_bits", "TopKPayload"]

_TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_INT8_MAX = 127


def index_bits(vocab_size: int) -> int:
    """b_i = ceil(log2 V): bits of one vocabulary index."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1. Got {vocab_size} instead.")
    return max(1, math.ceil(math.log2(vocab_size)))


def count_bits(k_max: int) -> int:
    """Bits of one per-position count in [0, k_max]: ceil(log2(k_max + 1))."""
    return max(1, math.ceil(math.log2(k_max + 1)))


def _value_bits(dtype: str) -> int:
    if dtype not in DTYPE_BITS:
        raise ValueError(f"value dtype must be one of {sorted(DTYPE_BITS)}. Got {dtype!r} instead.")
    return DTYPE_BITS[dtype]


def topk_bits(n_tokens: int, k: int | None, vocab_size: int, dtype: WireDtype, proj_rank: int = 0,
              header_bits: int = 0, counts_total: int | None = None, counts_bits: int = 0) -> int:
    """Exact bits of a top-k message (no tensors needed: for sizers).

    n_tokens: T. k: entries per position (k = V means the dense layout), or None with
    ``counts_total`` = Σ_t k_t for per-position counts, each sent in ``counts_bits`` bits.
    proj_rank: r of the hidden projection (0: none).
    """
    b_v, b_i = _value_bits(dtype), index_bits(vocab_size)
    scale = SCALE_BITS if dtype == "int8" else 0
    if k is None:
        if counts_total is None or counts_bits < 1:
            raise ValueError("topk_bits: give k, or counts_total and counts_bits.")
        body = counts_total * (b_v + b_i) + n_tokens * counts_bits
    elif k == vocab_size:
        body = n_tokens * vocab_size * b_v
    elif 0 <= k < vocab_size:
        body = n_tokens * k * (b_v + b_i)
    else:
        raise ValueError(f"topk_bits: k must be in [0, {vocab_size}]. Got {k!r} instead.")
    body += n_tokens * scale
    if proj_rank:
        body += n_tokens * (proj_rank * b_v + scale)
    return int(body + header_bits)


def _encode_rows(x: torch.Tensor, mask: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode (T, K) values (masked entries become 0); int8 gets one scale per row."""
    x = x.detach().float().masked_fill(~mask, 0.0)
    if dtype != "int8":
        return x.to(_TORCH[dtype]), None
    absmax = x.abs().amax(1) if x.shape[1] else torch.zeros(x.shape[0], device=x.device)
    scale = (absmax / _INT8_MAX).float()  # (T,) fp32
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe[:, None]).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return q, scale


def _decode_rows(q: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    if scale is None:
        return q.float()
    return q.float() * scale[:, None]


@dataclass(frozen=True)
class TopKPayload:
    """A top-k logit message as encoded on the wire (see the module docstring for bits).

    values: (T, K) encoded values (int8 for ``"int8"``), 0 where padded.
    indices: (T, K) int64, or None for the dense layout (K = V, index = position).
    counts: (T,) int64 valid entries per position, or None when every position has K.
    scales: (T,) fp32 int8 scales of ``values`` (int8 only).
    proj, proj_scales: (T, r) encoded hidden projections and their int8 scales, or None.
    """

    values: torch.Tensor
    indices: torch.Tensor | None
    dtype: WireDtype
    vocab_size: int
    counts: torch.Tensor | None = None
    counts_bits: int = 0
    scales: torch.Tensor | None = None
    proj: torch.Tensor | None = None
    proj_scales: torch.Tensor | None = None
    header_bits: int = 0

    @classmethod
    def encode(cls, msg: SparseLogits, vocab_size: int, dtype: WireDtype, *, variable: bool = False,
               counts_bits: int = 0, proj: torch.Tensor | None = None, header_bits: int = 0) -> "TopKPayload":
        """Encode a message. ``variable``: per-position counts travel (``counts_bits`` each);
        otherwise every position must carry the same number of entries, and K = V is sent
        dense (entries reordered by vocabulary index). The payload is on the CPU."""
        _value_bits(dtype)
        msg = SparseLogits(msg.values.detach().cpu(), msg.indices.cpu(), msg.mask.cpu())
        proj = None if proj is None else proj.detach().cpu()
        counts = msg.k_per_token
        K = msg.values.shape[1]
        if variable:
            if counts_bits < count_bits(int(counts.max()) if counts.numel() else 0):
                raise ValueError(f"counts_bits={counts_bits} cannot hold a count of {int(counts.max())}.")
            values, scales = _encode_rows(msg.values, msg.mask, dtype)
            indices, counts_out = msg.indices.masked_fill(~msg.mask, 0), counts
        else:
            if not bool(msg.mask.all()):
                raise ValueError("TopKPayload.encode: a uniform-k message must have every entry valid "
                                 "(use variable=True for per-position k).")
            counts_out, counts_bits = None, 0
            if K == vocab_size:  # dense: the value of token j sits at position j
                ar = torch.arange(K)
                dense = msg.values if bool((msg.indices == ar).all()) else \
                    torch.empty_like(msg.values).scatter_(1, msg.indices, msg.values)
                values, scales = _encode_rows(dense, torch.ones_like(msg.mask), dtype)
                indices = None
            else:
                values, scales = _encode_rows(msg.values, msg.mask, dtype)
                indices = msg.indices.clone()
        p, ps = (None, None)
        if proj is not None:
            p, ps = _encode_rows(proj, torch.ones(proj.shape, dtype=torch.bool, device=proj.device), dtype)
        return cls(values, indices, dtype, int(vocab_size), counts_out, int(counts_bits), scales, p, ps,
                   int(header_bits))

    def decode(self) -> tuple[SparseLogits, torch.Tensor | None]:
        """(the message as the receiver sees it, float32; projections (T, r) or None)."""
        values = _decode_rows(self.values, self.scales)
        T, K = values.shape
        dev = values.device
        if self.indices is None:
            indices = torch.arange(K, device=dev).expand(T, K).clone()
            mask = torch.ones(T, K, dtype=torch.bool, device=dev)
        else:
            indices = self.indices
            mask = (torch.arange(K, device=dev)[None, :] < self.counts[:, None]) if self.counts is not None \
                else torch.ones(T, K, dtype=torch.bool, device=dev)
        proj = None if self.proj is None else _decode_rows(self.proj, self.proj_scales)
        return SparseLogits(values.masked_fill(~mask, 0.0), indices, mask), proj

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        """Entries per position (uniform), or the rounded mean for per-position counts."""
        if self.counts is not None:
            return int(round(float(self.counts.double().mean()))) if self.counts.numel() else 0
        return int(self.values.shape[1])

    @property
    def proj_rank(self) -> int:
        return 0 if self.proj is None else int(self.proj.shape[1])

    @property
    def bits(self) -> int:
        """Exact size on the wire in bits."""
        T = self.n_tokens
        if self.counts is not None:
            return topk_bits(T, None, self.vocab_size, self.dtype, self.proj_rank, self.header_bits,
                             counts_total=int(self.counts.sum()), counts_bits=self.counts_bits)
        k = self.vocab_size if self.indices is None else int(self.values.shape[1])
        return topk_bits(T, k, self.vocab_size, self.dtype, self.proj_rank, self.header_bits)

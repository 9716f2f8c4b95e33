"""Split execution of a causal LM at a cut layer, and the messages that cross the cut.

A Llama-family model (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``; SmolLM2,
Llama, Qwen2, Mistral) is cut after its first ``cut_layer`` decoder layers:

- the **client part**: token embedding + layers ``0 .. cut_layer-1`` (frozen base + LoRA);
- the **server part**: layers ``cut_layer ..`` + final norm + output head (+ their LoRA).

:class:`SplitModel` runs the two halves on the *same* module objects as the full model, so
``server_loss(client_forward(batch))`` is :func:`fl.lm.train.answer_loss` computed in two
pieces (the split-equals-unsplit test pins this). The client half runs through
``torch.func.functional_call`` with the client's *own* LoRA tensors: several clients can
hold forward graphs at once (their steps interleave in simulated time) without touching
the shared model's parameters.

What crosses the cut (:class:`CutActivations` uplink, :class:`CutGradients` downlink) is
encoded on the wire (:class:`WireTensor`) and the receiver computes only from the decoded
message: the server really trains on quantised activations, the client on quantised
gradients. Messages are on the CPU whatever device computed them (each side moves what it
decodes to its own device). Exact sizes (B examples, T padded tokens, H hidden size, A longest answer,
V vocabulary):

- activations / gradients: ``B·T·H·b`` bits, ``b`` = 32 (fp32), 16 (fp16, bf16) or 8
  (int8); plus the scales: fp16 one fp32 power-of-two scale per tensor (+32 bits: dynamic
  loss scaling, so small gradients do not underflow fp16), int8 one fp32 absmax scale per
  token (+32·B·T bits); fp32 and bf16 none;
- side information uplink (the server holds the head, so it needs the labels): the
  attention mask, 1 bit per token (``B·T``), and the answer tokens, ``B·A`` ids of
  ``ceil(log2 V)`` bits each plus a 1-bit answer mask (``B·A``). Answer positions are not
  sent: batches are left-padded, so every answer ends at the last position.
- ``header_bits`` per message (modelled headers, 0 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fl.lm.data import Batch
from fl.lm.flops import FlopProfile
from fl.lm.models import layer_of
from fl.core.payload import DTYPE_BITS
from fl.core.config import WireDtype

__all__ = [
    "SCALE_BITS",
    "wire_tensor_bits",
    "activation_bits",
    "side_bits",
    "index_bits",
    "WireTensor",
    "CutActivations",
    "CutGradients",
    "SplitModel",
    "split_profile",
]

SCALE_BITS = 32  # one fp32 scale
_FP16_HEADROOM = 14  # fp16 scale: absmax lands in [2^14, 2^15), well below fp16's 65504
_INT8_MAX = 127


# --- sizes -----------------------------------------------------------------------------------


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_BITS:
        raise ValueError(f"Wire dtype must be one of {sorted(DTYPE_BITS)}. Got {dtype!r} instead.")


def wire_tensor_bits(shape: tuple[int, ...], dtype: WireDtype) -> int:
    """Exact bits of one tensor of ``shape`` encoded as ``dtype`` (values + scales).

    fp32, bf16: numel·b. fp16: numel·16 + 32 (one power-of-two scale). int8: numel·8 + 32
    per row of the last axis (one absmax scale per token for a (B, T, H) tensor).
    """
    _check_dtype(dtype)
    numel = math.prod(int(d) for d in shape)
    bits = numel * DTYPE_BITS[dtype]
    if dtype == "fp16":
        bits += SCALE_BITS
    elif dtype == "int8":
        bits += SCALE_BITS * math.prod(int(d) for d in shape[:-1])
    return bits


def activation_bits(batch_size: int, seq_len: int, hidden: int, dtype: WireDtype) -> int:
    """Bits of a (B, T, H) activation (or activation-gradient) tensor on the wire."""
    return wire_tensor_bits((batch_size, seq_len, hidden), dtype)


def index_bits(vocab_size: int) -> int:
    """Bits of one token id: ceil(log2 V)."""
    return max(1, math.ceil(math.log2(vocab_size)))


def side_bits(batch_size: int, seq_len: int, answer_len: int, vocab_size: int) -> int:
    """Bits of the uplink side information: attention mask (B·T) + answer ids and mask
    (B·A·(ceil(log2 V) + 1))."""
    return batch_size * seq_len + batch_size * answer_len * (index_bits(vocab_size) + 1)


# --- the wire codec --------------------------------------------------------------------------


@dataclass(frozen=True)
class WireTensor:
    """A float tensor as encoded on the wire.

    data: the encoded values (float32, float16, bfloat16 or int8), shape of the original.
    scale: None (fp32, bf16), a 0-d fp32 tensor (fp16: a power of two), or a (..., 1) fp32
        tensor of per-row absmax/127 scales (int8).
    """

    data: torch.Tensor
    dtype: WireDtype
    scale: torch.Tensor | None = None

    @classmethod
    def encode(cls, x: torch.Tensor, dtype: WireDtype) -> "WireTensor":
        """Encode ``x`` (any float dtype and device; detached) for the wire, on the CPU."""
        _check_dtype(dtype)
        x = x.detach().float().cpu()
        if dtype == "fp32":
            return cls(x.clone(), dtype)
        if dtype == "bf16":
            return cls(x.to(torch.bfloat16), dtype)
        if dtype == "fp16":
            absmax = float(x.abs().max()) if x.numel() else 0.0
            exponent = math.floor(math.log2(absmax)) - _FP16_HEADROOM if absmax > 0 else 0
            scale = torch.tensor(2.0 ** exponent, dtype=torch.float32)  # exact division below
            return cls((x / scale).to(torch.float16), dtype, scale)
        # int8: symmetric absmax per row of the last axis (per token for (B, T, H))
        absmax = x.abs().amax(dim=-1, keepdim=True)  # (..., 1)
        scale = absmax / _INT8_MAX
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(x / safe).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)
        return cls(q, dtype, scale)

    def decode(self) -> torch.Tensor:
        """The float32 tensor the receiver reconstructs (quantisation error included), on the
        CPU (the receiver moves it to its device)."""
        if self.scale is None:
            return self.data.float()
        return self.data.float() * self.scale

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def bits(self) -> int:
        return wire_tensor_bits(self.shape, self.dtype)


@dataclass(frozen=True)
class CutActivations:
    """Uplink message of one split step: cut-layer activations and what the server needs.

    acts: (B, T, H) encoded activations. attention_mask: (B, T) bool (left padding).
    target_ids: (B, A) int64 answer tokens; target_mask: (B, A) bool (answers shorter than
    A are padded). vocab_size: fixes the bits of a token id. header_bits: modelled header.
    """

    acts: WireTensor
    attention_mask: torch.Tensor
    target_ids: torch.Tensor
    target_mask: torch.Tensor
    vocab_size: int
    header_bits: int = 0

    @classmethod
    def encode(cls, hidden: torch.Tensor, batch: Batch, dtype: WireDtype, vocab_size: int,
               header_bits: int = 0) -> "CutActivations":
        return cls(WireTensor.encode(hidden, dtype), batch.attention_mask.bool().cpu().clone(),
                   batch.target_ids.cpu().clone(), batch.target_mask.cpu().clone(), int(vocab_size),
                   int(header_bits))

    @property
    def bits(self) -> int:
        B, T, _ = self.acts.shape
        A = self.target_ids.shape[1]
        return self.acts.bits + side_bits(B, T, A, self.vocab_size) + self.header_bits

    def target_pos(self) -> torch.Tensor:
        """(B, A) positions whose next token is an answer token, from the answer mask alone
        (left padding: the answer of row b, of length n_b, fills the last n_b positions);
        0 where the mask is False, as :func:`fl.lm.data.collate` does."""
        T = self.acts.shape[1]
        n = self.target_mask.sum(1, keepdim=True)  # (B, 1)
        j = torch.arange(self.target_mask.shape[1], device=self.target_mask.device)[None, :]  # (1, A)
        pos = T - n - 1 + j
        return torch.where(self.target_mask, pos, torch.zeros_like(pos))  # 0 where masked (as collate)


@dataclass(frozen=True)
class CutGradients:
    """Downlink message of one split step: the loss gradient w.r.t. the cut activations."""

    grads: WireTensor
    header_bits: int = 0

    @property
    def bits(self) -> int:
        return self.grads.bits + self.header_bits

    def decode(self) -> torch.Tensor:
        return self.grads.decode()


# --- the split model -------------------------------------------------------------------------


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # as fl.lm.train: positions count real tokens only, so left padding does not shift them
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class _ClientPart(nn.Module):
    """The client half as one module (shared submodules, no copies), so that
    ``torch.func.functional_call`` can run it with a client's own LoRA tensors."""

    def __init__(self, embed: nn.Module, layers: list[nn.Module], run) -> None:
        super().__init__()
        self.embed = embed
        self.layers = nn.ModuleList(layers)
        self._run = run  # SplitModel._client_forward: uses these very submodules

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        return self._run(input_ids, attention_mask, hidden, start)


class SplitModel:
    """The client and server halves of a (peft-wrapped) causal LM cut after ``cut_layer``.

    Args:
        model: the full model (a peft model or a bare ``*ForCausalLM``); its modules are
            shared, not copied.
        cut_layer: decoder layers held by the client, in [1, n_layers - 1].

    Attributes:
        client_names / server_names: names (as in ``model.named_parameters()``) of the
            trainable tensors on each side, in module order.
        hidden_size, vocab_size, n_layers.
    """

    def __init__(self, model: nn.Module, cut_layer: int) -> None:
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = lm.get_decoder()
        missing = [a for a in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(decoder, a)]
        if missing:
            raise ValueError(
                f"split_lora needs a Llama-family decoder (embed_tokens, layers, norm, rotary_emb); "
                f"{type(decoder).__name__} has no {missing}."
            )
        n = len(decoder.layers)
        if not 1 <= cut_layer <= n - 1:
            raise ValueError(
                f"The 'cut_layer' option of split_lora must be in [1, {n - 1}] for this {n}-layer "
                f"model (the client and the server each hold at least one layer). Got {cut_layer} instead."
            )
        self.model = model
        self.lm = lm
        self.config = lm.config
        self.cut_layer = int(cut_layer)
        self.n_layers = n
        self.hidden_size = int(self.config.hidden_size)
        self.vocab_size = int(lm.get_output_embeddings().out_features)
        self.embed = decoder.embed_tokens
        self.rotary = decoder.rotary_emb
        self.client_layers = list(decoder.layers[:cut_layer])
        self.server_layers = list(decoder.layers[cut_layer:])
        self.norm = decoder.norm
        self.head = lm.get_output_embeddings()
        # the client half as one module, for functional_call with a client's own tensors
        self._client = _ClientPart(self.embed, self.client_layers, self._client_forward)
        full_name = {id(p): name for name, p in model.named_parameters()}
        self._client_key = {  # model's parameter name -> name inside the client part
            full_name[id(p)]: local for local, p in self._client.named_parameters() if p.requires_grad
        }
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        self.client_names = [n_ for n_ in trainable if n_ in self._client_key]
        self.server_names = [n_ for n_ in trainable if n_ not in self._client_key]
        self._params = dict(model.named_parameters())

    # -- parameters ---------------------------------------------------------------------------

    def client_params(self) -> "dict[str, torch.Tensor]":
        """The shared model's client-side trainable tensors, by model name (live objects)."""
        return {n: self._params[n] for n in self.client_names}

    def server_params(self) -> "list[torch.Tensor]":
        """The shared model's server-side trainable tensors (live objects, trained in place)."""
        return [self._params[n] for n in self.server_names]

    # -- the two halves -----------------------------------------------------------------------

    def _mask_and_rope(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.masking_utils import create_causal_mask

        pos = _positions(attention_mask)  # (B, T)
        causal = create_causal_mask(config=self.config, inputs_embeds=hidden,
                                    attention_mask=attention_mask.long(), cache=None,
                                    position_ids=pos)
        return causal, self.rotary(hidden, position_ids=pos), pos

    def _layers(self, layers, hidden, attention_mask):
        causal, rope, pos = self._mask_and_rope(hidden, attention_mask)
        for layer in layers:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=pos,
                           cache=None, use_cache=False)
        return hidden

    def _client_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        hidden = self.embed(input_ids) if hidden is None else hidden
        return self._layers(self.client_layers[start:], hidden, attention_mask)

    def client_forward(self, batch: Batch, tensors: Mapping[str, torch.Tensor] | None = None,
                       hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        """Cut-layer activations (B, T, H) of ``batch`` (its tensors on the model's device).

        tensors: the client's own LoRA tensors by model name (they replace the shared
            model's for this call; gradients flow to them); None uses the model's own.
        hidden, start: the hidden states (B, T, H) entering client layer ``start`` (e.g. a
            :class:`~fl.lm.prefix.FrozenPrefix`'s, when every adapter sits at or above it);
            the embedding and the layers below ``start`` are then not run.
        """
        if not 0 <= start < self.cut_layer or (start > 0) != (hidden is not None):
            raise ValueError(f"client_forward: start must be in [0, {self.cut_layer - 1}], with the hidden "
                             f"states entering that layer when it is > 0. Got start={start} "
                             f"{'with' if hidden is not None else 'without'} them.")
        args = (batch.input_ids, batch.attention_mask, hidden, start)
        if tensors is None:
            return self._client_forward(*args)
        unknown = sorted(set(tensors) - set(self._client_key))
        if unknown:
            raise KeyError(f"client_forward: {unknown[:3]} are not client-side LoRA tensors.")
        local = {self._client_key[n]: t for n, t in tensors.items()}
        return torch.func.functional_call(self._client, local, args, strict=False, tie_weights=False)

    def server_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
        """Logits (B, keep, V) of the last ``keep`` positions from cut activations (B, T, H)."""
        hidden = self._layers(self.server_layers, hidden, attention_mask)
        hidden = self.norm(hidden)
        return self.head(hidden[:, -keep:, :])

    def server_loss(self, hidden: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor,
                    target_mask: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens (as :func:`fl.lm.train.answer_loss`)."""
        T = hidden.shape[1]
        keep = T - int(target_pos[target_mask].min())  # head runs on the last `keep` positions
        logits = self.server_logits(hidden, attention_mask, keep)  # (B, keep, V)
        rel = target_pos - (T - keep)  # (B, A) index into the kept positions
        picked = logits.gather(1, rel.clamp(min=0).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, A, V)
        return F.cross_entropy(picked[target_mask].float(), target_ids[target_mask])


def split_profile(profile: FlopProfile, cut_layer: int) -> tuple[FlopProfile, FlopProfile]:
    """(client, server) parts of a model's :class:`~fl.lm.flops.FlopProfile`.

    Linear layers and attention of decoder layers ``< cut_layer`` are the client's; the rest
    (later layers, the output head) the server's. Each part's ``input_grad`` flags are those
    of the full model, so client + server counts equal the unsplit step exactly.
    """
    def client_side(name: str) -> bool:
        layer = layer_of(name)
        return layer is not None and layer < cut_layer

    client = FlopProfile(tuple(l for l in profile.linears if client_side(l.name)),
                         tuple(a for a in profile.attention if a.layer < cut_layer))
    server = FlopProfile(tuple(l for l in profile.linears if not client_side(l.name)),
                         tuple(a for a in profile.attention if a.layer >= cut_layer))
    return client, server

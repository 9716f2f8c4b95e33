"""Typed payloads with an exact ``bits`` figure, carrying what is really sent.

A :class:`LoraPayload` holds the *encoded* tensors (fp32, fp16, bf16 or int8 with one fp32
absmax scale per tensor), so the receiver's :meth:`LoraPayload.decode` returns exactly what
travelled, quantisation error included. ``bits`` = Σ numel × bits(dtype) (+ 32 per tensor
for the int8 scales) + ``header_bits``; tensor names are treated as known to both ends.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

import torch

from fl.core.config import WireDtype

__all__ = ["WireDtype", "DTYPE_BITS", "SCALE_BITS", "LoraPayload", "payload_bits"]

DTYPE_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8}
SCALE_BITS = 32  # one fp32 absmax scale per int8 tensor
_TORCH = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
_INT8_MAX = 127


def payload_bits(shapes: Mapping[str, tuple[int, ...]], dtype: WireDtype, header_bits: int = 0) -> int:
    """Exact bits of a payload of tensors with these shapes (no tensors needed: for sizers)."""
    if dtype not in DTYPE_BITS:
        raise ValueError(f"Payload dtype must be one of {sorted(DTYPE_BITS)}. Got {dtype!r} instead.")
    n = sum(_numel(s) for s in shapes.values())
    scales = SCALE_BITS * len(shapes) if dtype == "int8" else 0
    return n * DTYPE_BITS[dtype] + scales + int(header_bits)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


@dataclass(frozen=True)
class LoraPayload:
    """Adapter tensors as encoded on the wire.

    tensors: name -> encoded tensor (dtype per ``dtype``; int8 values for ``"int8"``).
    scales: name -> fp32 absmax scale (int8 only; ``x ≈ q × scale``).
    header_bits: modelled header/metadata bits (0 by default).
    """

    tensors: "OrderedDict[str, torch.Tensor]"
    dtype: WireDtype
    scales: Mapping[str, float] = field(default_factory=dict)
    header_bits: int = 0

    @classmethod
    def encode(cls, state: Mapping[str, torch.Tensor], dtype: WireDtype, header_bits: int = 0) -> "LoraPayload":
        """Encode float tensors for the wire (cast, or int8 absmax quantisation per tensor);
        the encoded tensors are on the CPU, whatever device ``state`` is on."""
        if dtype not in DTYPE_BITS:
            raise ValueError(f"Payload dtype must be one of {sorted(DTYPE_BITS)}. Got {dtype!r} instead.")
        tensors: OrderedDict[str, torch.Tensor] = OrderedDict()
        scales: dict[str, float] = {}
        for name, t in state.items():
            t = t.detach().to("cpu")  # payloads travel, aggregate and checkpoint from the CPU
            if dtype == "int8":
                # symmetric: scale = absmax / 127, q = round(x / scale) in [-127, 127]
                absmax = float(t.abs().max()) if t.numel() else 0.0
                scale = torch.tensor(absmax / _INT8_MAX, dtype=torch.float32).item()  # an fp32 value
                q = torch.zeros_like(t, dtype=torch.int8) if scale == 0.0 else \
                    torch.round(t.float() / scale).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)
                tensors[name], scales[name] = q, scale
            else:
                tensors[name] = t.to(_TORCH[dtype], copy=True)
        return cls(tensors, dtype, scales, int(header_bits))

    def decode(self, dtype: torch.dtype = torch.float32) -> "OrderedDict[str, torch.Tensor]":
        """The tensors the receiver reconstructs, as ``dtype``."""
        if self.dtype == "int8":
            return OrderedDict((n, q.to(dtype) * self.scales[n]) for n, q in self.tensors.items())
        return OrderedDict((n, t.to(dtype)) for n, t in self.tensors.items())

    @property
    def shapes(self) -> "OrderedDict[str, tuple[int, ...]]":
        return OrderedDict((n, tuple(t.shape)) for n, t in self.tensors.items())

    @property
    def bits(self) -> int:
        """Exact size on the wire in bits."""
        return payload_bits(self.shapes, self.dtype, self.header_bits)

"""4-bit NormalFloat (NF4) quantisation of frozen linear weights, in plain torch (any device).

QLoRA's NF4 (Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS
2023, Appendix E, the ``NF4`` table of bitsandbytes): a weight tensor is flattened and cut
into blocks of ``block_size`` (64) values; each block is divided by its absolute maximum
(one absmax per block) and every value is replaced by the index (0..15) of the nearest of
the 16 NF4 code values in [-1, 1]. Two 4-bit indices are packed per byte (the even
position in the high nibble). Dequantisation is ``code[index] × absmax``.

Error bound: a value rounds to its nearest code, so ``|w − ŵ| ≤ absmax × g/2`` per block,
with ``g`` the largest gap between consecutive NF4 codes (−0.6962 − (−1) = 0.3038) — plus the
rounding of absmax itself when it is stored as fp16.

:class:`NF4Linear` keeps only the packed codes and the absmax values (so
:func:`fl.lm.models.bytes_resident` counts 4 bits per weight) and dequantises in ``forward``.
:func:`quantize_model` swaps the base layers of peft LoRA wrappers (and any other
``nn.Linear`` selected) for ``NF4Linear`` *after* LoRA wrapping: peft's ``lora.Linear``
calls ``self.base_layer(x)`` and adds its adapters on top, which is all it needs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fl.algorithms.fedsoda.config import AbsmaxDtype

__all__ = [
    "NF4_CODE",
    "NF4_MAX_HALF_GAP",
    "AbsmaxDtype",
    "quantize_nf4",
    "dequantize_nf4",
    "nf4_bytes",
    "NF4Tensor",
    "NF4Linear",
    "quantize_model",
]

# QLoRA's NF4 code book (bitsandbytes, functional.py: the NF4 lookup table), increasing.
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=torch.float32)
NF4_MAX_HALF_GAP = float((NF4_CODE[1:] - NF4_CODE[:-1]).max()) / 2  # 0.1519 (between -1 and -0.696)
_MIDPOINTS = (NF4_CODE[1:] + NF4_CODE[:-1]) / 2  # (15,) decision boundaries

_ABSMAX_TORCH = {"fp32": torch.float32, "fp16": torch.float16}
_ON_DEVICE: dict[tuple[torch.device, str], torch.Tensor] = {}  # the tables on each device, copied once


def _table(name: str, device: torch.device) -> torch.Tensor:
    """``NF4_CODE`` or ``_MIDPOINTS`` on ``device`` (a per-forward host-to-device copy of 16
    values would stall a GPU in every NF4 layer)."""
    src = {"code": NF4_CODE, "mid": _MIDPOINTS}[name]
    if device.type == "cpu":
        return src
    key = (device, name)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = src.to(device)
    return _ON_DEVICE[key]


def nf4_bytes(numel: int, block_size: int = 64, absmax_dtype: AbsmaxDtype = "fp32") -> int:
    """Exact bytes of an NF4-encoded tensor of ``numel`` values: ceil(n_padded/2) packed bytes
    + one absmax per block (4 or 2 bytes), n_padded = numel rounded up to a whole block."""
    n_blocks = math.ceil(numel / block_size)
    return math.ceil(n_blocks * block_size / 2) + n_blocks * (4 if absmax_dtype == "fp32" else 2)


def quantize_nf4(weight: torch.Tensor, block_size: int = 64,
                 absmax_dtype: AbsmaxDtype = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """NF4-encode ``weight`` (any shape, float).

    Returns ``(packed, absmax)``: packed (ceil(n_padded / 2),) uint8, two 4-bit code indices
    per byte (even position in the high nibble); absmax (n_blocks,) fp32 or fp16, the
    absolute maximum of each block of ``block_size`` consecutive values of the flattened
    tensor (the last block zero-padded). Both on ``weight``'s device (the same values on
    any device: division, comparison and absmax are exact).
    """
    if block_size < 2 or block_size % 2:
        raise ValueError(f"NF4 block_size must be an even integer >= 2. Got {block_size!r} instead.")
    if absmax_dtype not in _ABSMAX_TORCH:
        raise ValueError(f"NF4 absmax_dtype must be 'fp32' or 'fp16'. Got {absmax_dtype!r} instead.")
    flat = weight.detach().reshape(-1).float()
    n_blocks = math.ceil(flat.numel() / block_size)
    blocks = F.pad(flat, (0, n_blocks * block_size - flat.numel())).view(n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1).to(_ABSMAX_TORCH[absmax_dtype])  # (n_blocks,) as stored
    scale = absmax.float().clamp(min=torch.finfo(torch.float32).tiny)[:, None]
    # the stored (possibly fp16-rounded) absmax may be just below a block's max: clip to [-1, 1]
    normed = (blocks / scale).clamp(-1.0, 1.0)
    codes = torch.bucketize(normed, _table("mid", normed.device)).to(torch.uint8).view(-1)  # (n_padded,) in 0..15
    packed = (codes[0::2] << 4) | codes[1::2]
    return packed, absmax


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, ...] | torch.Size,
                   block_size: int = 64, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The tensor of ``shape`` that :func:`quantize_nf4`'s output encodes, as ``dtype``, on
    ``packed``'s device."""
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).view(-1).long()  # (n_padded,)
    values = _table("code", packed.device)[codes].view(-1, block_size) * absmax.float()[:, None]  # (n_blocks, block)
    numel = math.prod(shape)
    return values.view(-1)[:numel].view(tuple(shape)).to(dtype)


class NF4Tensor:
    """A weight as the client stores it: packed codes + absmax, its shape and block size."""

    def __init__(self, weight: torch.Tensor, block_size: int = 64, absmax_dtype: AbsmaxDtype = "fp32") -> None:
        self.shape = tuple(weight.shape)
        self.block_size = block_size
        self.absmax_dtype = absmax_dtype
        self.packed, self.absmax = quantize_nf4(weight, block_size, absmax_dtype)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_nf4(self.packed, self.absmax, self.shape, self.block_size, dtype)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() + self.absmax.numel() * self.absmax.element_size()


class NF4Linear(nn.Module):
    """A frozen ``nn.Linear`` stored as NF4; dequantises its weight on every forward.

    Buffers: ``packed`` (uint8) and ``absmax`` (fp32/fp16), and ``bias`` if the source had
    one (kept in its dtype); ``module.to(device)`` moves them, and the weight is dequantised
    where they are. ``in_features``/``out_features`` as ``nn.Linear``.
    """

    def __init__(self, linear: nn.Linear, block_size: int = 64, absmax_dtype: AbsmaxDtype = "fp32") -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.block_size = block_size
        packed, absmax = quantize_nf4(linear.weight, block_size, absmax_dtype)
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", absmax)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(out_features, in_features) weight as the forward pass uses it, on the buffers'
        device (under autocast ``F.linear`` casts it to the autocast dtype)."""
        return dequantize_nf4(self.packed, self.absmax, (self.out_features, self.in_features),
                              self.block_size, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4, block_size={self.block_size}"


def _is_lora_wrapper(module: nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A")


def quantize_model(model: nn.Module, select: Callable[[str, nn.Module], bool],
                   block_size: int = 64, absmax_dtype: AbsmaxDtype = "fp32") -> list[str]:
    """Replace selected frozen linear layers of ``model`` by :class:`NF4Linear`, in place.

    A peft LoRA wrapper keeps its adapters; its ``base_layer`` is quantised. Plain
    ``nn.Linear`` modules are replaced where they sit. ``select(name, linear)`` decides
    (e.g. "inside a decoder layer"). Returns the names of the quantised linear layers.
    """
    done = []
    targets: list[tuple[nn.Module, str, str, nn.Linear]] = []  # (parent, attribute, name, linear)
    for name, module in model.named_modules():
        if _is_lora_wrapper(module):
            base = module.base_layer
            if isinstance(base, nn.Linear) and select(name, base):
                targets.append((module, "base_layer", name, base))
            continue
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and not _is_lora_wrapper(module) and ".lora_" not in full \
                    and select(full, child):
                targets.append((module, child_name, full, child))
    for parent, attr, name, linear in targets:
        if linear.weight.requires_grad:
            raise ValueError(f"quantize_model: {name} is trainable; only frozen base weights are quantised.")
        setattr(parent, attr, NF4Linear(linear, block_size, absmax_dtype))
        done.append(name)
    return done

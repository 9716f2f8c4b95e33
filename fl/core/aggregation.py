"""Aggregation rules as pure functions of the received tensors."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch

__all__ = ["fedavg"]


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> "OrderedDict[str, torch.Tensor]":
    """Weighted mean Σ_i w_i·x_i / Σ_i w_i of tensor dicts, per name (McMahan et al. 2017).

    states: one name -> tensor mapping per client, all with the same names and shapes.
    weights: one non-negative weight per client (e.g. local sample counts), positive sum.
    Accumulates in float64 and returns each tensor in its input dtype, so that averaging
    identical states returns them unchanged.
    """
    if len(states) == 0:
        raise ValueError("fedavg needs at least one state.")
    if len(weights) != len(states):
        raise ValueError(f"fedavg: {len(states)} states but {len(weights)} weights.")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"fedavg weights must be >= 0 with a positive sum. Got {list(weights)} instead.")
    w = w / w.sum()
    names = list(states[0].keys())
    for i, s in enumerate(states[1:], 1):
        if list(s.keys()) != names:
            raise KeyError(f"fedavg: state {i} has different tensor names from state 0.")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in names:
        ref = states[0][name]
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for wi, s in zip(w, states):
            t = s[name]
            if t.shape != ref.shape:
                raise ValueError(f"fedavg: tensor {name!r} has shapes {tuple(ref.shape)} and {tuple(t.shape)}.")
            acc += wi * t.to(acc.device, torch.float64)
        out[name] = acc.to(ref.dtype)
    return out

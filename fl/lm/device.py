"""Devices and precision of the real learners (``execution.device`` / ``execution.dtype``).

``auto`` takes a GPU when one is present (CUDA, then Apple's MPS), else the CPU. On a CUDA
device deterministic algorithms are switched on (``torch.use_deterministic_algorithms``,
with the cuBLAS workspace setting it needs), so the same device, dtype and seed give the
same outputs where the backend allows; what cannot be bit-identical on a GPU (another GPU
model or driver, a different torch/CUDA build) is said in the README.

Precision: ``float32`` runs as is; ``bfloat16``/``float16`` run forward passes under
``torch.autocast`` (matmuls in that precision; the frozen base, adapters, optimiser states
and losses stay float32), which is what GPUs gain from. On a CPU without bfloat16 units
(AVX2) autocast is slower, not faster; it is allowed, and says so once.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator

import torch

__all__ = ["resolve_device", "autocast", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device ``execution.device`` names; ``ValueError`` naming the key and the fix
    when it is not available here."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"execution.device: {name!r}, but this torch ({torch.__version__}) sees no "
                             "CUDA GPU. Fix: install a CUDA build of torch (README: 'Running on a "
                             "GPU') on a machine with a GPU, or set execution.device: auto or cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"execution.device: {name!r}, but only {torch.cuda.device_count()} CUDA "
                             f"device(s) are present. Fix: cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("execution.device: 'mps', but this machine or torch build has no MPS "
                             "(Apple GPU). Fix: set execution.device: auto or cpu.")
    return dev


_WARNED: set[tuple[str, str]] = set()


@contextlib.contextmanager
def autocast(device: torch.device, dtype: str = "float32") -> Iterator[None]:
    """Forward passes in ``dtype`` on ``device`` (a no-op for float32)."""
    if dtype == "float32":
        yield
        return
    if device.type == "cpu" and (device.type, dtype) not in _WARNED:
        _WARNED.add((device.type, dtype))
        warnings.warn(f"execution.dtype: {dtype} on the CPU runs under autocast, which is slower "
                      f"than float32 on CPUs without native {dtype} units. Fix: float32 on a CPU.",
                      stacklevel=3)
    with torch.autocast(device_type=device.type, dtype=DTYPES[dtype]):
        yield

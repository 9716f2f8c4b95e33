"""The base of every algorithm's options and of the small configs inside them (torch-free).

They validate YAML (``fl.options``) at load time: unknown keys are errors, NaN and
infinities are refused, and every error names the key, the constraint and the value
received.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Spec", "AlgorithmConfig", "WireDtype"]

WireDtype = Literal["fp32", "fp16", "bf16", "int8"]  # how tensors travel (fl.core.payload)


class Spec(BaseModel):
    """A small frozen config: unknown keys are errors, numbers are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AlgorithmConfig(Spec):
    """Base for every algorithm's options: unknown keys are errors, numbers are finite."""

    def context_problems(self, n_clients: int) -> list[str]:
        """Problems of these options for a population of ``n_clients`` (checked at load time
        and when the algorithm is built): lines ``"key: rule. Got ... Fix: ..."``."""
        return []

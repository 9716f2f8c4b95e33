"""Options of the surrogate learner (``fl.options`` with ``fl.algorithm: surrogate``)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from fl.core.config import AlgorithmConfig

__all__ = ["SurrogateConfig"]


class SurrogateConfig(AlgorithmConfig):
    """Options of the surrogate learner (``fl.options`` in a scenario).

    calibration: a file written by ``fedwave calibrate`` (:mod:`fl.algorithms.surrogate.calibration`; relative
        paths from the working directory). Its fitted a0, a_max, n_half (and loss0,
        loss_min when it has them) set the curve; an option given as well must agree with
        the file (a resolved scenario repeats them), else the scenario is refused.
    """

    upload_bits: int = Field(8_000_000, ge=0, description="Fixed upload size, bits.")
    download_bits: int = Field(8_000_000, ge=0, description="Global model size, bits.")
    flops_per_round: float = Field(2e11, ge=0, description="Local training FLOPs per round.")
    n_samples: int | list[int] = Field(
        100, description="Samples per client: one number for all, or one per client.")
    a0: float = Field(0.2, ge=0, le=1, description="Accuracy before training.")
    a_max: float = Field(0.85, ge=0, le=1, description="Accuracy asymptote.")
    n_half: float = Field(2000.0, gt=0, description="Delivered samples for 63 % of the gain.")
    loss0: float = Field(2.0, ge=0, description="Loss before training.")
    loss_min: float = Field(0.4, ge=0, description="Loss asymptote.")
    staleness_exponent: float = Field(0.5, ge=0, description="Discount (1+s)^-e of stale updates.")
    upload_mode: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed: upload_bits; adaptive: the size follows the capacity.")
    bits_per_k: int = Field(100_000, gt=0, description="Adaptive: bits per unit of k.")
    header_bits: int = Field(0, ge=0, description="Adaptive: fixed header bits.")
    k_min: int = Field(1, ge=1, description="Adaptive: smallest k.")
    k_max: int = Field(80, ge=1, description="Adaptive: largest k.")
    capacity_fraction: float = Field(0.8, gt=0, le=1,
                                     description="Adaptive: fraction of the capacity to use.")
    calibration: str | None = Field(None, min_length=1, description=(
        "A file written by `fedwave calibrate`: its fitted a0, a_max, n_half (and loss0, "
        "loss_min) set the curve (relative paths: from the working directory); null: the "
        "curve's options as given."))

    @model_validator(mode="before")
    @classmethod
    def _calibrated(cls, data: Any) -> Any:
        """Fill the curve's parameters the options leave out from ``calibration`` (a file
        that cannot be used is reported by :meth:`_calibration_file`, at its key)."""
        if not isinstance(data, dict) or not isinstance(data.get("calibration"), str):
            return data
        from fl.algorithms.surrogate.calibration import CalibrationError, read_calibration

        try:
            cal = read_calibration(data["calibration"])
        except CalibrationError:
            return data
        return {**{k: v for k, v in cal.parameters.items() if data.get(k) is None}, **data}

    @field_validator("calibration")
    @classmethod
    def _calibration_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        """The file must be a calibration, and agree with any curve option given too."""
        if v is None:
            return v
        from fl.algorithms.surrogate.calibration import CalibrationError, read_calibration

        try:
            cal = read_calibration(v)
        except CalibrationError as exc:
            raise ValueError(str(exc)) from None
        for key, value in cal.parameters.items():
            given = info.data.get(key)
            if given is not None and not math.isclose(given, value, rel_tol=1e-12, abs_tol=0.0):
                raise ValueError(
                    f"{cal.path} sets {key} = {value!r} and the option {key} = {given!r} "
                    f"disagrees. Fix: drop the option {key} (the calibration sets it), or drop "
                    "calibration.")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.a_max < self.a0:
            raise ValueError(f"a_max must be >= a0. Got a_max={self.a_max}, a0={self.a0}. "
                             "Fix: raise a_max or lower a0.")
        if self.k_max < self.k_min:
            raise ValueError(f"k_max must be >= k_min. Got k_max={self.k_max}, k_min={self.k_min}. "
                             "Fix: raise k_max or lower k_min.")
        if isinstance(self.n_samples, list) and any(n < 0 for n in self.n_samples):
            raise ValueError("n_samples must be >= 0 for every client. Fix: give counts >= 0.")
        if isinstance(self.n_samples, int) and self.n_samples < 0:
            raise ValueError(f"n_samples must be >= 0. Got {self.n_samples}. Fix: give a count >= 0.")
        return self

    def context_problems(self, n_clients: int) -> list[str]:
        """Problems of these options for a population of ``n_clients``: ``"key: rule. Got
        ... Fix: ..."`` lines (the checks the algorithm makes when it is built)."""
        ns = self.n_samples
        if isinstance(ns, list) and len(ns) != n_clients:
            return [f"n_samples: must have one entry per client ({n_clients}). Got {len(ns)} "
                    "entries instead. Fix: give one number for all clients, or one per client."]
        return []

"""Options of ``fedsoda`` (``fl.options`` with ``fl.algorithm: fedsoda``); torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fl.core.config import WireDtype
from fl.lm.specs import AnyModelSpec, DataSpec, LMConfig, ModelSpec

__all__ = ["FedSODAConfig", "SimilarityMetric", "AbsmaxDtype"]

SimilarityMetric = Literal["cosine", "cka"]  # layer similarity of SGP (fl.algorithms.fedsoda.sgp)
AbsmaxDtype = Literal["fp32", "fp16"]  # how NF4 block scales are stored (fl.algorithms.fedsoda.nf4)


class FedSODAConfig(LMConfig):
    """Options of ``fedsoda`` (``fl.options``); the shared ones as in ``fedavg_lora``.

    data: must have ``n_public >= 1`` (calibration, divergence probe and ODA use the public
        split; default 32).
    sgp_keep: layers the sub-model keeps (first and last included), or None with
        ``sgp_threshold``: cut between consecutive middle layers whose outputs' similarity
        is below it. sgp_metric: ``cosine`` or ``cka``. sgp_calibration: public examples
        SGP runs on.
    nf4_block_size, nf4_absmax_dtype: NF4 blocks (64) and how absmax values are stored.
    oda_every: τ, align after rounds t with (t + 1) % τ == 0 (0: never on schedule).
    oda_threshold: δ, also align when the divergence exceeds it (None: never by divergence).
    oda_steps, oda_batch_size, oda_lr: the server's alignment steps on public batches.
    oda_initial_steps: alignment steps before round 0 (heals the pruned model; 0: none).
    lambda_lm, lambda_h, lambda_kl: weights of the alignment loss terms.
    probe_batch_size: public examples of the divergence probe batch.
    eval_full: also evaluate the adapters plugged into the full model.
    """

    model: AnyModelSpec = Field(ModelSpec(), description=(
        "The full model: a name/path (e.g. smollm2), {kind: pretrained, ...} or {kind: tiny, ...}."))
    data: DataSpec = Field(DataSpec(n_public=32), description=(
        "The task data and its splits (n_public >= 1: SGP calibration, probe and ODA use it)."))
    upload_dtype: WireDtype = Field("fp16", description="How the uploaded adapter travels.")
    download_dtype: WireDtype = Field("fp16", description="How the global adapter travels.")
    sgp_keep: int | None = Field(8, ge=2, description=(
        "Layers the sub-model keeps (first and last included); null: use sgp_threshold."))
    sgp_threshold: float | None = Field(None, description=(
        "Cut between middle layers whose outputs' similarity is below it (with sgp_keep: null)."))
    sgp_metric: SimilarityMetric = Field("cosine", description="Layer similarity: cosine or cka.")
    sgp_calibration: int = Field(16, ge=1, description="Public examples SGP runs on.")
    nf4_block_size: int = Field(64, ge=2, description="NF4 quantisation block size (even).")
    nf4_absmax_dtype: AbsmaxDtype = Field("fp32", description="How NF4 block scales are stored.")
    oda_every: int = Field(2, ge=0, description=(
        "tau: align after rounds t with (t + 1) % tau == 0; 0: never on schedule."))
    oda_threshold: float | None = Field(None, ge=0, description=(
        "delta: also align when the divergence exceeds it (null: never by divergence)."))
    oda_steps: int = Field(4, ge=1, description="Server alignment steps per alignment.")
    oda_batch_size: int = Field(8, ge=1, description="Public examples per alignment step.")
    oda_lr: float = Field(2e-3, gt=0, description="Learning rate of the alignment.")
    oda_initial_steps: int = Field(10, ge=0, description=(
        "Alignment steps before round 0 (heals the pruned model); 0: none."))
    lambda_lm: float = Field(1.0, ge=0, description="Weight of the LM term of the alignment loss.")
    lambda_h: float = Field(1.0, ge=0, description="Weight of the hidden-state term.")
    lambda_kl: float = Field(1.0, ge=0, description="Weight of the KL term.")
    probe_batch_size: int = Field(8, ge=1, description="Public examples of the divergence probe.")
    eval_full: bool = Field(True, description="Also evaluate the adapters in the full model.")

    @model_validator(mode="after")
    def _consistent(self) -> "FedSODAConfig":
        if (self.sgp_keep is None) == (self.sgp_threshold is None):
            raise ValueError(
                "fedsoda needs exactly one of sgp_keep and sgp_threshold. Got sgp_keep="
                f"{self.sgp_keep}, sgp_threshold={self.sgp_threshold}. Fix: to use a threshold set "
                "sgp_keep: null."
            )
        if self.data.n_public < 1:
            raise ValueError(
                f"fedsoda needs public data (SGP calibration, divergence probe, ODA). Got data.n_public="
                f"{self.data.n_public}. Fix: set data.n_public >= 1 (e.g. 32)."
            )
        if self.nf4_block_size % 2:
            raise ValueError(f"nf4_block_size must be even. Got {self.nf4_block_size} instead. "
                             "Fix: give an even block size, e.g. 64.")
        return self

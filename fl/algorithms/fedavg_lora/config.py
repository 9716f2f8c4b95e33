"""Options of ``fedavg_lora`` (``fl.options`` with ``fl.algorithm: fedavg_lora``); torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl.core.config import WireDtype
from fl.lm.specs import LMConfig

__all__ = ["FedAvgLoRAConfig"]


class FedAvgLoRAConfig(LMConfig):
    """Options of ``fedavg_lora`` (``fl.options`` in a scenario).

    model, lora, data, partition, local_steps, batch_size, lr, weight_decay, header_bits,
    eval_every, eval_batch_size, data_seed, seed_offset, cache_dir: the options every
    language-model learner shares (:class:`~fl.lm.specs.LMConfig`).
    upload_dtype, download_dtype: how adapters travel (fp32, fp16, bf16, int8).
    upload: ``adapter`` (the trained adapter) or ``delta`` (trained − received).
    model_download: model the one-time download of the frozen base model at a client's
        first participation (``Receive`` labelled ``base_model`` before the adapter), sent
        with ``model_download_dtype``; off by default (the phones already hold the model).
    """

    upload_dtype: WireDtype = Field("fp16", description="How the uploaded adapter travels.")
    download_dtype: WireDtype = Field("fp16", description="How the global adapter travels.")
    upload: Literal["adapter", "delta"] = Field("adapter", description=(
        "adapter: the trained adapter; delta: trained minus received."))
    model_download: bool = Field(False, description=(
        "Model the one-time download of the frozen base model at a client's first round."))
    model_download_dtype: WireDtype = Field("fp16", description="How that base model travels.")

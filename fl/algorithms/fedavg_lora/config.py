"""Options of ``fedavg_lora`` (``fl.options`` with ``fl.algorithm: fedavg_lora``); torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl.partition import DirichletPartition, PartitionSpec
from fl.specs import AlgorithmConfig, AnyModelSpec, DataSpec, LoraSpec, ModelSpec, WireDtype

__all__ = ["FedAvgLoRAConfig"]


class FedAvgLoRAConfig(AlgorithmConfig):
    """Options of ``fedavg_lora`` (``fl.options`` in a scenario).

    model: a :class:`~fl.specs.ModelSpec` (or just its name, e.g. ``smollm2``) or a
        :class:`~fl.specs.TinyLlamaSpec` (``{kind: tiny, ...}``).
    lora: adapter rank, alpha, dropout, target modules.
    data: dataset, columns, length filter, per-class cap, max_len, n_test, n_public.
    partition: how the training pool is split among clients (``kind``: iid, dirichlet,
        shards, by_category, with their options).
    local_steps, batch_size, lr, weight_decay: local AdamW training per round.
    upload_dtype, download_dtype: how adapters travel (fp32, fp16, bf16, int8).
    upload: ``adapter`` (the trained adapter) or ``delta`` (trained − received).
    header_bits: modelled header bits added to every payload.
    model_download: model the one-time download of the frozen base model at a client's
        first participation (``Receive`` labelled ``base_model`` before the adapter), sent
        with ``model_download_dtype``; off by default (the phones already hold the model).
    eval_every: evaluate the global model after rounds where (round + 1) % eval_every == 0
        (and after the host's last round).
    eval_batch_size: prompts per evaluation forward pass.
    data_seed: seed of the data splits (test set, partition); None uses the run's seed.
    seed_offset: added to the run's seed for the training streams (LoRA init, batches).
    cache_dir: model cache root (default ``$FEDWAVE_CACHE`` or ``~/.cache/fedwave/models``).
    """

    model: AnyModelSpec = Field(ModelSpec(), description=(
        "The model: a name/path (e.g. smollm2), {kind: pretrained, ...} or {kind: tiny, ...}."))
    lora: LoraSpec = Field(LoraSpec(), description="LoRA adapters: rank, alpha, dropout, modules.")
    data: DataSpec = Field(DataSpec(), description="The task data and its splits.")
    partition: PartitionSpec = Field(DirichletPartition(), description=(
        "How the training pool is split among clients (iid, dirichlet, shards, by_category)."))
    local_steps: int = Field(5, ge=1, description="Local AdamW steps per round.")
    batch_size: int = Field(8, ge=1, description="Examples per local step.")
    lr: float = Field(2e-3, gt=0, description="Learning rate of the local AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay of the local AdamW.")
    upload_dtype: WireDtype = Field("fp16", description="How the uploaded adapter travels.")
    download_dtype: WireDtype = Field("fp16", description="How the global adapter travels.")
    upload: Literal["adapter", "delta"] = Field("adapter", description=(
        "adapter: the trained adapter; delta: trained minus received."))
    header_bits: int = Field(0, ge=0, description="Modelled header bits of every payload.")
    model_download: bool = Field(False, description=(
        "Model the one-time download of the frozen base model at a client's first round."))
    model_download_dtype: WireDtype = Field("fp16", description="How that base model travels.")
    eval_every: int = Field(1, ge=1, description="Evaluate after every eval_every rounds.")
    eval_batch_size: int = Field(16, ge=1, description="Prompts per evaluation forward pass.")
    data_seed: int | None = Field(None, ge=0, description=(
        "Seed of the data splits (test set, partition); null: the run's seed."))
    seed_offset: int = Field(0, ge=0, description="Added to the run's seed for training streams.")
    cache_dir: str | None = Field(None, description=(
        "Model cache root (null: $FEDWAVE_CACHE or ~/.cache/fedwave/models)."))

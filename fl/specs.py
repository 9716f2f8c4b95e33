"""Small frozen configs shared by the learning algorithms (torch-free, pydantic).

They validate YAML (``fl.options``) at load time: unknown keys are errors, and every error
names the key, the constraint and the value received. Building the objects they describe
(models, datasets) lives in :mod:`fl.models` and :mod:`fl.data`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = ["ModelSpec", "TinyLlamaSpec", "AnyModelSpec", "LoraSpec", "DataSpec", "Dtype", "WireDtype"]

Dtype = Literal["float32", "bfloat16", "float16"]
WireDtype = Literal["fp32", "fp16", "bf16", "int8"]  # how tensors travel (fl.payload)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    """A pretrained causal LM.

    name_or_path: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct GGUF), a Hugging Face id
        already in the local cache, a local model directory, or a ``.gguf`` file.
    keep_layers: indices of the decoder layers to keep (increasing), or None for all.
    dtype: dtype of the base weights once loaded.
    """

    kind: Literal["pretrained"] = "pretrained"
    name_or_path: str = "smollm2"
    keep_layers: tuple[int, ...] | None = None
    dtype: Dtype = "float32"

    @field_validator("keep_layers")
    @classmethod
    def _increasing(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if len(v) == 0 or min(v) < 0 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(
                f"keep_layers must be a non-empty, strictly increasing list of layer indices >= 0. "
                f"Got {list(v)} instead."
            )
        return v


class TinyLlamaSpec(_Spec):
    """A tiny random-initialised Llama (tests, benchmarks) with SmolLM2's tokenizer.

    vocab_size: None uses the tokenizer's (49152); a smaller value gives a model whose logits
        cover only the first ``vocab_size`` token ids (FLOP-model tests).
    """

    kind: Literal["tiny"] = "tiny"
    n_layers: int = Field(2, gt=0)
    hidden: int = Field(64, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int = Field(2, gt=0)
    intermediate: int = Field(128, gt=0)
    vocab_size: int | None = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    dtype: Dtype = "float32"

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaSpec":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}).")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads}).")
        return self


def _model_shorthand(value: Any) -> Any:
    """``model: smollm2`` in YAML means ``{kind: pretrained, name_or_path: smollm2}``."""
    if isinstance(value, str):
        return {"kind": "pretrained", "name_or_path": value}
    if isinstance(value, dict) and "kind" not in value:
        return {"kind": "pretrained", **value}
    return value


AnyModelSpec = Annotated[
    Union[ModelSpec, TinyLlamaSpec],
    Field(discriminator="kind"),
    BeforeValidator(_model_shorthand),
]


class LoraSpec(_Spec):
    """LoRA adapters (peft): rank, scaling alpha, dropout, and the module names adapted."""

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not m for m in v):
            raise ValueError(f"target_modules must list module names, e.g. ['q_proj', 'v_proj']. Got {list(v)} instead.")
        return v


class DataSpec(_Spec):
    """The task data.

    dataset: ``"fortunes"`` (the embedded fortune-collection task), a ``.jsonl``/``.csv`` file,
        or a local Hugging Face ``datasets`` directory (``save_to_disk`` output, or a folder of
        data files ``load_dataset`` can read).
    text_column, label_column: column names for local files / HF datasets.
    split: split of a HF ``DatasetDict`` (default: ``train`` if present, else the only one).
    instruction: the question put before the text; None uses the dataset's own.
    min_chars, max_chars: keep texts whose length (characters) lies in this range.
    max_per_class: cap per label (the first ones in a fixed shuffled order); None = no cap.
    max_len: the most tokens per example (prompt + answer); longer texts are cut. Batches are
        padded to their longest example, not to max_len.
    n_test: size of the held-out test set (balanced over labels as far as possible).
    n_public: size of the public/proxy split (distillation); 0 for none.
    """

    dataset: str = "fortunes"
    text_column: str = "text"
    label_column: str = "label"
    split: str | None = None
    instruction: str | None = None
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(200, gt=0)
    max_per_class: int | None = Field(1000, gt=0)
    max_len: int = Field(128, ge=8)
    n_test: int = Field(60, gt=0)
    n_public: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> "DataSpec":
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must be <= max_chars ({self.max_chars})."
            )
        return self

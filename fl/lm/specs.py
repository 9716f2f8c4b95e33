"""Small frozen configs shared by the learning algorithms (torch-free, pydantic).

They validate YAML (``fl.options``) at load time: unknown keys are errors, NaN and
infinities are refused, and every error names the key, the constraint and the value
received. Building the objects they describe (models, datasets) lives in :mod:`fl.lm.models`
and :mod:`fl.lm.data`;
:class:`LMConfig` holds the options every language-model learner shares.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from fl.core.config import AlgorithmConfig, Spec
from fl.lm.partition import DirichletPartition, PartitionSpec

__all__ = ["ModelSpec", "TinyLlamaSpec", "AnyModelSpec", "LoraSpec", "TopLayers", "DataSpec", "LMConfig",
           "Dtype", "known_n_layers", "EMBEDDED_N_LAYERS"]

Dtype = Literal["float32", "bfloat16", "float16"]


class ModelSpec(Spec):
    """A pretrained causal LM.

    name_or_path: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct GGUF), a Hugging Face id
        already in the local cache, a local model directory, or a ``.gguf`` file.
    keep_layers: indices of the decoder layers to keep (increasing), or None for all.
    dtype: dtype of the base weights once loaded.
    """

    kind: Literal["pretrained"] = Field("pretrained", description="A pretrained causal LM.")
    name_or_path: str = Field("smollm2", min_length=1, description=(
        "'smollm2' (the embedded SmolLM2-135M-Instruct), a Hugging Face id already in the "
        "local cache, a local model directory or a .gguf file (relative paths: from the "
        "working directory)."))
    keep_layers: tuple[int, ...] | None = Field(None, description=(
        "Indices of the decoder layers to keep (strictly increasing, >= 0); null: all."))
    dtype: Dtype = Field("float32", description="dtype of the base weights once loaded.")

    @field_validator("keep_layers")
    @classmethod
    def _increasing(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if len(v) == 0 or min(v) < 0 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(
                f"keep_layers must be a non-empty, strictly increasing list of layer indices >= 0. "
                f"Got {list(v)} instead. Fix: list layer indices in increasing order, e.g. [0, 1, 29], "
                f"or null for all."
            )
        return v


class TinyLlamaSpec(Spec):
    """A tiny random-initialised Llama (tests, benchmarks) with SmolLM2's tokenizer.

    vocab_size: None uses the tokenizer's (49152); a smaller value gives a model whose logits
        cover only the first ``vocab_size`` token ids (FLOP-model tests).
    """

    kind: Literal["tiny"] = Field("tiny", description="A tiny random-initialised Llama.")
    n_layers: int = Field(2, gt=0, description="Decoder layers.")
    hidden: int = Field(64, gt=0, description="Hidden size (a multiple of heads).")
    heads: int = Field(4, gt=0, description="Attention heads (a multiple of kv_heads).")
    kv_heads: int = Field(2, gt=0, description="Key/value heads.")
    intermediate: int = Field(128, gt=0, description="MLP intermediate size.")
    vocab_size: int | None = Field(None, gt=0, description=(
        "Logits over the first vocab_size token ids; null: the tokenizer's (49152)."))
    seed: int = Field(0, ge=0, description="Seed of the random initialisation.")
    dtype: Dtype = Field("float32", description="dtype of the weights.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaSpec":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}). "
                             "Fix: change hidden or heads.")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads}). "
                             "Fix: change heads or kv_heads.")
        return self


#: Decoder layers of the embedded model (``smollm2``: SmolLM2-135M-Instruct).
EMBEDDED_N_LAYERS = 30


def known_n_layers(spec: "ModelSpec | TinyLlamaSpec") -> int | None:
    """Decoder layers of the model ``spec`` describes, when known without loading it: a tiny
    model's ``n_layers``, the kept layers of ``keep_layers``, the embedded SmolLM2's 30;
    None for other pretrained models (checked when they load)."""
    if isinstance(spec, TinyLlamaSpec):
        return spec.n_layers
    if spec.keep_layers is not None:
        return len(spec.keep_layers)
    return EMBEDDED_N_LAYERS if spec.name_or_path.lower() == "smollm2" else None


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


class TopLayers(Spec):
    """The top ``top`` decoder layers (``{top: 8}`` on a 30-layer model: layers 22..29)."""

    top: int = Field(gt=0, le=1000, description="How many of the last decoder layers get adapters.")


class LoraSpec(Spec):
    """LoRA adapters (peft): rank, scaling alpha, dropout, the module names adapted and the
    decoder layers that get them."""

    rank: int = Field(8, gt=0, description="Adapter rank r.")
    alpha: float = Field(16.0, gt=0, description="Scaling alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: tuple[str, ...] = Field(("q_proj", "v_proj"), description=(
        "Names of the linear modules that get adapters."))
    layers: TopLayers | tuple[int, ...] | None = Field(None, description=(
        "Decoder layers that get adapters: null (all), {top: N} (the last N), or a list of "
        "indices. With adapters in layers >= L only, the hidden states entering layer L are "
        "computed once per example and reused (execution.prefix_cache): a step then runs "
        "only layers >= L."))

    @field_validator("layers")
    @classmethod
    def _layer_list(cls, v):
        if isinstance(v, tuple) and (not v or any(i < 0 for i in v) or len(set(v)) != len(v)):
            raise ValueError(f"layers must be distinct layer indices >= 0. Got {list(v)} instead. "
                             "Fix: e.g. [20, 21, 22] or {top: 8}.")
        return v

    def layer_indices(self, n_layers: int) -> list[int] | None:
        """The adapted layers of an ``n_layers``-layer model (None: all); ValueError naming
        ``lora.layers`` if they do not fit the model."""
        if self.layers is None:
            return None
        if isinstance(self.layers, TopLayers):
            if self.layers.top > n_layers:
                raise ValueError(f"lora.layers: top {self.layers.top} is more than the model's "
                                 f"{n_layers} layers. Fix: top <= {n_layers}.")
            return list(range(n_layers - self.layers.top, n_layers))
        bad = [i for i in self.layers if i >= n_layers]
        if bad:
            raise ValueError(f"lora.layers: {bad} are not layers of this {n_layers}-layer model. "
                             f"Fix: indices in 0..{n_layers - 1}.")
        return sorted(self.layers)

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not m for m in v):
            raise ValueError(f"target_modules must list module names. Got {list(v)} instead. "
                             "Fix: e.g. [q_proj, v_proj].")
        return v


class DataSpec(Spec):
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
    n_test: size of the held-out test set (balanced over labels as far as possible), or
        ``auto`` (the default): up to 1,000 prompts (a 95 % interval of about ±3 points),
        taking at most half of each label's examples so that training keeps the other half.
    n_public: size of the public/proxy split (distillation); 0 for none.
    """

    dataset: str = Field("fortunes", min_length=1, description=(
        "'fortunes' (the embedded fortune-collection task), a .jsonl/.csv file or a local "
        "Hugging Face datasets directory (relative paths: from the working directory)."))
    text_column: str = Field("text", description="Text column of a local file / HF dataset.")
    label_column: str = Field("label", description="Label column of a local file / HF dataset.")
    split: str | None = Field(None, description=(
        "Split of a HF DatasetDict (null: 'train' if present, else the only one)."))
    instruction: str | None = Field(None, description=(
        "The question put before the text (null: the dataset's own)."))
    min_chars: int = Field(20, ge=0, description="Keep texts of at least this many characters.")
    max_chars: int = Field(200, gt=0, description="Keep texts of at most this many characters.")
    max_per_class: int | None = Field(1000, gt=0, description="Cap per label (null: no cap).")
    max_len: int = Field(128, ge=8, description="Most tokens per example (prompt + answer).")
    n_test: Union[int, Literal["auto"]] = Field("auto", description=(
        "Held-out test examples (balanced over labels), or auto: up to 1,000 (±3 points), at "
        "most half of each label's examples."))

    @field_validator("n_test")
    @classmethod
    def _positive_test(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"n_test must be >= 1 or auto. Got {v} instead. Fix: give a positive "
                             "number, or auto.")
        return v
    n_public: int = Field(0, ge=0, description="Public/proxy examples (distillation); 0: none.")

    @model_validator(mode="after")
    def _range(self) -> "DataSpec":
        if self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars ({self.min_chars}) must be <= max_chars ({self.max_chars}). "
                "Fix: lower min_chars or raise max_chars."
            )
        return self


class LMConfig(AlgorithmConfig):
    """The options every language-model learner shares (the base of their configs).

    model: a :class:`ModelSpec` (or just its name, e.g. ``smollm2``) or a
        :class:`TinyLlamaSpec` (``{kind: tiny, ...}``).
    lora: adapter rank, alpha, dropout, target modules.
    data: dataset, columns, length filter, per-class cap, max_len, n_test, n_public.
    partition: how the training pool is split among clients (``kind``: iid, dirichlet,
        shards, by_category, with their options).
    local_steps, batch_size, lr, weight_decay: local AdamW training per round.
    header_bits: modelled header bits added to every payload.
    eval_every: evaluate the global model after rounds where (round + 1) % eval_every == 0
        (and after the host's last round).
    eval_batch_size: prompts per evaluation forward pass.
    data_seed: seed of the data splits (test set, partition); None uses the run's seed.
    seed_offset: added to the run's seed for the training streams (LoRA init, batches).
    cache_dir: model cache root (default ``$FEDWAVE_CACHE`` or ``~/.cache/fedwave/models``).

    A learner whose option means something more specific (kd_topk's ``model`` is the
    server's) redeclares the field with its own default or description.
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
    header_bits: int = Field(0, ge=0, description="Modelled header bits of every payload.")
    eval_every: int = Field(1, ge=1, description="Evaluate after every eval_every rounds.")
    eval_batch_size: int = Field(16, ge=1, description="Prompts per evaluation forward pass.")
    data_seed: int | None = Field(None, ge=0, description=(
        "Seed of the data splits (test set, partition); null: the run's seed."))
    seed_offset: int = Field(0, ge=0, description="Added to the run's seed for training streams.")
    cache_dir: str | None = Field(None, description=(
        "Model cache root (null: $FEDWAVE_CACHE or ~/.cache/fedwave/models)."))

"""Options of ``kd_topk`` (``fl.options`` with ``fl.algorithm: kd_topk``); torch-free."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, model_validator

from fl.core.config import AlgorithmConfig, WireDtype
from fl.lm.specs import AnyModelSpec, DataSpec, LMConfig, ModelSpec

__all__ = ["ProjectionSpec", "KDTopKConfig"]


class ProjectionSpec(AlgorithmConfig):
    """The LoRA-style hidden projection [P1] (off while ``rank`` is 0).

    rank: r numbers per position sent with the logits (A is r × d: Kaiming-uniform like
        LoRA's A, drawn once from the run's seed and shared by every party, frozen).
    client_layer, server_layer: index into each model's hidden states (0: embeddings, i:
        after decoder layer i of that model, −1: the last, after the final norm).
    normalise: MSE on unit-normalised projections (default) or on raw ones.
    """

    rank: int = Field(0, ge=0, description="Numbers per position sent with the logits; 0: off.")
    client_layer: int = Field(-1, description=(
        "Client model's hidden state projected (0: embeddings, i: after layer i, -1: the last)."))
    server_layer: int = Field(-1, description="Server model's hidden state projected (as above).")
    normalise: bool = Field(True, description="MSE on unit-normalised projections (else raw).")


class KDTopKConfig(LMConfig):
    """Options of ``kd_topk`` (``fl.options`` in a scenario); see :mod:`fl.algorithms.kd_topk.algorithm`.

    model: the server model (a :class:`~fl.lm.specs.ModelSpec`, e.g. ``smollm2``, or ``{kind:
        tiny}``). client_keep_layers: the server model's decoder layers the clients keep
        (increasing indices), or None for the whole model.
    lora, data, partition: as in fedavg_lora (``data.n_public`` ≥ ``public_batch_size``).
    local_steps, batch_size, lr, weight_decay: client training per round (AdamW, fresh each round).
    warmup_steps: CE-only LoRA steps a client runs on its private data the first time it
        takes part (before that round's distillation), so that it distils from a model that
        knows its own data — the locally fine-tuned small models KD-FedLLM methods start
        from; their FLOPs count in that round's compute. 0: none.
    server_steps, server_lr: the server's distillation steps per round.
    public_batch_size: public examples per round. positions: ``answer`` or ``all``.
    k: an int, ``full``, ``adaptive`` or ``adaptive_mass``; k_min, k_max (None: V) clip it
        (defaults 8 and 256: a top-k message, never the dense vocabulary, unless asked);
        mass_target: the probability mass of ``adaptive_mass``.
    airtime_s: the airtime the adaptive k is sized for — the sizer gets C = predicted rate ×
        airtime_s — unless the scenario sets ``fl.capacity_budget_s`` (which wins); null:
        the time left to the deadline (which, with a deadline of seconds, gives k_max).
    k_down: entries per position the server sends back (an int or ``full``).
    values: ``logits`` (raw) or ``logprobs`` (log_softmax over V; needed by ``prob_tail``).
    value_dtype: fp32, fp16, bf16 or int8 (absmax per position) for values and projections.
    aggregation: ``adaptive`` [P1], ``zero_pad`` (baseline) or ``prob_tail``.
    weight_by: ``samples`` (client sample counts) or ``k`` (entries per position).
    temperature, alpha, beta: the loss L = CE + α·τ²·KL + β·projection term.
    client_alpha: α in the clients' loss, the weight of the downlink teacher (None: alpha).
        A server that has not learned the task yet teaches its clients its own mistakes; a
        smaller weight lets clients keep what their data taught them.
    mutual: the server sends its logits back and clients distil from them (off by default:
        a server that has not learned yet teaches its clients its mistakes; docs/benchmarks.md).
    header_bits: modelled header bits of every message.
    eval_every, eval_batch_size: server-model evaluation; eval_clients: also evaluate the
        client models (mean/min accuracy of the clients trained so far; slower).
    data_seed, seed_offset, cache_dir: as in fedavg_lora.
    """

    model: AnyModelSpec = Field(ModelSpec(), description=(
        "The server model: a name/path (e.g. smollm2), {kind: pretrained, ...} or {kind: tiny, ...}."))
    client_keep_layers: tuple[int, ...] | None = Field(None, description=(
        "The server model's decoder layers the clients keep (increasing); null: all."))
    data: DataSpec = Field(DataSpec(n_public=64), description=(
        "The task data and its splits (n_public >= public_batch_size)."))
    local_steps: int = Field(5, ge=1, description="Client AdamW steps per round.")
    warmup_steps: int = Field(0, ge=0, description=(
        "CE-only steps a client runs on its data the first time it takes part; 0: none."))
    batch_size: int = Field(8, ge=1, description="Examples per client step.")
    lr: float = Field(2e-3, gt=0, description="Client learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Client weight decay.")
    server_steps: int = Field(5, ge=0, description="Server distillation steps per round.")
    server_lr: float = Field(2e-3, gt=0, description="Server learning rate.")
    public_batch_size: int = Field(8, ge=1, description="Public examples distilled per round.")
    server_batch_size: int | None = Field(None, ge=1, description=(
        "Public examples per server distillation step, drawn from the round's public batch "
        "(epochs of random permutations); null, or no smaller than the public batch: the "
        "whole public batch every step."))
    positions: Literal["answer", "all"] = Field("answer", description=(
        "Positions whose logits travel: the answer's, or every prompt and answer position."))
    k: Union[int, Literal["full", "adaptive", "adaptive_mass"]] = Field("adaptive", description=(
        "Top-k entries per position: a number >= 1, full, adaptive (from the capacity) or "
        "adaptive_mass (the smallest k holding mass_target)."))
    k_min: int = Field(8, ge=1, description="Smallest k.")
    k_max: int | None = Field(256, ge=1, description="Largest k (null: the vocabulary size).")
    airtime_s: float | None = Field(0.02, gt=0, description=(
        "Airtime (s) the adaptive k is sized for: C = predicted rate x airtime_s, unless "
        "fl.capacity_budget_s is set; null: the time left to the deadline."))
    mass_target: float = Field(0.95, gt=0, le=1, description="Probability mass of adaptive_mass.")
    k_down: Union[int, Literal["full"]] = Field(64, description=(
        "Entries per position the server sends back (a number >= 1 or full)."))
    values: Literal["logits", "logprobs"] = Field("logits", description=(
        "Raw logits or log-probabilities (needed by aggregation: prob_tail)."))
    value_dtype: WireDtype = Field("fp16", description="How values and projections travel.")
    aggregation: Literal["adaptive", "zero_pad", "prob_tail"] = Field("adaptive", description=(
        "How the clients' top-k messages are combined."))
    weight_by: Literal["samples", "k"] = Field("samples", description=(
        "Aggregation weights: client sample counts or entries per position."))
    temperature: float = Field(1.0, gt=0, description="Distillation temperature tau.")
    alpha: float = Field(1.0, ge=0, description="Weight of the KL term (server loss).")
    client_alpha: float | None = Field(None, ge=0, description=(
        "Weight of the downlink teacher in the clients' loss (null: alpha)."))
    beta: float = Field(1.0, ge=0, description="Weight of the projection term.")
    projection: ProjectionSpec = Field(ProjectionSpec(), description="The hidden projection [P1].")
    mutual: bool = Field(False, description="The server sends its logits back to the clients.")
    header_bits: int = Field(0, ge=0, description="Modelled header bits of every message.")
    eval_clients: bool = Field(False, description="Also evaluate the client models (slower).")

    @model_validator(mode="after")
    def _consistent(self) -> "KDTopKConfig":
        if isinstance(self.k, int) and self.k < 1:
            raise ValueError(f"k must be >= 1, 'full', 'adaptive' or 'adaptive_mass'. Got {self.k} instead. "
                             "Fix: give k >= 1 or one of the names.")
        if isinstance(self.k_down, int) and self.k_down < 1:
            raise ValueError(f"k_down must be >= 1 or 'full'. Got {self.k_down} instead. "
                             "Fix: give k_down >= 1 or full.")
        if self.k_max is not None and self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min}). "
                             "Fix: raise k_max or lower k_min.")
        if self.aggregation == "prob_tail" and self.values != "logprobs":
            raise ValueError("aggregation 'prob_tail' needs values: logprobs (the tail mass 1 − Σp needs "
                             "the full-vocabulary normaliser). Fix: set values: logprobs.")
        if self.data.n_public < self.public_batch_size:
            raise ValueError(f"data.n_public ({self.data.n_public}) must be >= public_batch_size "
                             f"({self.public_batch_size}). Fix: raise data.n_public.")
        return self

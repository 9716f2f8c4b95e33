"""Options of ``split_lora`` (``fl.options`` with ``fl.algorithm: split_lora``); torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fl.core.config import WireDtype
from fl.lm.specs import LMConfig, known_n_layers

__all__ = ["SplitLoRAConfig"]


class SplitLoRAConfig(LMConfig):
    """Options of ``split_lora`` (``fl.options`` in a scenario).

    model, lora, data, partition: as :class:`~fl.algorithms.fedavg_lora.algorithm.FedAvgLoRAConfig`.
    cut_layer: decoder layers on the client (the cut is after layer ``cut_layer - 1``);
        in [1, n_layers - 1], checked when the model is loaded.
    local_steps, batch_size, lr, weight_decay: local AdamW training per round (the server
        uses the same lr and weight decay for its adapter).
    activation_dtype: how cut-layer activations travel uplink (fp32, fp16, bf16, int8).
    gradient_dtype: how activation gradients travel downlink; None = ``activation_dtype``.
    upload_dtype, download_dtype: how the client-side adapter travels each round.
    header_bits: modelled header bits added to every message.
    client_weighting: client-side adapter average weighted by ``samples`` (local sample
        counts) or by ``steps`` (steps completed this round).
    partial: ``aggregate`` (a client cut off mid-round contributes its adapter after its last
        completed step) or ``discard`` (it contributes only its server-side steps).
    eval_every, eval_batch_size, data_seed, seed_offset, cache_dir: as fedavg_lora.

    Server service (sequential FIFO or parallel) is the scenario's ``server.service``.
    """

    cut_layer: int = Field(2, ge=1, description=(
        "Decoder layers on the client (in [1, n_layers - 1], checked when the model loads)."))
    local_steps: int = Field(5, ge=1, description="Local steps per round.")
    lr: float = Field(2e-3, gt=0, description="Learning rate (client and server adapters).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (client and server).")
    activation_dtype: WireDtype = Field("fp16", description="How cut-layer activations travel up.")
    gradient_dtype: WireDtype | None = Field(None, description=(
        "How activation gradients travel down (null: activation_dtype)."))
    upload_dtype: WireDtype = Field("fp16", description="How the client adapter travels up.")
    download_dtype: WireDtype = Field("fp16", description="How the client adapter travels down.")
    header_bits: int = Field(0, ge=0, description="Modelled header bits of every message.")
    client_weighting: Literal["samples", "steps"] = Field("samples", description=(
        "Client adapter average weighted by sample counts or by steps completed this round."))
    partial: Literal["aggregate", "discard"] = Field("aggregate", description=(
        "A client cut off mid-round: its adapter after its last step counts, or not."))

    def context_problems(self, n_clients: int) -> list[str]:
        """The cut against the model's depth and against ``lora.layers`` (each side must hold
        adapters), when the depth is known without loading the model
        (:func:`fl.lm.specs.known_n_layers`; otherwise checked when the model loads)."""
        n = known_n_layers(self.model)
        if n is not None and not 1 <= self.cut_layer <= n - 1:
            return [f"cut_layer: must be in [1, {n - 1}] for this {n}-layer model (the client "
                    f"and the server each hold at least one layer). Got {self.cut_layer} instead. "
                    f"Fix: a cut_layer from 1 to {n - 1}, or a deeper model."]
        try:
            layers = self.lora.layer_indices(n) if n is not None else None
        except ValueError:
            return []  # lora.layers beyond the model: reported when the model loads
        if layers is not None:
            for side, mine in (("client", [i for i in layers if i < self.cut_layer]),
                               ("server", [i for i in layers if i >= self.cut_layer])):
                if not mine:
                    return [f"cut_layer: the {side} side (layers {'<' if side == 'client' else '>='} "
                            f"{self.cut_layer}) holds no LoRA adapter: lora.layers are {layers}. Got "
                            f"{self.cut_layer} instead. Fix: a cut_layer in [{min(layers) + 1}, "
                            f"{max(layers)}] (adapters on both sides), or adapt other layers."]
        return []

"""A client's LoRA round as it travels, shared by the adapter-averaging learners
(``fedavg_lora`` and ``fedsoda``): the self-contained local-training job (``Send.job``),
what it returns, what aggregation gets, and several clients' jobs trained as one batch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import torch

from fl.core.actions import SendPlan
from fl.core.payload import LoraPayload

if TYPE_CHECKING:
    from fl.lm.algorithm import LMAlgorithm

__all__ = ["LoraUpdate", "TrainedUpload", "LocalTrainJob", "batched_updates"]


@dataclass(frozen=True)
class LoraUpdate:
    """What a client's round hands to aggregation.

    state: the decoded tensors the server received (an adapter, or a delta if ``kind`` is
    ``delta``). bits: the payload's size. train_loss: mean local training loss.
    """

    state: Mapping[str, torch.Tensor]
    kind: str
    bits: int
    train_loss: float


@dataclass(frozen=True)
class TrainedUpload:
    """What a client's local training returns (``Send.work`` or ``Send.job``): the encoded
    upload and the loss of each local step. bits: the payload's size."""

    payload: LoraPayload
    losses: tuple[float, ...]

    @property
    def bits(self) -> int:
        return self.payload.bits


@dataclass(frozen=True)
class LocalTrainJob:
    """One client's local LoRA training, self-contained (a :class:`~fl.core.actions.Job`).

    received: the adapter as downloaded; training starts from its decoded tensors.
    batches: the batch plan, ``local_steps`` lists of dataset indices (drawn before).
    generator_state: the client's torch generator state after drawing the plan
        (``torch.Generator.get_state()``, uint8); local training draws its dropout seed from it.

    The algorithm running it (the host's, or a worker's replica) supplies the model, the
    encoded data and the options through its ``local_update``; the model's LoRA tensors are
    overwritten first, so what it ran before does not matter.
    """

    received: LoraPayload
    batches: tuple[tuple[int, ...], ...]
    generator_state: torch.Tensor

    def __call__(self, algorithm, plan: SendPlan) -> TrainedUpload:
        return algorithm.local_update(self)

    def generator(self) -> torch.Generator:
        """A torch generator in the client's state."""
        gen = torch.Generator()
        gen.set_state(self.generator_state)
        return gen


def batched_updates(algo: "LMAlgorithm", model, prefix, items, upload: str = "adapter") -> list[TrainedUpload] | None:
    """The uploads of several clients' :class:`LocalTrainJob` s (``items``: (job, plan)
    pairs) trained as one batch on ``model`` (:func:`fl.lm.multilora.train_clients`, from
    ``prefix``'s cached states when there is one): each equals what the client's own update
    gives, to float tolerance. None when they cannot share a batch — one job, LoRA dropout,
    or plans of unequal shape. ``upload``: ``adapter`` or ``delta`` (trained − received)."""
    from fl.lm.multilora import train_clients

    cfg = algo.config
    jobs = [job for job, _ in items]
    if len(jobs) < 2 or cfg.lora.dropout > 0 or not all(isinstance(j, LocalTrainJob) for j in jobs) \
            or len({(len(j.batches), *map(len, j.batches)) for j in jobs}) != 1:
        return None
    starts = [j.received.decode() for j in jobs]
    trained = train_clients(model, algo.task, starts, [j.batches for j in jobs], cfg.lr, cfg.weight_decay,
                            prefix=prefix, forward_ctx=algo.forward_ctx)
    out = []
    for start, (state, losses) in zip(starts, trained):
        if upload == "delta":
            state = OrderedDict((n, state[n] - start[n]) for n in state)
        out.append(TrainedUpload(LoraPayload.encode(state, cfg.upload_dtype, cfg.header_bits), tuple(losses)))
    return out

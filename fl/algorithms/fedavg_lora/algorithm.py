"""fedavg_lora — FedLLM with parameter sharing [P3].

Round t, for each selected client i:

1. ``Receive``: the global LoRA adapter, encoded with ``download_dtype`` (what the client
   trains from is the decoded payload, quantisation error included).
2. ``Compute``: ``local_steps`` LoRA steps on the client's shard; the FLOPs are exact for the
   batches it will draw (:mod:`fl.lm.flops`), known before any real work runs.
3. ``Send``: the adapter (or its change, ``upload: delta``) encoded with ``upload_dtype``;
   size Σ r·(d_in + d_out) × bits per value (+ int8 scales, + header). The real local
   training runs only when the upload completes (``Send.work``), so a client whose upload
   fails costs no real compute. The same training travels as ``Send.job`` (a
   :class:`LocalTrainJob`: the received adapter, the batch plan, the generator state), so a
   host with worker processes may train the clients of a round in parallel, each worker on
   its own replica of the model, with results identical to inline training.

The server averages the received adapters weighted by local sample counts
(:func:`fl.core.aggregation.fedavg`); failed clients contribute nothing and are counted.

One model instance serves every client: before a client trains, the adapter it received is
copied into the shared model's LoRA tensors, and its result is read back out, so client
updates are independent of the order in which they run (and of the process they run in).

References:

[P3] N. Yan, Y. Su, Y. Deng, R. Schober, "Federated Fine-Tuning of LLMs: Framework
     Comparison and Research Directions", arXiv:2501.04436.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
import torch

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, SendPlan
from fl.core.aggregation import fedavg
from fl.core.algorithm import AlgorithmContext
from fl.algorithms.fedavg_lora.config import FedAvgLoRAConfig
from fl.lm.algorithm import LMAlgorithm
from fl.lm.lora_update import LocalTrainJob, LoraUpdate, TrainedUpload, batched_updates
from fl.lm.flops import profile
from fl.lm.models import add_lora, bytes_resident, count_parameters, count_trainable, load_model, lora_shapes, \
    lora_state, set_lora_state
from fl.core.payload import DTYPE_BITS, LoraPayload, payload_bits
from fl.core.seeding import int_seed
from fl.core.config import WireDtype
from fl.lm.train import draw_batches

__all__ = ["FedAvgLoRAConfig", "FedAvgLoRA", "BaseModelPayload"]


@dataclass(frozen=True)
class BaseModelPayload:
    """The frozen base model as it travels once per client (``model_download``): sizes only.

    n_values: frozen parameters (tied embeddings counted once); bits per value from
    ``dtype`` (fp32 32, fp16/bf16 16, int8 8 — int8 scales are not modelled).
    """

    n_values: int
    dtype: WireDtype
    header_bits: int = 0

    @property
    def bits(self) -> int:
        return self.n_values * DTYPE_BITS[self.dtype] + int(self.header_bits)


class FedAvgLoRA(LMAlgorithm):
    """FedAvg over LoRA adapters; see the module docstring."""

    name = "fedavg_lora"
    Config = FedAvgLoRAConfig

    def __init__(self, config: FedAvgLoRAConfig, context: AlgorithmContext) -> None:
        super().__init__(config, context)
        data_root = self.seed_roots(config, context)

        base, self.tokenizer = load_model(config.model, config.cache_dir)
        self.model = add_lora(base.to(self.device), config.lora, seed=int_seed(self.train_root, "lora_init"))
        self.flop_profile = profile(self.model)
        self.shapes = lora_shapes(self.model)

        self.setup_task(config, context, self.tokenizer, data_root)
        self.prefix = self.make_prefix(self.model, self.task)  # None: every step runs the whole model

        self.global_state = lora_state(self.model)
        self.version = 0  # aggregations so far
        self._download: tuple[int, LoraPayload] | None = None
        n_frozen = count_parameters(self.model) - count_trainable(self.model)  # tied weights once
        self.base_payload = BaseModelPayload(n_frozen, config.model_download_dtype, config.header_bits)
        self._holders: set[int] = set()  # clients that hold the base model (model_download)

    # --- the contract -----------------------------------------------------------------------

    def client_round(self, rnd: int, client: int):
        cfg = self.config
        if cfg.model_download and client not in self._holders:
            yield Receive(self.base_payload, label="base_model")
            self._holders.add(client)  # only once the download completed
        received = yield Receive(self.download_payload(), label="model")
        gen = torch.Generator().manual_seed(int_seed(self.train_root, "train", client, rnd))
        # index lists only (cheap); they fix the FLOPs before any real work runs
        plan = draw_batches(self.client_idx[client], cfg.batch_size, cfg.local_steps, gen)
        yield Compute(flops=self.train_flops(plan), label="train")
        job = LocalTrainJob(received, tuple(map(tuple, plan)), gen.get_state())
        sent = yield Send(sizer=self.size_update, work=partial(job, self), job=job, label="update")
        return LoraUpdate(sent.payload.decode(), cfg.upload, sent.bits, float(np.mean(sent.losses)))

    def local_update(self, job: LocalTrainJob) -> TrainedUpload:
        """Run ``job`` on this instance's model: ``local_steps`` AdamW steps from the received
        adapter; the upload is the trained adapter (or its change, ``upload: delta``)."""
        cfg = self.config
        start = job.received.decode()
        set_lora_state(self.model, start)
        losses = self.train_model(self.model, self.prefix, job.batches, cfg.lr, job.generator(),
                                  cfg.weight_decay)
        trained = lora_state(self.model)
        if cfg.upload == "delta":
            trained = OrderedDict((n, trained[n] - start[n]) for n in trained)
        return TrainedUpload(LoraPayload.encode(trained, cfg.upload_dtype, cfg.header_bits), tuple(losses))

    def run_jobs(self, items):
        """Several clients' :class:`LocalTrainJob` s as one batched multi-LoRA training (see
        :func:`batched_updates`); one after another when they cannot share a batch."""
        out = batched_updates(self, self.model, self.prefix, items, self.config.upload)
        return out if out is not None else super().run_jobs(items)

    def size_update(self, capacity_bits: float) -> SendPlan:
        """The upload's exact size; a fixed-size adapter ignores the capacity."""
        return SendPlan(bits=self.upload_bits, info={"dtype": self.config.upload_dtype})

    def aggregate(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]) -> Mapping[str, float]:
        if results:
            mean = fedavg([r.update.state for r in results], [r.n_samples for r in results])
            if self.config.upload == "delta":
                mean = OrderedDict((n, self.global_state[n] + mean[n]) for n in mean)
            self.global_state = mean
            self.version += 1
        losses = [r.update.train_loss for r in results]
        return {
            "n_aggregated": float(len(results)),
            "n_failed": float(len(failures)),
            "train_loss": float(np.mean(losses)) if losses else math.nan,
        }

    def evaluate(self, rnd: int) -> Mapping[str, float]:
        """Accuracy and loss of the global model on the test set after round ``rnd``, or {}
        when ``rnd`` is not an evaluation round (:meth:`~fl.core.algorithm.Algorithm.is_eval_round`:
        every ``eval_every`` rounds, the initial model (rnd = -1) and the last round)."""
        if not self.is_eval_round(rnd, self.config.eval_every):
            return {}
        return self.evaluate_global()

    # --- helpers the host may use ----------------------------------------------------------

    def evaluate_global(self) -> dict[str, float]:
        """Accuracy and answer loss of the current global adapter on the test set."""
        set_lora_state(self.model, self.global_state)
        m = self.eval_model(self.model, self.prefix, self.test_idx, self.config.eval_batch_size)
        return self.reported(m)

    def download_payload(self) -> LoraPayload:
        """The global adapter encoded for the downlink (encoded once per global version)."""
        if self._download is None or self._download[0] != self.version:
            payload = LoraPayload.encode(self.global_state, self.config.download_dtype, self.config.header_bits)
            self._download = (self.version, payload)
        return self._download[1]

    @property
    def upload_bits(self) -> int:
        return payload_bits(self.shapes, self.config.upload_dtype, self.config.header_bits)

    @property
    def download_bits(self) -> int:
        return payload_bits(self.shapes, self.config.download_dtype, self.config.header_bits)

    def train_flops(self, plan: Sequence[Sequence[int]]) -> float:
        """Matmul FLOPs of training on these batches (index lists)."""
        return self.ce_flops(self.flop_profile, plan)

    def info(self) -> dict[str, float | int | str]:
        """Static facts for a run summary: sizes, storage, payload bits."""
        return {
            "model": getattr(self.config.model, "name_or_path", "tiny"),
            "n_params": count_parameters(self.model),
            "n_trainable": count_trainable(self.model),
            "client_storage_bytes": bytes_resident(self.model),
            "bits_up": self.upload_bits,
            "bits_down": self.download_bits,
            "bits_base_model": self.base_payload.bits,
            "n_train": int(len(self.train_idx)),
            "n_test": int(len(self.test_idx)),
            "n_public": int(len(self.public_idx)),
        }

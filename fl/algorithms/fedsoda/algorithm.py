"""fedsoda — similarity group pruning + orchestrated distillation alignment + QLoRA [P2].

Set-up (server, before round 0):

1. SGP (:mod:`fl.algorithms.fedsoda.sgp`): the full model runs on ``sgp_calibration`` public examples; the
   middle layers are grouped by the similarity of consecutive layers' outputs and one layer
   per group is kept (first and last always). The map kept → original indices is saved to
   ``<run_dir>/sgp_map.json`` with a plot of the similarity matrix.
2. The sub-model (kept layers) gets LoRA adapters; its frozen linear weights inside the
   decoder layers become NF4 (:mod:`fl.algorithms.fedsoda.nf4`, block 64, one absmax per block); embeddings,
   norms and the (tied) head are held at 16 bits (their values are rounded through fp16 so
   the simulation computes with exactly what a client stores).
3. Optionally (``oda_initial_steps``) an initial ODA pass heals the pruned model.

Round t, for each selected client i:

1. At the client's first participation only: ``Receive`` of the sub-model (label
   ``submodel``): exactly 4 bits per quantised weight (packed bytes) + the absmax values +
   16 bits per embedding/norm value + ``header_bits``.
2. ``Receive`` of the global adapter, ``Compute`` of local LoRA training on the sub-model,
   ``Send`` of the adapter — exactly as :mod:`fl.algorithms.fedavg_lora.algorithm`, on the sub-model (its
   ``Send.job`` included: worker replicas skip the initial ODA pass, which changes only
   adapters).

Server, after averaging (:func:`fl.core.aggregation.fedavg`):

- divergence (logged every round, column ``divergence``): on a fixed probe batch of public
  examples, the gradients of the answer loss w.r.t. the LoRA tensors are computed in the
  sub-model (global adapters) and in the full model (the same adapters plugged into the
  original layers ``kept[i]``; the other layers' adapters have B = 0, so they change
  nothing). Only the kept layers' adapters exist in both; for those,
  ``divergence = ‖g_S − g_F‖₂ / ‖g_F‖₂`` over all their tensors concatenated (A and B
  matrices, names matched layer by layer).
- ODA when ``(t + 1) % oda_every == 0`` (``oda_every`` = τ > 0) or ``divergence >
  oda_threshold`` (δ): ``oda_steps`` AdamW steps on the sub-model's adapters over public
  batches with L = λ_lm·CE + λ_h·Σ_groups mean((h_F − h_S)/rms(h_F))² + λ_kl·KL(p_F ‖ p_S).
  h_S is the output of sub-model layer i, h_F the output of the full model at the last
  layer of the group layer i stands for (the last entry is after the final norm in both);
  the mean runs over real tokens and hidden dimensions and rms(h_F) is per token; CE and KL
  are over the answer tokens (teacher: the full model with the current global adapters,
  no gradient). The aligned adapters become the global adapters. Its FLOPs (and those of
  the divergence probe) are yielded as ``ServerCompute`` (label ``oda``).

Evaluation: ``accuracy``/``loss`` of the adapters in the sub-model (what clients run), and
``accuracy_full``/``loss_full`` with the adapters mapped back into the full model.

``lora.layers`` names layers of the sub-model (what clients train); the full model gets its
adapters in the original layers those stand for (``{top: 1}``: the last layer of both).

Device and precision (``execution``): both models sit on the algorithm's device (the NF4
buffers move with the sub-model and dequantise there) and forward passes run under its
autocast, except SGP's calibration pass, which runs in float32 so that the pruned
architecture and the sub-model's size do not depend on the compute precision. Adapters,
payloads and everything aggregated or checkpointed are on the CPU. When a model's adapters
all sit in layers >= L >= 1, its training, divergence probe and evaluation run from its
frozen prefix (:mod:`fl.lm.prefix`): ``prefix`` for the sub-model, ``full_prefix`` for the
full one. ODA runs both models whole (its hidden-state term needs every layer's output).

References:

[P2] M. Zhu et al., "FedSODA: Federated Fine-tuning of LLMs via Similarity Group Pruning
     and Orchestrated Distillation Alignment", arXiv:2508.12727.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, SendPlan, ServerCompute
from fl.core.aggregation import fedavg
from fl.core.algorithm import AlgorithmContext
from fl.algorithms.fedsoda.config import FedSODAConfig
from fl.lm.algorithm import LMAlgorithm, LMReplica
from fl.lm.data import Batch, batch_shape, collate
from fl.lm.lora_update import LocalTrainJob, LoraUpdate, TrainedUpload, batched_updates
from fl.lm.flops import profile
from fl.lm.models import add_lora, count_parameters, count_trainable, keep_layers, load_model, lora_shapes, \
    lora_state, set_lora_state
from fl.algorithms.fedsoda.nf4 import NF4Linear, quantize_model
from fl.core.payload import LoraPayload, payload_bits
from fl.core.seeding import int_seed
from fl.lm.specs import LoraSpec
from fl.algorithms.fedsoda.sgp import SGPResult, similarity_group_pruning
from fl.lm.train import _positions, answer_loss, causal_lm, draw_batches

__all__ = ["FedSODAConfig", "FedSODA", "SubModelPayload"]

_LAYER = re.compile(r"(\.layers\.)(\d+)(\.)")


@dataclass(frozen=True)
class SubModelPayload:
    """The pruned 4-bit sub-model as it travels (once per client): sizes only, exact bits.

    nf4_bytes: packed 4-bit codes + absmax values of the quantised weights. fp16_values:
    embedding, norm (and untied head) values sent at 16 bits. kept: original layer indices.
    """

    nf4_bytes: int
    fp16_values: int
    kept: tuple[int, ...]
    header_bits: int = 0

    @property
    def bits(self) -> int:
        return 8 * self.nf4_bytes + 16 * self.fp16_values + int(self.header_bits)


def _to_original(name: str, kept: Sequence[int]) -> str:
    """Sub-model adapter name -> the full model's name (layer i -> layer kept[i])."""
    return _LAYER.sub(lambda m: f"{m.group(1)}{kept[int(m.group(2))]}{m.group(3)}", name, count=1)


class FedSODA(LMAlgorithm):
    """FedAvg-LoRA on an SGP-pruned, NF4-quantised sub-model with ODA; see the module docstring."""

    name = "fedsoda"
    Config = FedSODAConfig
    # the sub-model's frozen prefix is ``prefix``; the full model's: a fresh build recreates both
    _REBUILT_ATTRS = LMAlgorithm._REBUILT_ATTRS + ("full_prefix",)

    def __init__(self, config: FedSODAConfig, context: AlgorithmContext) -> None:
        super().__init__(config, context)
        cfg = config
        data_root = self.seed_roots(cfg, context)

        base, self.tokenizer = load_model(cfg.model, cfg.cache_dir)
        base = base.to(self.device)
        self.setup_task(cfg, context, self.tokenizer, data_root)
        self.probe_idx = list(self.public_idx[:cfg.probe_batch_size])

        # 1. SGP on the full base model (float32, no autocast: the pruned architecture, and so
        #    the sub-model's payload, is the same whatever the compute precision)
        n_layers = len(causal_lm(base).get_decoder().layers)
        if cfg.sgp_keep is not None and cfg.sgp_keep > n_layers:
            raise ValueError(f"fedsoda sgp_keep must be <= the model's {n_layers} layers. Got {cfg.sgp_keep} instead.")
        self.sgp: SGPResult = similarity_group_pruning(
            base, self.task, list(self.public_idx[:cfg.sgp_calibration]), n_keep=cfg.sgp_keep,
            threshold=cfg.sgp_threshold, metric=cfg.sgp_metric)
        self.kept = self.sgp.kept
        if context.run_dir is not None:
            self.sgp.save(context.run_dir)

        # 2. the sub-model: kept layers, 16-bit embeddings/norms, LoRA, NF4 base weights
        sub_base = keep_layers(copy.deepcopy(base), self.kept)
        with torch.no_grad():
            for p in sub_base.parameters():
                p.copy_(p.half().to(p.dtype))  # what a client stores: 16-bit values
        lora_seed = int_seed(self.train_root, "lora_init")
        self.sub = add_lora(sub_base, cfg.lora, seed=lora_seed)
        self.sub_profile = profile(self.sub)  # before NF4: same matmuls, nn.Linear hooks
        self.quantized = quantize_model(self.sub, lambda name, lin: ".layers." in name,
                                        cfg.nf4_block_size, cfg.nf4_absmax_dtype)
        self.full = add_lora(base, self._full_lora(cfg.lora), seed=lora_seed)
        self.full_profile = profile(self.full)
        self.full_init_state = lora_state(self.full)
        self.shapes = lora_shapes(self.sub)
        self.name_map = OrderedDict((n, _to_original(n, self.kept)) for n in self.shapes)
        missing = [o for o in self.name_map.values() if o not in self.full_init_state]
        if missing:
            raise RuntimeError(f"fedsoda: sub-model adapters {missing[:2]} have no counterpart in the full model.")
        self.submodel_payload = self._submodel_payload()
        # ODA and the divergence probe change adapters only, which sit at or above each
        # prefix's layer: neither prefix is ever invalidated (see align). Two caches share
        # execution.prefix_cache_mb.
        self.prefix = self.make_prefix(self.sub, self.task)
        self.full_prefix = self.make_prefix(self.full, self.task)
        if self.prefix is not None and self.full_prefix is not None:
            self.prefix.max_bytes = self.full_prefix.max_bytes = self.prefix.max_bytes // 2

        self.global_state = lora_state(self.sub)
        self.version = 0
        self._download: tuple[int, LoraPayload] | None = None
        self._holders: set[int] = set()  # clients that hold the sub-model
        self._server_flops = 0.0
        self.oda_initial_loss = math.nan
        self.oda_initial_flops = 0.0
        if cfg.oda_initial_steps:
            self.oda_initial_loss, self.oda_initial_flops = self.align(cfg.oda_initial_steps, ("oda_initial",))

    def _full_lora(self, lora: LoraSpec) -> LoraSpec:
        """The full model's LoRA spec: ``lora.layers`` names sub-model layers, so the full
        model's adapters go to the original layers ``kept[i]`` they stand for (every sub
        adapter then has its counterpart in ``name_map``)."""
        if lora.layers is None:
            return lora
        return lora.model_copy(update={"layers": tuple(self.kept[i] for i in lora.layer_indices(len(self.kept)))})

    # --- the contract -----------------------------------------------------------------------

    def client_round(self, rnd: int, client: int):
        cfg = self.config
        if client not in self._holders:
            yield Receive(self.submodel_payload, label="submodel")
            self._holders.add(client)  # only once the download completed
        received = yield Receive(self.download_payload(), label="model")
        gen = torch.Generator().manual_seed(int_seed(self.train_root, "train", client, rnd))
        plan = draw_batches(self.client_idx[client], cfg.batch_size, cfg.local_steps, gen)
        yield Compute(flops=self.train_flops(plan), label="train")
        job = LocalTrainJob(received, tuple(map(tuple, plan)), gen.get_state())
        sent = yield Send(sizer=self.size_update, work=partial(job, self), job=job, label="update")
        return LoraUpdate(sent.payload.decode(), "adapter", sent.bits, float(np.mean(sent.losses)))

    def local_update(self, job: LocalTrainJob) -> TrainedUpload:
        """Run ``job`` (see :class:`fl.lm.lora_update.LocalTrainJob`) on the sub-model."""
        cfg = self.config
        set_lora_state(self.sub, job.received.decode())
        losses = self.train_model(self.sub, self.prefix, job.batches, cfg.lr, job.generator(), cfg.weight_decay)
        return TrainedUpload(LoraPayload.encode(lora_state(self.sub), cfg.upload_dtype, cfg.header_bits),
                             tuple(losses))

    def run_jobs(self, items):
        """Several clients' jobs as one batched multi-LoRA training on the sub-model
        (:func:`fl.lm.lora_update.batched_updates`); one after another when they cannot share
        a batch."""
        out = batched_updates(self, self.sub, self.prefix, items)
        return out if out is not None else super().run_jobs(items)

    def replica(self) -> LMReplica:
        """As :meth:`LMAlgorithm.replica`, without the initial ODA pass: it changes only the
        global adapters, which a job carries, not the sub-model's frozen weights."""
        rep = super().replica()
        return dataclasses.replace(rep, config=self.config.model_copy(update={"oda_initial_steps": 0}))

    def size_update(self, capacity_bits: float) -> SendPlan:
        return SendPlan(bits=self.upload_bits, info={"dtype": self.config.upload_dtype})

    def server_round(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]):
        metrics = dict(self.aggregate(rnd, results, failures))
        if self._server_flops > 0:
            yield ServerCompute(flops=self._server_flops, label="oda")
        return metrics

    def aggregate(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]) -> Mapping[str, float]:
        cfg = self.config
        if results:
            self.global_state = fedavg([r.update.state for r in results], [r.n_samples for r in results])
            self.version += 1
        self._server_flops = 2.0 * self._probe_flops()
        div = self.divergence()
        scheduled = cfg.oda_every > 0 and (rnd + 1) % cfg.oda_every == 0
        triggered = cfg.oda_threshold is not None and div > cfg.oda_threshold
        row = {
            "n_aggregated": float(len(results)),
            "n_failed": float(len(failures)),
            "train_loss": float(np.mean([r.update.train_loss for r in results])) if results else math.nan,
            "divergence": div,
            "oda": float(scheduled or triggered),
            "oda_loss": math.nan,
            "divergence_after": math.nan,
        }
        if scheduled or triggered:
            row["oda_loss"], flops = self.align(cfg.oda_steps, ("oda", rnd))
            self._server_flops += flops + self._probe_flops()
            row["divergence_after"] = self.divergence()
        return row

    def evaluate(self, rnd: int) -> Mapping[str, float]:
        if not self.is_eval_round(rnd, self.config.eval_every):
            return {}
        return self.evaluate_global()

    # --- SODA's server side --------------------------------------------------------------------

    def full_state(self, state: Mapping[str, torch.Tensor] | None = None) -> "OrderedDict[str, torch.Tensor]":
        """The full model's adapter state with ``state`` (default: the global adapters) in the
        kept layers (original indices) and the initial adapters (B = 0: no effect) elsewhere."""
        state = self.global_state if state is None else state
        out = OrderedDict((n, t.clone()) for n, t in self.full_init_state.items())
        for n, t in state.items():
            out[self.name_map[n]] = t.clone()
        return out

    def _grads(self, model, prefix, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """name -> gradient of the answer loss of the batch ``idx`` w.r.t. each LoRA tensor
        (from ``prefix``'s cached states when there is one)."""
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            with self.forward_ctx():
                loss = prefix.answer_loss(idx) if prefix is not None else \
                    answer_loss(model, collate(self.task, idx))
            loss.backward()
        out = {n: p.grad.detach().clone() for n, p in params.items()}
        model.zero_grad(set_to_none=True)
        return out

    def divergence(self) -> float:
        """‖g_S − g_F‖₂ / ‖g_F‖₂ over the kept layers' LoRA gradients on the probe batch."""
        set_lora_state(self.sub, self.global_state)
        g_s = self._grads(self.sub, self.prefix, self.probe_idx)
        set_lora_state(self.full, self.full_state())
        g_f = self._grads(self.full, self.full_prefix, self.probe_idx)
        diff = sum(float((g_s[n] - g_f[o]).double().pow(2).sum()) for n, o in self.name_map.items())
        ref = sum(float(g_f[o].double().pow(2).sum()) for o in self.name_map.values())
        return math.sqrt(diff) / max(math.sqrt(ref), 1e-30)

    def _probe_flops(self) -> float:
        B, T, A = batch_shape(self.task, self.probe_idx)
        return float(self.sub_profile.train_step(B, T, head_tokens=A + 1)
                     + self.full_profile.train_step(B, T, head_tokens=A + 1))

    def _forward(self, model, batch: Batch):
        """(hidden states tuple, answer-position logits (n_answer_tokens, V))."""
        T = batch.input_ids.shape[1]
        keep = T - int(batch.target_pos[batch.target_mask].min())
        out = causal_lm(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=_positions(batch.attention_mask), use_cache=False,
                               output_hidden_states=True, logits_to_keep=keep)
        rel = batch.target_pos - (T - keep)
        logits = out.logits.gather(1, rel.clamp(min=0).unsqueeze(-1).expand(-1, -1, out.logits.shape[-1]))
        return out.hidden_states, logits[batch.target_mask].float()  # (n_ans, V)

    def alignment_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """L = λ_lm·CE + λ_h·Σ_groups mean((h_F − h_S)/rms(h_F))² + λ_kl·KL(p_F ‖ p_S) on ``batch``
        (the full model, with its adapter state as set, is the teacher; no gradient through it).
        Both models run whole, under the algorithm's autocast; the loss is float32."""
        cfg = self.config
        batch = batch.to(self.device)
        with self.forward_ctx():
            with torch.no_grad():
                h_f, z_f = self._forward(self.full, batch)
            h_s, z_s = self._forward(self.sub, batch)
        real = batch.attention_mask.bool()  # (B, T)
        hidden = z_s.new_zeros(())
        for i, end in enumerate(self.sgp.group_ends):
            hf, hs = h_f[end + 1][real].float(), h_s[i + 1][real].float()  # (n_real, d)
            rms = hf.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
            hidden = hidden + ((hf - hs) / rms).pow(2).mean()
        ce = F.cross_entropy(z_s, batch.target_ids[batch.target_mask])
        log_pf, log_ps = z_f.log_softmax(-1), z_s.log_softmax(-1)
        kl = (log_pf.exp() * (log_pf - log_ps)).sum(-1).mean()
        loss = cfg.lambda_lm * ce + cfg.lambda_h * hidden + cfg.lambda_kl * kl
        return loss, {"ce": ce.item(), "hidden": hidden.item(), "kl": kl.item()}

    def align(self, steps: int, stream: tuple) -> tuple[float, float]:
        """ODA: ``steps`` AdamW steps of the sub-model's adapters (from the global ones) on
        public batches; the result becomes the global adapter. Returns (mean loss, FLOPs)."""
        cfg = self.config
        # The prefixes stay valid, no clear(): ODA trains exactly the sub-model's parameters
        # with requires_grad (its LoRA tensors), the very ones fl.lm.prefix.prefix_layer chose L
        # from, so all of them sit at or above L; the full model only gets adapters copied in
        # (set_lora_state), likewise at or above its L. The cached states depend only on the
        # frozen embeddings (fp16-rounded) and NF4 layers below L, which nothing here touches.
        # Training anything else (e.g. norms below L) would need self.prefix.clear().
        gen = torch.Generator().manual_seed(int_seed(self.train_root, *stream))
        plan = draw_batches(self.public_idx, cfg.oda_batch_size, steps, gen)
        set_lora_state(self.full, self.full_state())
        set_lora_state(self.sub, self.global_state)
        params = [p for p in self.sub.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.oda_lr)
        losses, flops = [], 0.0
        for idx in plan:
            batch = collate(self.task, idx)
            loss, _ = self.alignment_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            B, T, A = batch_shape(self.task, idx)
            flops += (self.full_profile.forward(B, T, head_tokens=A + 1)  # teacher: no backward
                      + self.sub_profile.train_step(B, T, head_tokens=A + 1))
        self.global_state = lora_state(self.sub)
        self._download = None
        return float(np.mean(losses)), float(flops)

    # --- helpers the host may use ----------------------------------------------------------

    def evaluate_global(self) -> dict[str, float]:
        """The global adapters in the sub-model (accuracy, loss) and in the full model (_full)."""
        bs = self.config.eval_batch_size
        set_lora_state(self.sub, self.global_state)
        m = self.eval_model(self.sub, self.prefix, self.test_idx, bs)
        out = self.reported(m)
        if self.config.eval_full:
            set_lora_state(self.full, self.full_state())
            f = self.eval_model(self.full, self.full_prefix, self.test_idx, bs)
            out.update(accuracy_full=f["accuracy"], loss_full=f["loss"])
        return out

    def download_payload(self) -> LoraPayload:
        if self._download is None or self._download[0] != self.version:
            payload = LoraPayload.encode(self.global_state, self.config.download_dtype, self.config.header_bits)
            self._download = (self.version, payload)
        return self._download[1]

    def _submodel_payload(self) -> SubModelPayload:
        nf4 = sum(m.packed.numel() + m.absmax.numel() * m.absmax.element_size()
                  for m in self.sub.modules() if isinstance(m, NF4Linear))
        fp16 = count_parameters(self.sub) - count_trainable(self.sub)  # frozen, not quantised (tied once)
        return SubModelPayload(nf4, fp16, self.kept, self.config.header_bits)

    @property
    def upload_bits(self) -> int:
        return payload_bits(self.shapes, self.config.upload_dtype, self.config.header_bits)

    @property
    def download_bits(self) -> int:
        return payload_bits(self.shapes, self.config.download_dtype, self.config.header_bits)

    def storage(self) -> dict[str, int]:
        """Bytes a client holds vs the full-model fp16 baseline (adapters at 4 bytes: trained fp32)."""
        adapters = 4 * count_trainable(self.sub)
        sub = self.submodel_payload.nf4_bytes + 2 * self.submodel_payload.fp16_values + adapters
        full_base = count_parameters(self.full) - count_trainable(self.full)
        full = 2 * full_base + 4 * count_trainable(self.full)
        return {"client_storage_bytes": sub, "client_nf4_bytes": self.submodel_payload.nf4_bytes,
                "client_fp16_bytes": 2 * self.submodel_payload.fp16_values, "client_adapter_bytes": adapters,
                "full_fp16_storage_bytes": full}

    def train_flops(self, plan: Sequence[Sequence[int]]) -> float:
        return self.ce_flops(self.sub_profile, plan)

    def info(self) -> dict[str, float | int | str]:
        st = self.storage()
        return {
            "model": getattr(self.config.model, "name_or_path", "tiny"),
            "n_layers_full": self.sgp.n_layers,
            "kept_layers": " ".join(map(str, self.kept)),
            "n_params": count_parameters(self.sub),
            "n_params_full": count_parameters(self.full) - count_trainable(self.full),
            "n_trainable": count_trainable(self.sub),
            **st,
            "storage_saving": 1.0 - st["client_storage_bytes"] / st["full_fp16_storage_bytes"],
            "bits_up": self.upload_bits,
            "bits_down": self.download_bits,
            "bits_submodel": self.submodel_payload.bits,
            "oda_initial_loss": self.oda_initial_loss,
            "oda_initial_flops": self.oda_initial_flops,
            "n_train": int(len(self.train_idx)),
            "n_test": int(len(self.test_idx)),
            "n_public": int(len(self.public_idx)),
        }

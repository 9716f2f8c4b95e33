"""kd_topk — KD-FedLLM with communication-aware top-k logits [P1], [P3].

Clients hold a copy of the server's language model that keeps only some of its decoder
layers (``client_keep_layers``; same tokenizer, same width); the server holds the full
model. Both train LoRA adapters; no parameters travel, only logits on a public batch.

Round t (the public batch of round t is ``public_batch_size`` examples of the public split,
drawn from stream ``("public", t)``; every party uses the same one):

1. ``Receive`` (if ``mutual``): the server's top-``k_down`` logits on this round's public
   batch (and its hidden projections), computed by the server after its last distillation.
2. ``Compute``: ``local_steps`` LoRA steps, each on L = CE(private batch) + α·τ²·KL(server
   teacher ‖ client) on the public batch + β·‖P(h_client) − P(h_server)‖², then one forward
   pass on the public batch. The FLOPs are exact for the batches the client will use.
3. ``Send``: when the upload starts, the sizer turns the capacity the kernel hands it into k
   (below) and the exact payload size; only when the upload completes does the real work
   run (training, public forward, top-k, encoding), so a failed upload costs no compute.
   The message: per counted position, the top-k values (raw logits, or log-probabilities
   with ``values: logprobs``) and their vocabulary indices, plus r projection numbers per
   position if ``projection.rank`` > 0 (:mod:`fl.algorithms.kd_topk.topk_payload` gives the bits).
4. Server (``ServerCompute``, timed by server FLOPs): aggregate the messages
   (:mod:`fl.algorithms.kd_topk.distill`: ``zero_pad``, ``adaptive`` or ``prob_tail``; weights ∝ samples or ∝ k)
   into a teacher, run ``server_steps`` LoRA steps of α·τ²·KL + β·projection on the public
   batch, then compute its own top-``k_down`` logits on the next round's public batch (the
   downlink of step 1).

Positions that count (``positions``): ``answer`` — the positions whose next token is an
answer token (label word + end of turn; 2–4 per example with SmolLM2's tokenizer), the
part of the distribution the task is about; ``all`` — every real (non-padding) position of
prompt and answer. T, the bits and the head's FLOPs follow. Public examples are fed as
prompt + true answer (teacher forcing); their labels are never a loss target.

k selection (``k``), with C the capacity (bits), b_v value bits, b_i = ceil(log2 V):

- an integer: fixed k (FedMKT uses 128); ``full``: k = V, sent dense (T·V·b_v bits);
- ``adaptive`` [P1]: k = clip(floor((C − overhead) / (T·(b_v + b_i))), k_min, k_max), with
  overhead = header + int8 scales + projection bits; if k_max = V and the dense message fits
  (C − overhead ≥ T·V·b_v) then k = V. Infinite capacity (no radio) gives k_max.
- ``adaptive_mass``: per position the smallest k_t whose probability mass reaches
  ``mass_target``, capped by the ``adaptive`` k (and at least k_min). The size must be fixed
  when the upload starts, before the client's own logits exist in the contract, so the
  mass is measured on the distribution the client already holds for this public batch:
  the server's downlink teacher (exact mass with ``values: logprobs``; relative to the
  server's k_down entries with ``logits``). Positions where that mass never reaches the
  target use the cap. Without a downlink teacher it behaves as ``adaptive``. The counts
  travel (ceil(log2(k_max + 1)) bits each); the trace's ``k`` is the rounded mean k_t.

A client keeps its own adapter between rounds (KD shares no parameters); a client whose
upload fails keeps the adapter it had (its work never ran). A client's work travels as a
:class:`DistilJob` (``Send.job``: its adapter at the start of the round, the downlink
message, the batch plans and generator states), so worker processes can run the clients of
a round in parallel; the trained adapter comes back with the message. One model instance serves all
clients (their adapters are swapped in and out), so results do not depend on run order.

Device and precision (``execution``): both models sit on the algorithm's device and every
forward pass runs under its autocast; messages, adapters, teachers and projection targets
are on the CPU (aggregated, checkpointed and sent to worker processes from there) and move
to the device where a model uses them. When a model's adapters all sit in layers >= L >= 1
(``lora.layers``), its private CE steps, its public-batch outputs (logits, and projections
of hidden states at or above L) and its evaluation run from the frozen prefix's cached
states entering layer L (:mod:`fl.lm.prefix`): one prefix for the server model, one for the
shared client model (clients differ only in adapters, which sit at or above L). The
simulated FLOPs are those of the method, whatever the simulator saves.

References:

[P1] X. Zhang, N. Yan, Y. Su, Y. Deng, T. Mahmoodi, "Communication-Aware Knowledge
     Distillation for Federated LLM Fine-Tuning over Wireless Networks", arXiv:2509.01750.
[P3] N. Yan, Y. Su, Y. Deng, R. Schober, "Federated Fine-Tuning of LLMs: Framework
     Comparison and Research Directions", arXiv:2501.04436.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
import torch

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, SendPlan, ServerCompute
from fl.core.algorithm import AlgorithmContext
from fl.algorithms.kd_topk.config import KDTopKConfig, ProjectionSpec
from fl.lm.algorithm import LMAlgorithm
from fl.lm.data import Batch, batch_shape, collate
from fl.algorithms.kd_topk.distill import (Teacher, build_teacher, kd_loss, mass_k, message_probs,
                        projection_loss, projection_matrix, top_k)
from fl.lm.flops import profile
from fl.lm.models import add_lora, bytes_resident, count_parameters, keep_layers, load_model, lora_state, \
    set_lora_state
from fl.core.payload import DTYPE_BITS, SCALE_BITS
from fl.core.seeding import int_seed, numpy_stream
from fl.algorithms.kd_topk.topk_payload import TopKPayload, count_bits, index_bits, topk_bits
from fl.lm.train import answer_loss, causal_lm, draw_batches

__all__ = ["ProjectionSpec", "KDTopKConfig", "KDTopK", "KDUpdate", "DistilJob", "TrainedLogits", "choose_k",
           "PublicSelection"]


def choose_k(capacity_bits: float, n_tokens: int, vocab_size: int, dtype: str, k_min: int, k_max: int,
             overhead_bits: int, allow_dense: bool = True) -> int:
    """The adaptive k [P1]: clip(floor((C − overhead) / (T·(b_v + b_i))), k_min, k_max).

    With ``allow_dense`` and k_max = V, k = V as soon as the dense message (T·V·b_v) fits.
    An infinite capacity gives k_max. Monotone non-decreasing in ``capacity_bits``.
    """
    if not 1 <= k_min <= k_max <= vocab_size:
        raise ValueError(f"choose_k needs 1 <= k_min <= k_max <= V. Got k_min={k_min}, k_max={k_max}, V={vocab_size}.")
    if math.isnan(capacity_bits):
        raise ValueError("choose_k: capacity_bits is NaN.")
    if math.isinf(capacity_bits) and capacity_bits > 0:
        return k_max
    b_v, b_i = DTYPE_BITS[dtype], index_bits(vocab_size)
    budget = capacity_bits - overhead_bits
    if allow_dense and k_max == vocab_size and budget >= n_tokens * vocab_size * b_v:
        return vocab_size
    k = math.floor(budget / (n_tokens * (b_v + b_i))) if budget > 0 else 0
    return int(min(max(k, k_min), k_max))


@dataclass(frozen=True)
class PublicSelection:
    """The counted positions of a public batch: rows (T,), cols (T,) absolute positions, and
    ``keep`` (the head runs on the last ``keep`` positions of every sequence)."""

    rows: torch.Tensor
    cols: torch.Tensor
    keep: int

    @property
    def n_tokens(self) -> int:
        return int(self.rows.numel())


@dataclass(frozen=True)
class KDUpdate:
    """What a client's round hands to aggregation: the payload the server received, the
    round whose public batch it describes, its k and bits, and the mean local loss."""

    payload: TopKPayload
    public_round: int
    k: int
    bits: int
    train_loss: float


@dataclass(frozen=True)
class TrainedLogits:
    """What a client's work returns (``Send.work`` or ``Send.job``): the message, the
    client's adapter after training (it keeps it for its next round), the step losses."""

    payload: TopKPayload
    state: Mapping[str, torch.Tensor]
    losses: tuple[float, ...]

    @property
    def bits(self) -> int:
        return self.payload.bits


@dataclass(frozen=True)
class DistilJob:
    """One client's round of work, self-contained (a :class:`~fl.core.actions.Job`): warm-up,
    local steps with distillation, the public forward pass and the top-k message.

    start: the client's adapter when the round began (None: the initial one).
    down: the server's downlink message (None without mutual distillation).
    public: the public batch's dataset indices. batches, warm: the batch plans (index lists).
    generator_state, warm_state: the client's torch generator states after drawing them.
    The algorithm running it (the host's, or a worker's replica) supplies the model, the
    data and the options; the model's LoRA tensors are overwritten first.
    """

    start: Mapping[str, torch.Tensor] | None
    down: TopKPayload | None
    public: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]
    generator_state: torch.Tensor
    warm: tuple[tuple[int, ...], ...] = ()
    warm_state: torch.Tensor | None = None

    def __call__(self, algorithm: "KDTopK", plan: SendPlan) -> TrainedLogits:
        return algorithm.local_update(self, plan)


def _generator(state: torch.Tensor) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(state)
    return gen


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # positions count real tokens only, so left padding does not shift them (as fl.lm.train)
    return (mask.cumsum(-1) - 1).clamp(min=0)


class KDTopK(LMAlgorithm):
    """Federated distillation with top-k logits sized by the channel; see the module docstring."""

    name = "kd_topk"
    Config = KDTopKConfig
    # the frozen prefixes of the two models: a fresh build recreates them (None or not)
    _REBUILT_ATTRS = LMAlgorithm._REBUILT_ATTRS + ("server_prefix", "client_prefix")

    def __init__(self, config: KDTopKConfig, context: AlgorithmContext) -> None:
        super().__init__(config, context)
        cfg = config
        data_root = self.seed_roots(cfg, context)

        base, self.tokenizer = load_model(cfg.model, cfg.cache_dir)
        base = base.to(self.device)
        client_base = copy.deepcopy(base)
        if cfg.client_keep_layers is not None:
            keep_layers(client_base, cfg.client_keep_layers)
        self.server_model = add_lora(base, cfg.lora, seed=int_seed(self.train_root, "lora_init", "server"))
        self.client_model = add_lora(client_base, cfg.lora, seed=int_seed(self.train_root, "lora_init", "client"))
        self.vocab_size = int(causal_lm(self.server_model).get_output_embeddings().out_features)
        self.k_max = self.vocab_size if cfg.k_max is None else cfg.k_max
        for name, value in (("k", cfg.k), ("k_down", cfg.k_down), ("k_max", self.k_max), ("k_min", cfg.k_min)):
            if isinstance(value, int) and value > self.vocab_size:
                raise ValueError(f"{name} ({value}) must be <= the vocabulary size V = {self.vocab_size}.")
        self.k_down = self.vocab_size if cfg.k_down == "full" else int(cfg.k_down)
        self.client_alpha = cfg.alpha if cfg.client_alpha is None else cfg.client_alpha
        self.counts_bits = count_bits(self.k_max)
        self.server_profile = profile(self.server_model)
        self.client_profile = profile(self.client_model)
        self.hidden = int(causal_lm(self.server_model).config.hidden_size)
        r = cfg.projection.rank
        self.proj_A = projection_matrix(r, self.hidden, int_seed(self.train_root, "projection")) if r else None
        if r:
            for who, model, layer in (("client", self.client_model, cfg.projection.client_layer),
                                      ("server", self.server_model, cfg.projection.server_layer)):
                n = int(causal_lm(model).config.num_hidden_layers) + 1
                if not -n <= layer < n:
                    raise ValueError(f"projection.{who}_layer must index the {who} model's {n} hidden "
                                     f"states (-{n}..{n - 1}). Got {layer} instead.")

        self.setup_task(cfg, context, self.tokenizer, data_root)
        # None where a model has adapters in layer 0 (then every step runs the whole model);
        # two caches share execution.prefix_cache_mb
        self.server_prefix = self.make_prefix(self.server_model, self.task)
        self.client_prefix = self.make_prefix(self.client_model, self.task)
        if self.server_prefix is not None and self.client_prefix is not None:
            self.server_prefix.max_bytes = self.client_prefix.max_bytes = self.server_prefix.max_bytes // 2

        self.client_init = lora_state(self.client_model)
        self.client_states: dict[int, Mapping[str, torch.Tensor]] = {}
        self._downlink: dict[int, TopKPayload] = {}
        self.version = 0

    # --- the contract -----------------------------------------------------------------------

    def client_round(self, rnd: int, client: int):
        cfg = self.config
        down: TopKPayload | None = None
        if cfg.mutual:
            down = yield Receive(self.download_payload(rnd), label="teacher")
        gen = torch.Generator().manual_seed(int_seed(self.train_root, "train", client, rnd))
        plan = draw_batches(self.client_idx[client], cfg.batch_size, cfg.local_steps, gen)
        warm, warm_state = [], None
        if cfg.warmup_steps and client not in self.client_states:  # first participation
            warm_gen = torch.Generator().manual_seed(int_seed(self.train_root, "warmup", client))
            warm = draw_batches(self.client_idx[client], cfg.batch_size, cfg.warmup_steps, warm_gen)
            warm_state = warm_gen.get_state()
        public = self.public_indices(rnd)
        n_tokens = self.selection(collate(self.task, public)).n_tokens
        flops = self.client_flops(plan, public, distil=down is not None) + self.warmup_flops(warm)
        yield Compute(flops=flops, label="train")
        job = DistilJob(self.client_states.get(client), down, tuple(public), tuple(map(tuple, plan)),
                        gen.get_state(), tuple(map(tuple, warm)), warm_state)
        sent = yield Send(sizer=lambda capacity_bits: self.plan_upload(capacity_bits, n_tokens, down)[0],
                          work=partial(job, self), job=job, label="logits", budget_s=cfg.airtime_s)
        self.client_states[client] = sent.state  # only once its upload completed
        payload = sent.payload
        return KDUpdate(payload, rnd, payload.k, payload.bits, float(np.mean(sent.losses)) if sent.losses else math.nan)

    def local_update(self, job: DistilJob, send_plan: SendPlan) -> TrainedLogits:
        """Run ``job`` on this instance's client model: warm-up (CE only), ``local_steps`` of
        CE + distillation from the downlink teacher, then the top-k message of ``send_plan``."""
        cfg = self.config
        model, prefix = self.client_model, self.client_prefix
        set_lora_state(model, self.client_init if job.start is None else job.start)
        public = list(job.public)
        sel = self.selection(collate(self.task, public))
        layer = cfg.projection.client_layer
        if job.warm:  # CE only, before any distillation
            self.train(model, len(job.warm), cfg.lr, _generator(job.warm_state), job.warm, public, sel, None,
                       None, layer, self.client_alpha, prefix=prefix)
        teacher, target = self._teacher_from(job.down) if job.down is not None else (None, None)
        losses = self.train(model, cfg.local_steps, cfg.lr, _generator(job.generator_state), job.batches, public,
                            sel, teacher, target, layer, self.client_alpha, prefix=prefix)
        counts = None
        if cfg.k == "adaptive_mass" and job.down is not None:
            counts = self.mass_counts(job.down, int(send_plan.info["k_cap"]))
        with torch.no_grad(), self.forward_ctx():
            logits, proj = self.public_outputs(model, public, sel, layer, prefix)
        payload = self.encode_message(logits, proj, send_plan.k, counts)  # on the CPU
        return TrainedLogits(payload, lora_state(model), tuple(losses))

    @property
    def global_state(self) -> Mapping[str, torch.Tensor]:
        """The server model's adapter (the global model of this method)."""
        return lora_state(self.server_model)

    def server_round(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]):
        """Aggregation and distillation as one ``ServerCompute`` (timed by its FLOPs)."""
        metrics = yield ServerCompute(flops=self.server_flops(rnd, results),
                                      work=lambda: self.aggregate(rnd, results, failures), label="distil")
        return dict(metrics)

    def aggregate(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]) -> Mapping[str, float]:
        """Aggregate the messages per public batch, distil into the server model, and compute
        the next downlink; return the round's extra columns."""
        cfg = self.config
        kd_losses: list[float] = []
        support: list[float] = []
        teacher_right: list[float] = []
        for public_round in sorted({r.update.public_round for r in results}):
            group = [r for r in results if r.update.public_round == public_round]
            teacher, target = self.aggregate_messages(group)
            support.append(float(teacher.support.sum(1).double().mean()))
            public = self.public_indices(public_round)
            batch = collate(self.task, public)
            sel = self.selection(batch)
            teacher_right.extend(self.teacher_votes(teacher, batch, sel, public))
            gen = self._server_generator(public_round)
            kd_losses.extend(self.train(self.server_model, cfg.server_steps, cfg.server_lr, gen, [], public, sel,
                                        teacher, target, cfg.projection.server_layer, cfg.alpha,
                                        prefix=self.server_prefix, public_batch=cfg.server_batch_size))
        if results:
            self.version += 1
        nxt = rnd + 1
        if cfg.mutual:
            self._downlink = {r: p for r, p in self._downlink.items() if r > rnd}
            self._downlink[nxt] = self._server_message(nxt)
        ks = [r.update.k for r in results]
        bits = [r.update.bits for r in results]
        losses = [r.update.train_loss for r in results]
        nan = math.nan
        return {
            "n_aggregated": float(len(results)),
            "n_failed": float(len(failures)),
            "k_mean": float(np.mean(ks)) if ks else nan,
            "k_min": float(np.min(ks)) if ks else nan,
            "k_max": float(np.max(ks)) if ks else nan,
            "bits_up_mean": float(np.mean(bits)) if bits else nan,
            "teacher_support": float(np.mean(support)) if support else nan,
            "teacher_accuracy": float(np.mean(teacher_right)) if teacher_right else nan,
            "train_loss": float(np.mean(losses)) if losses else nan,
            "server_kd_loss": float(np.mean(kd_losses)) if kd_losses else nan,
        }

    def evaluate(self, rnd: int) -> Mapping[str, float]:
        """Server-model accuracy and loss after round ``rnd`` (every ``eval_every`` rounds;
        rnd = −1, the initial model, and the last round always), plus client-model accuracy if ``eval_clients``."""
        if not self.is_eval_round(rnd, self.config.eval_every):
            return {}
        bs = self.config.eval_batch_size
        m = self.eval_model(self.server_model, self.server_prefix, self.test_idx, bs)
        out = self.reported(m)
        if self.config.eval_clients:
            accs = []
            for c in sorted(self.client_states) or [None]:
                set_lora_state(self.client_model, self.client_init if c is None else self.client_states[c])
                m = self.eval_model(self.client_model, self.client_prefix, self.test_idx, bs)
                accs.append(m["accuracy"])
            out["client_accuracy"] = float(np.mean(accs))
            out["client_accuracy_min"] = float(np.min(accs))
        return out

    def teacher_votes(self, teacher: Teacher, batch: Batch, sel: PublicSelection, public: Sequence[int]
                      ) -> list[float]:
        """A diagnostic of what the aggregate teaches (never a training signal): per public
        example, 1.0 if the teacher ranks the true label's first answer token above the other
        labels' first tokens at the position that decides the answer, else 0.0 (a label token
        outside the teacher's support ranks last; ties count as wrong). Empty when two labels
        share a first token (the first token does not decide the answer then)."""
        first = [a[0] for a in self.task.answers]
        if len(set(first)) < len(first):
            return []
        truth = torch.as_tensor(self.task.labels[list(public)])
        decide = batch.target_pos[:, 0]  # (B,) the position whose next token is the first answer token
        rows = torch.arange(len(public), device=sel.rows.device)
        at = (sel.rows[None, :] == rows[:, None]) & (sel.cols[None, :] == decide[:, None])
        scores = teacher.log_probs[at.float().argmax(1)][:, first]  # (B, L)
        best = scores.max(1).values
        right = (scores.gather(1, truth[:, None]).squeeze(1) == best) & ((scores == best[:, None]).sum(1) == 1)
        return right.float().tolist()

    # --- sizes -----------------------------------------------------------------------------

    def overhead_bits(self, n_tokens: int, variable: bool = False) -> int:
        """Bits of a message besides its entries: header, int8 scales, projections, counts."""
        cfg = self.config
        scale = SCALE_BITS if cfg.value_dtype == "int8" else 0
        r = cfg.projection.rank
        bits = cfg.header_bits + n_tokens * scale
        if r:
            bits += n_tokens * (r * DTYPE_BITS[cfg.value_dtype] + scale)
        if variable:
            bits += n_tokens * self.counts_bits
        return int(bits)

    def plan_upload(self, capacity_bits: float, n_tokens: int, down: TopKPayload | None = None
                    ) -> tuple[SendPlan, torch.Tensor | None]:
        """The sizer's decision: (SendPlan with exact bits and k, per-position counts or None)."""
        cfg = self.config
        r, dtype, V = cfg.projection.rank, cfg.value_dtype, self.vocab_size
        info = {"n_tokens": n_tokens, "mode": str(cfg.k)}
        if cfg.k == "full" or isinstance(cfg.k, int):
            k = V if cfg.k == "full" else int(cfg.k)
        elif cfg.k == "adaptive_mass" and down is not None:
            cap = choose_k(capacity_bits, n_tokens, V, dtype, cfg.k_min, self.k_max,
                           self.overhead_bits(n_tokens, variable=True), allow_dense=False)
            counts = self.mass_counts(down, cap)
            bits = topk_bits(n_tokens, None, V, dtype, r, cfg.header_bits,
                             counts_total=int(counts.sum()), counts_bits=self.counts_bits)
            k_mean = int(round(float(counts.double().mean())))
            return SendPlan(bits=bits, k=k_mean, info={**info, "k_cap": cap}), counts
        else:
            k = choose_k(capacity_bits, n_tokens, V, dtype, cfg.k_min, self.k_max, self.overhead_bits(n_tokens))
        return SendPlan(bits=topk_bits(n_tokens, k, V, dtype, r, cfg.header_bits), k=k, info=info), None

    def mass_counts(self, down: TopKPayload, cap: int) -> torch.Tensor:
        """``adaptive_mass``'s entries per position: the smallest k_t whose mass, measured on
        the downlink teacher, reaches ``mass_target``; ``cap`` where it never does; ≥ k_min."""
        msg, _ = down.decode()
        need = mass_k(message_probs(msg, self.config.values), self.config.mass_target)  # (T,), 0 = not reached
        return torch.where(need > 0, need, torch.full_like(need, cap)).clamp(min=self.config.k_min, max=cap)

    def size_hints(self) -> dict[str, float]:
        """Rough sizes before any round ran (deadline-aware selection): two positions per
        public example; adaptive variants at k_min."""
        cfg = self.config
        T = 2 * cfg.public_batch_size
        k = self.vocab_size if cfg.k == "full" else (int(cfg.k) if isinstance(cfg.k, int) else cfg.k_min)
        r, dtype = cfg.projection.rank, cfg.value_dtype
        return {"upload_bits": float(topk_bits(T, k, self.vocab_size, dtype, r, cfg.header_bits)),
                "download_bits": float(topk_bits(T, self.k_down, self.vocab_size, dtype, r, cfg.header_bits))
                if cfg.mutual else 0.0}

    # --- the public batch ------------------------------------------------------------------

    def public_indices(self, rnd: int) -> list[int]:
        """Dataset indices of round ``rnd``'s public batch (stream ``("public", rnd)``)."""
        rng = numpy_stream(self.train_root, "public", rnd)
        pick = rng.choice(len(self.public_idx), size=self.config.public_batch_size, replace=False)
        return sorted(int(i) for i in self.public_idx[pick])

    def selection(self, batch: Batch) -> PublicSelection:
        """The counted positions of a (left-padded) public batch."""
        S = batch.input_ids.shape[1]
        if self.config.positions == "answer":
            rows, a = batch.target_mask.nonzero(as_tuple=True)
            cols = batch.target_pos[rows, a]
            return PublicSelection(rows, cols, S - int(cols.min()))
        rows, cols = batch.attention_mask.nonzero(as_tuple=True)
        return PublicSelection(rows, cols, S)

    def public_outputs(self, model, public: Sequence[int], sel: PublicSelection, layer: int | None,
                       prefix=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (T, V), projections (T, r) or None) of ``model`` at the counted positions
        ``sel`` of the public batch ``public`` (dataset indices), on the model's device.

        layer: the projected hidden state, an index into the model's n + 1 hidden states (0:
            embeddings, i: after i decoder layers, n or -1: after the final norm); None: none.
        prefix: ``model``'s :class:`~fl.lm.prefix.FrozenPrefix`, or None. It serves when the
            projected state is at or above its layer L (states below L are not cached); else
            the whole model runs.
        """
        want_hidden = self.proj_A is not None and layer is not None
        lm = causal_lm(model)
        n = int(lm.config.num_hidden_layers)
        j = layer % (n + 1) if want_hidden else None  # the projected state, in 0..n
        if prefix is not None and (j is None or j >= prefix.layer):
            return self._prefix_outputs(prefix, public, sel, j)
        dev = next(model.parameters()).device
        batch = collate(self.task, public).to(dev)
        rows, cols = sel.rows.to(dev), sel.cols.to(dev)
        S = batch.input_ids.shape[1]
        out = lm(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=_positions(batch.attention_mask), use_cache=False, logits_to_keep=sel.keep,
            output_hidden_states=want_hidden,
        )
        logits = out.logits[rows, cols - (S - sel.keep)]  # (T, V)
        proj = None
        if want_hidden:
            h = out.hidden_states[layer][rows, cols]  # (T, d)
            proj = h.float() @ self.proj_A.to(dev).T  # (T, r)
        return logits, proj

    def _prefix_outputs(self, prefix, public: Sequence[int], sel: PublicSelection, j: int | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`public_outputs` from ``prefix``'s cached states entering layer L: only the
        layers >= L run, and the final norm and the head only at the counted positions.
        ``j``: the projected hidden state (L <= j <= n), or None."""
        L, n = prefix.layer, prefix.layer + len(prefix.upper)
        m = n - L if j is None or j == n else j - L  # upper layers below the projected state
        h = prefix.head_len
        if h and self.config.positions == "answer":
            # the answer positions all follow the prompts' shared head: it runs once, each row
            # only the rest of its sequence (:meth:`fl.lm.prefix.FrozenPrefix.upper_rest`)
            batch, hidden = prefix.rest_states(public)
            dev = hidden.device
            mask = batch.attention_mask.to(dev)
            rows, cols = sel.rows.to(dev), sel.cols.to(dev) - h
            from transformers import DynamicCache

            cache = DynamicCache(config=prefix.config)
            hidden = prefix.upper_rest(hidden, mask, cache=cache, layers=slice(0, m))
            hm = hidden[rows, cols] if j is not None and j < n else None  # (T, H) the projected state
            hidden = prefix.upper_rest(hidden, mask, cache=cache, layers=slice(m, None))
        else:
            batch, hidden = prefix.train_states(public)  # hidden (B, S, H) entering layer L
            dev = hidden.device
            mask = batch.attention_mask.to(dev)
            rows, cols = sel.rows.to(dev), sel.cols.to(dev)
            if m:
                hidden = prefix._run(prefix.upper[:m], hidden, mask)
            hm = hidden[rows, cols] if j is not None and j < n else None  # (T, H) the projected state
            if m < n - L:
                hidden = prefix._run(prefix.upper[m:], hidden, mask)
        final = prefix.norm(hidden[rows, cols])  # (T, H) after the final norm
        if j == n:
            hm = final
        proj = None if hm is None else hm.float() @ self.proj_A.to(dev).T  # (T, r)
        return prefix.head(final), proj  # logits (T, V)

    # --- training --------------------------------------------------------------------------

    def _distils(self, has_teacher: bool, alpha: float) -> bool:
        cfg = self.config
        return has_teacher and (alpha > 0 or (cfg.beta > 0 and self.proj_A is not None))

    def train(self, model, steps: int, lr: float, generator: torch.Generator,
              private: Sequence[Sequence[int]], public: Sequence[int], sel: PublicSelection,
              teacher: Teacher | None, proj_target: torch.Tensor | None, layer: int, alpha: float,
              prefix=None, public_batch: int | None = None) -> list[float]:
        """``steps`` AdamW steps on L = CE(private[s]) + α·τ²·KL(teacher ‖ model) + β·projection
        on the public batch (terms without data are left out); returns the step losses.

        private: the private batches (dataset index lists); public: the public batch's
        indices. teacher, proj_target: on any device (moved to the model's). prefix:
        ``model``'s frozen prefix or None (see :meth:`public_outputs`). public_batch: public
        examples per step (drawn from ``generator`` before anything else: epochs of random
        permutations of the public batch, each step's teacher rows restricted to its
        examples); None: the whole public batch every step. Forward passes run under the
        algorithm's autocast, backward passes outside it.
        """
        cfg = self.config
        distil = self._distils(teacher is not None, alpha)
        if steps == 0 or (not private and not distil):
            return []
        dev = next(model.parameters()).device
        if distil:
            teacher = teacher.to(dev)
            proj_target = None if proj_target is None else proj_target.to(dev)
        steps_public = [(public, sel, teacher, proj_target)] * steps
        if distil and public_batch is not None and public_batch < len(public):
            plan = draw_batches(range(len(public)), public_batch, steps, generator)
            steps_public = [self._public_part(public, sel, teacher, proj_target, rows) for rows in plan]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        tau = cfg.temperature
        losses = []
        model.train()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            for s in range(steps):
                pub, psel, teach, target = steps_public[s]
                with self.forward_ctx():
                    loss = self._ce(model, prefix, private[s]) if private else torch.zeros((), device=dev)
                    if distil:
                        use_proj = target is not None and cfg.beta > 0
                        logits, proj = self.public_outputs(model, pub, psel, layer if use_proj else None, prefix)
                        if alpha > 0:
                            loss = loss + alpha * tau ** 2 * kd_loss(logits, teach, tau).mean()
                        if proj is not None and cfg.beta > 0:
                            loss = loss + cfg.beta * projection_loss(proj, target,
                                                                     cfg.projection.normalise).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        model.eval()
        return losses

    def _server_generator(self, public_round: int) -> torch.Generator:
        return torch.Generator().manual_seed(int_seed(self.train_root, "server", public_round))

    def server_plan(self, public_round: int, n_public: int) -> list[list[int]] | None:
        """The public-batch positions of each server step on round ``public_round``'s batch
        (as :meth:`train` draws them), or None when every step takes the whole batch."""
        size = self.config.server_batch_size
        if size is None or size >= n_public:
            return None
        return draw_batches(range(n_public), size, self.config.server_steps, self._server_generator(public_round))

    def _public_part(self, public: Sequence[int], sel: PublicSelection, teacher: Teacher,
                     target: torch.Tensor | None, rows: Sequence[int]):
        """(public indices, selection, teacher, projection target) of the examples at
        positions ``rows`` of the public batch ``public`` (kept in the batch's order)."""
        rows = sorted(int(r) for r in rows)
        part = [public[r] for r in rows]
        keep = torch.isin(sel.rows.cpu(), torch.tensor(rows, dtype=sel.rows.dtype))  # (T,) their positions
        psel = self.selection(collate(self.task, part))
        if psel.n_tokens != int(keep.sum()):
            raise AssertionError("kd_topk: a public sub-batch's positions do not match its teacher rows.")
        dev = teacher.log_probs.device
        keep_t = keep.to(dev)
        teach = Teacher(teacher.log_probs[keep_t],
                        None if teacher.tail_log_prob is None else teacher.tail_log_prob[keep_t])
        tgt = None if target is None else target[keep.to(target.device)]
        return part, psel, teach, tgt

    def _ce(self, model, prefix, idx: Sequence[int]) -> torch.Tensor:
        """The answer loss of the private batch ``idx`` (from ``prefix``'s states if any)."""
        if prefix is not None:
            return prefix.answer_loss(idx)
        return answer_loss(model, collate(self.task, list(idx)))

    # --- messages --------------------------------------------------------------------------

    def encode_message(self, logits: torch.Tensor, proj: torch.Tensor | None, k: int,
                       counts: torch.Tensor | None = None) -> TopKPayload:
        """Top-k (or per-position counts) of ``logits`` (T, V) as the configured values/dtype:
        selected on the logits' device, encoded on the CPU."""
        cfg = self.config
        with torch.no_grad():
            scores = logits.float()
            if cfg.values == "logprobs":
                scores = torch.log_softmax(scores, dim=-1)
            msg = top_k(scores, counts if counts is not None else int(k))
            return TopKPayload.encode(msg, self.vocab_size, cfg.value_dtype, variable=counts is not None,
                                      counts_bits=self.counts_bits if counts is not None else 0,
                                      proj=None if proj is None else proj.detach(), header_bits=cfg.header_bits)

    def aggregate_messages(self, results: Sequence[ClientResult]) -> tuple[Teacher, torch.Tensor | None]:
        """The teacher (and the mean projection target) from the clients' decoded messages."""
        cfg = self.config
        msgs, projs, weights = [], [], []
        for r in results:
            msg, proj = r.update.payload.decode()
            msgs.append(msg)
            projs.append(proj)
            weights.append(float(r.n_samples) if cfg.weight_by == "samples" else msg.k_per_token.double())
        teacher = build_teacher(cfg.aggregation, msgs, weights, self.vocab_size, cfg.temperature)
        target = None
        if self.proj_A is not None:
            T = msgs[0].n_tokens
            w = torch.stack([torch.as_tensor(x, dtype=torch.float64).expand(T) for x in weights])  # (n, T)
            p = torch.stack([x.double() for x in projs])  # (n, T, r)
            target = ((w[..., None] * p).sum(0) / w.sum(0)[:, None]).float()
        return teacher, target

    def _teacher_from(self, down: TopKPayload) -> tuple[Teacher, torch.Tensor | None]:
        msg, proj = down.decode()
        return build_teacher(self.config.aggregation, [msg], [1.0], self.vocab_size, self.config.temperature), proj

    @torch.no_grad()
    def _server_message(self, rnd: int) -> TopKPayload:
        public = self.public_indices(rnd)
        sel = self.selection(collate(self.task, public))
        with self.forward_ctx():
            logits, proj = self.public_outputs(self.server_model, public, sel, self.config.projection.server_layer,
                                               self.server_prefix)
        return self.encode_message(logits, proj, self.k_down)

    def download_payload(self, rnd: int) -> TopKPayload:
        """The server's top-k_down message on round ``rnd``'s public batch (computed once; for
        round 0, or after a round without aggregation, from the current server model)."""
        if rnd not in self._downlink:
            self._downlink[rnd] = self._server_message(rnd)
        return self._downlink[rnd]

    # --- FLOPs -----------------------------------------------------------------------------

    def _public_shape(self, public: Sequence[int]) -> tuple[int, int, int, int]:
        """(B, S, keep, T) of a public batch."""
        sel = self.selection(collate(self.task, public))
        B, S, _ = batch_shape(self.task, public)
        return B, S, sel.keep, sel.n_tokens

    def client_flops(self, plan: Sequence[Sequence[int]], public: Sequence[int], distil: bool) -> float:
        """Matmul FLOPs of a client's work: local steps (+ distillation on the public batch)
        and the forward pass that produces the uploaded logits (exact for α > 0; with α = 0
        the head's backward on the public batch, which then does not run, is still counted)."""
        prof, r = self.client_profile, self.config.projection.rank
        B, S, keep, T = self._public_shape(public)
        proj_fwd = 2 * T * self.hidden * r  # h (T, d) @ Aᵀ (d, r)
        proj_train = 2 * proj_fwd if self.config.beta > 0 else 0  # forward + dh (A is frozen)
        total = 0
        for idx in plan:
            b, s, a = batch_shape(self.task, idx)
            total += prof.train_step(b, s, head_tokens=a + 1)
            if self._distils(distil, self.client_alpha):
                total += prof.train_step(B, S, head_tokens=keep) + proj_train
        total += prof.forward(B, S, head_tokens=keep) + proj_fwd
        return float(total)

    def warmup_flops(self, warm: Sequence[Sequence[int]]) -> float:
        """Matmul FLOPs of the warm-up steps (CE on private batches)."""
        return self.ce_flops(self.client_profile, warm)

    def server_flops(self, rnd: int, results: Sequence[ClientResult]) -> float:
        """Matmul FLOPs of the server's round: distillation steps per public batch received,
        and the forward pass for the next downlink."""
        prof, r = self.server_profile, self.config.projection.rank
        total = 0
        distil = self._distils(True, self.config.alpha)
        for public_round in sorted({res.update.public_round for res in results}):
            B, S, keep, T = self._public_shape(self.public_indices(public_round))
            if distil:
                public = self.public_indices(public_round)
                plan = self.server_plan(public_round, len(public))
                if plan is None:
                    proj_train = 4 * T * self.hidden * r if self.config.beta > 0 else 0
                    total += self.config.server_steps * (prof.train_step(B, S, head_tokens=keep) + proj_train)
                for rows in plan or ():
                    b, s, k, t = self._public_shape([public[i] for i in sorted(rows)])
                    total += prof.train_step(b, s, head_tokens=k) + (4 * t * self.hidden * r if self.config.beta > 0 else 0)
        if self.config.mutual:
            B, S, keep, T = self._public_shape(self.public_indices(rnd + 1))
            total += prof.forward(B, S, head_tokens=keep) + 2 * T * self.hidden * r
        return float(total)

    # --- reporting -------------------------------------------------------------------------

    def info(self) -> dict[str, float | int | str]:
        """Static facts for a run summary."""
        return {
            "model": getattr(self.config.model, "name_or_path", "tiny"),
            "vocab_size": self.vocab_size,
            "client_layers": int(causal_lm(self.client_model).config.num_hidden_layers),
            "server_layers": int(causal_lm(self.server_model).config.num_hidden_layers),
            "n_params_client": count_parameters(self.client_model),
            "n_params_server": count_parameters(self.server_model),
            "client_storage_bytes": bytes_resident(self.client_model),
            "n_train": int(len(self.train_idx)),
            "n_public": int(len(self.public_idx)),
            "n_test": int(len(self.test_idx)),
        }

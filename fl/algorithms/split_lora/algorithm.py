"""split_lora — Split-FedLLM (SplitFed with LoRA) with per-step airtime [P3].

The model is cut after ``cut_layer`` decoder layers (:mod:`fl.algorithms.split_lora.split`). The client holds the
embedding and layers ``< cut_layer`` (frozen base + LoRA); the server holds the rest, the
final norm and the head (+ LoRA). Client ``i``'s part in round ``t``:

1. ``Receive`` ``model``: the global *client-side* adapter (``download_dtype``).
2. For each of ``local_steps`` batches, one round trip through the contract:

   - ``Compute`` ``client_fwd``: client-part forward FLOPs;
   - ``Send`` ``activations``: the cut-layer activations + attention mask + answer tokens
     (exact bits: :func:`fl.algorithms.split_lora.split.activation_bits` + :func:`fl.algorithms.split_lora.split.side_bits`); the real
     client forward runs in ``Send.work``, when the upload completes;
   - ``ServerCompute`` ``server_step``: server-part forward + backward FLOPs; in its
     ``work`` the server decodes the activations it received, runs its half, takes an AdamW
     step on the server-side adapter and encodes the activation gradients;
   - ``Receive`` ``gradients``: the activation gradients (exact bits, ``gradient_dtype``);
   - ``Compute`` ``client_bwd``: client-part backward FLOPs; its ``work`` back-propagates
     the *decoded* gradients and takes the client's AdamW step. Only now is the step
     **completed**.

3. ``Send`` ``update``: the client-side adapter (``upload_dtype``) for averaging.

Every transfer is timed on the client's simulated link, so a fade in the middle of a round
stretches exactly the steps it overlaps, and the server's service (``server.service:
sequential`` queues clients' ``server_step`` FIFO on one server; ``parallel`` serves them
at once) shapes the round in simulated time.

Aggregation (SplitFed): the client-side adapters are averaged, weighted by local sample
counts (``client_weighting: samples``) or by completed steps (``steps``). There is one
server-side adapter; every client's ``server_step`` updates it in place, in the order the
server computations complete in simulated time (one AdamW state, kept across rounds; a
client's AdamW is fresh each round, as in fedavg_lora).

A client cut off mid-round (deadline, outage, drop-out) contributes **only its completed
steps**: its client-side adapter as it was after its last completed step (``partial:
aggregate``; ``discard`` drops it), and the server-side updates of the steps whose
``server_step`` completed stay applied — including that of a step whose gradients never
reached the client. The partial adapter's upload is *not* simulated (the client was cut
off; it is modelled as reaching the server out of band): its size is reported in
``partial_adapter_bits``, not in ``bits_up``. Per-client accounting: :attr:`SplitLoRA.step_log`
(and ``split_steps.csv`` in the run directory): steps planned, completed, server steps,
status, aggregation weight. Round columns: ``steps_planned``, ``steps_completed``,
``server_steps``, ``n_partial``, ``partial_adapter_bits``, ``train_loss``.

One model instance serves every client and the server: the client half runs with the
client's own LoRA tensors (``torch.func.functional_call``), so the forward graphs of
clients whose steps interleave in simulated time never share parameters.

Device and precision (``execution``): the model and the clients' live LoRA tensors sit on
the algorithm's device and forward passes run under its autocast; what crosses the cut,
the adapters that travel and everything aggregated or checkpointed is on the CPU (each side
moves what it decodes to the device). When every adapter sits in layers >= L >= 1 (e.g.
``lora.layers: [1, 2]`` with ``cut_layer: 2``), the client half starts from the frozen
prefix's cached states entering layer L, and evaluation uses them too (:mod:`fl.lm.prefix`);
the simulated FLOPs and bits are those of the method, whatever the simulator saves.

References:

[P3] N. Yan, Y. Su, Y. Deng, R. Schober, "Federated Fine-Tuning of LLMs: Framework
     Comparison and Research Directions", arXiv:2501.04436.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from fl.core.actions import ClientResult, Compute, Failure, Receive, Send, SendPlan, ServerCompute
from fl.core.aggregation import fedavg
from fl.core.algorithm import AlgorithmContext
from fl.algorithms.split_lora.config import SplitLoRAConfig
from fl.lm.algorithm import LMAlgorithm
from fl.lm.data import batch_shape, collate
from fl.lm.flops import profile
from fl.lm.models import add_lora, bytes_resident, count_parameters, load_model, lora_state
from fl.core.payload import LoraPayload, payload_bits
from fl.core.seeding import int_seed
from fl.core.config import WireDtype
from fl.algorithms.split_lora.split import CutActivations, CutGradients, SplitModel, WireTensor, activation_bits, side_bits, \
    split_profile
from fl.lm.train import draw_batches

__all__ = ["SplitLoRAConfig", "SplitLoRA", "SplitUpdate", "StepRecord"]

STEPS_CSV = "split_steps.csv"


@dataclass(frozen=True)
class SplitUpdate:
    """What a client's round hands to aggregation.

    state: the client-side adapter the server received (decoded). bits: its upload size.
    steps_completed / steps_planned: local steps finished / intended this round.
    losses: loss of each step the server computed for this client, in order.
    """

    state: Mapping[str, torch.Tensor]
    bits: int
    steps_completed: int
    steps_planned: int
    losses: tuple[float, ...]

    @property
    def train_loss(self) -> float:
        return _mean(self.losses)


@dataclass(frozen=True)
class StepRecord:
    """One client's accounting for one aggregation (a row of ``split_steps.csv``).

    status: ``completed`` (round finished, adapter uploaded), ``partial`` (cut off after at
    least one completed step), ``no_step`` (cut off before completing any step).
    server_steps: server-side updates applied for this client (≥ steps_completed: a step
    whose gradients never arrived still updated the server). weight: its aggregation weight
    (0 when its adapter was not averaged).
    """

    round: int
    client: int
    status: str
    reason: str
    steps_planned: int
    steps_completed: int
    server_steps: int
    weight: float


@dataclass
class _Progress:
    """A client's round as it stands (live objects: updated as simulated events complete)."""

    rnd: int
    steps_planned: int
    tensors: "OrderedDict[str, torch.Tensor]"  # the client's own LoRA tensors
    steps_completed: int = 0
    server_steps: int = 0
    losses: list[float] = field(default_factory=list)


class SplitLoRA(LMAlgorithm):
    """SplitFed over LoRA adapters with per-step airtime; see the module docstring."""

    name = "split_lora"
    Config = SplitLoRAConfig
    # the two halves of the model are views of self.model that a fresh build recreates
    _REBUILT_ATTRS = LMAlgorithm._REBUILT_ATTRS + ("split",)

    def __init__(self, config: SplitLoRAConfig, context: AlgorithmContext) -> None:
        super().__init__(config, context)
        data_root = self.seed_roots(config, context)

        base, self.tokenizer = load_model(config.model, config.cache_dir)
        self.model = add_lora(base.to(self.device), config.lora, seed=int_seed(self.train_root, "lora_init"))
        self.split = SplitModel(self.model, config.cut_layer)
        if not self.split.client_names or not self.split.server_names:
            side = "client" if not self.split.client_names else "server"
            raise ValueError(
                f"split_lora: lora.target_modules {list(config.lora.target_modules)} leave the {side} "
                f"side without adapters at cut_layer={config.cut_layer}; adapt modules on both sides."
            )
        self.flop_profile = profile(self.model)
        self.client_profile, self.server_profile = split_profile(self.flop_profile, config.cut_layer)
        shapes = OrderedDict((n, tuple(p.shape)) for n, p in self.model.named_parameters() if p.requires_grad)
        self.client_shapes = OrderedDict((n, shapes[n]) for n in self.split.client_names)

        self.setup_task(config, context, self.tokenizer, data_root)
        # None unless every adapter sits above layer 0 (the client side must hold adapters, so
        # only with cut_layer >= 2): then the client half starts from the cached states
        self.prefix = self.make_prefix(self.model, self.task)

        init = lora_state(self.model)
        self.global_client_state = OrderedDict((n, init[n]) for n in self.split.client_names)
        self.server_opt = torch.optim.AdamW(self.split.server_params(), lr=config.lr,
                                            weight_decay=config.weight_decay)
        self.version = 0
        self.server_steps = 0  # server-side updates since the last aggregation
        self.step_log: list[StepRecord] = []
        self._progress: dict[int, _Progress] = {}
        self._download: tuple[int, LoraPayload] | None = None

    # --- the contract -----------------------------------------------------------------------

    def client_round(self, rnd: int, client: int):
        cfg = self.config
        self._progress.pop(client, None)  # an earlier round's leftovers are never aggregated late
        received = yield Receive(self.download_payload(), label="model")
        plan = self.batch_plan(rnd, client)
        tensors = OrderedDict((n, t.detach().to(self.device, copy=True).requires_grad_(True))
                              for n, t in received.decode().items())  # the client's live tensors
        prog = self._progress[client] = _Progress(rnd, len(plan), tensors)
        opt = torch.optim.AdamW(list(tensors.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)

        for step, idx in enumerate(plan):
            B, T, A = batch_shape(self.task, idx)
            held: dict[str, torch.Tensor] = {}  # the client's forward graph, between its events

            def forward(send_plan: SendPlan, idx=idx, step=step, held=held) -> CutActivations:
                with self._dropout_rng(client, rnd, step, "client"), self.forward_ctx():
                    batch, held["h"] = self.client_activations(idx, tensors)  # (B, T, H), with graph
                return CutActivations.encode(held["h"], batch, cfg.activation_dtype, self.split.vocab_size,
                                             cfg.header_bits)

            yield Compute(flops=self.client_forward_flops(B, T), label="client_fwd")
            msg = yield Send(sizer=lambda cap, B=B, T=T, A=A: self._activation_plan(B, T, A), work=forward,
                             label="activations")
            grads = yield ServerCompute(flops=self.server_step_flops(B, T, A),
                                        work=lambda msg=msg, step=step: self.server_step(msg, client, rnd, step),
                                        label="server_step")
            grads = yield Receive(grads, label="gradients")

            def backward(grads=grads, held=held) -> None:
                opt.zero_grad(set_to_none=True)
                h = held.pop("h")
                h.backward(grads.decode().to(h.device, h.dtype))
                opt.step()

            yield Compute(flops=self.client_backward_flops(B, T), work=backward, label="client_bwd")
            prog.steps_completed = step + 1

        def upload(send_plan: SendPlan) -> LoraPayload:
            return LoraPayload.encode(tensors, cfg.upload_dtype, cfg.header_bits)

        payload = yield Send(sizer=self.size_update, work=upload, label="update")
        del self._progress[client]
        return SplitUpdate(payload.decode(), payload.bits, prog.steps_completed, prog.steps_planned,
                           tuple(prog.losses))

    def server_step(self, msg: CutActivations, client: int, rnd: int, step: int) -> CutGradients:
        """The server's half of one step, from the received message only: decode the
        activations, forward + backward, AdamW step on the server-side adapter, encode the
        activation gradients."""
        cfg = self.config
        dev = self.device
        # (B, T, H): what the server received, as a leaf of its own on the server's device
        hidden = msg.acts.decode().to(dev, copy=True).requires_grad_(True)
        self.server_opt.zero_grad(set_to_none=True)
        with self._dropout_rng(client, rnd, step, "server"):
            with self.forward_ctx():
                loss = self.split.server_loss(hidden, msg.attention_mask.to(dev), msg.target_ids.to(dev),
                                              msg.target_mask.to(dev), msg.target_pos().to(dev))
            loss.backward()
        self.server_opt.step()
        self.server_steps += 1
        prog = self._progress.get(client)
        if prog is not None:
            prog.server_steps += 1
            prog.losses.append(loss.item())
        return CutGradients(WireTensor.encode(hidden.grad, self.gradient_dtype), cfg.header_bits)

    def size_update(self, capacity_bits: float) -> SendPlan:
        """The client-side adapter upload's exact size (fixed; the capacity is ignored)."""
        return SendPlan(bits=self.upload_bits, info={"dtype": self.config.upload_dtype})

    def aggregate(self, rnd: int, results: Sequence[ClientResult], failures: Sequence[Failure]) -> Mapping[str, float]:
        cfg = self.config
        states, weights, records, losses = [], [], [], []
        partial_bits = 0
        for r in results:
            u = r.update
            w = float(r.n_samples if cfg.client_weighting == "samples" else u.steps_completed)
            states.append(u.state)
            weights.append(w)
            losses.append(u.train_loss)
            records.append(StepRecord(rnd, r.client, "completed", "", u.steps_planned, u.steps_completed,
                                      u.steps_completed, w))
        for f in failures:
            prog = self._progress.pop(f.client, None)
            planned = prog.steps_planned if prog is not None else cfg.local_steps
            done = prog.steps_completed if prog is not None else 0
            server = prog.server_steps if prog is not None else 0
            w = 0.0
            if prog is not None and prog.losses:
                losses.append(_mean(prog.losses))
            if done > 0 and cfg.partial == "aggregate":
                payload = LoraPayload.encode(prog.tensors, cfg.upload_dtype, cfg.header_bits)
                partial_bits += payload.bits
                w = float(self.n_samples(f.client) if cfg.client_weighting == "samples" else done)
                states.append(payload.decode())
                weights.append(w)
            records.append(StepRecord(rnd, f.client, "partial" if done > 0 else "no_step", f.reason, planned,
                                      done, server, w))
        if states:
            self.global_client_state = fedavg(states, weights)
            self.version += 1
        records.sort(key=lambda s: s.client)
        self.step_log.extend(records)
        self._write_steps()
        server_steps, self.server_steps = self.server_steps, 0
        return {
            "n_aggregated": float(len(states)),
            "n_partial": float(sum(s.status == "partial" for s in records)),
            "steps_planned": float(sum(s.steps_planned for s in records)),
            "steps_completed": float(sum(s.steps_completed for s in records)),
            "server_steps": float(server_steps),
            "partial_adapter_bits": float(partial_bits),
            "train_loss": _mean(losses),
        }

    def evaluate(self, rnd: int) -> Mapping[str, float]:
        """Accuracy and loss of the global model (global client-side adapter + the server's
        adapter) after round ``rnd``, or {} when it is not an evaluation round."""
        if not self.is_eval_round(rnd, self.config.eval_every):
            return {}
        return self.evaluate_global()

    # --- helpers the host may use ----------------------------------------------------------

    def evaluate_global(self) -> dict[str, float]:
        """Accuracy and answer loss of the unsplit global model on the test set."""
        self.load_global_client_state()
        m = self.eval_model(self.model, self.prefix, self.test_idx, self.config.eval_batch_size)
        return self.reported(m)

    def client_activations(self, idx: Sequence[int], tensors: Mapping[str, torch.Tensor] | None = None):
        """(the batch of ``idx``, its cut-layer activations (B, T, H) on the device) with the
        client-side tensors ``tensors`` (None: the shared model's): from the frozen prefix's
        cached states when there is one, else from the embeddings."""
        if self.prefix is None:
            batch = collate(self.task, idx).to(self.device)
            return batch, self.split.client_forward(batch, tensors)
        batch, hidden = self.prefix.train_states(idx)
        batch = batch.to(hidden.device)
        return batch, self.split.client_forward(batch, tensors, hidden, self.prefix.layer)

    @torch.no_grad()
    def load_global_client_state(self) -> None:
        """Copy the global client-side adapter into the shared model (evaluation, export)."""
        for name, p in self.split.client_params().items():
            p.copy_(self.global_client_state[name])

    def batch_plan(self, rnd: int, client: int) -> list[list[int]]:
        """The index lists of ``client``'s ``local_steps`` batches in round ``rnd``."""
        gen = torch.Generator().manual_seed(int_seed(self.train_root, "train", client, rnd))
        return draw_batches(self.client_idx[client], self.config.batch_size, self.config.local_steps, gen)

    def download_payload(self) -> LoraPayload:
        """The global client-side adapter encoded for the downlink (once per version)."""
        if self._download is None or self._download[0] != self.version:
            payload = LoraPayload.encode(self.global_client_state, self.config.download_dtype, self.config.header_bits)
            self._download = (self.version, payload)
        return self._download[1]

    @property
    def gradient_dtype(self) -> WireDtype:
        return self.config.gradient_dtype or self.config.activation_dtype

    @property
    def upload_bits(self) -> int:
        return payload_bits(self.client_shapes, self.config.upload_dtype, self.config.header_bits)

    @property
    def download_bits(self) -> int:
        return payload_bits(self.client_shapes, self.config.download_dtype, self.config.header_bits)

    def step_up_bits(self, B: int, T: int, A: int) -> int:
        """Exact uplink bits of one step: activations + mask + answer tokens + header."""
        return (activation_bits(B, T, self.split.hidden_size, self.config.activation_dtype)
                + side_bits(B, T, A, self.split.vocab_size) + self.config.header_bits)

    def step_down_bits(self, B: int, T: int) -> int:
        """Exact downlink bits of one step: activation gradients + header."""
        return activation_bits(B, T, self.split.hidden_size, self.gradient_dtype) + self.config.header_bits

    def client_forward_flops(self, B: int, T: int) -> float:
        return float(self.client_profile.forward(B, T))

    def client_backward_flops(self, B: int, T: int) -> float:
        return float(self.client_profile.train_step(B, T) - self.client_profile.forward(B, T))

    def server_step_flops(self, B: int, T: int, A: int) -> float:
        # the head runs on the last A + 1 positions (see fl.lm.train.answer_loss)
        return float(self.server_profile.train_step(B, T, head_tokens=A + 1))

    def round_plan(self, rnd: int, client: int) -> list[dict[str, float]]:
        """Per step of ``client``'s round ``rnd``: B, T, A, bits up/down, FLOPs (client
        forward, client backward, server) — known before any real work runs."""
        rows = []
        for idx in self.batch_plan(rnd, client):
            B, T, A = batch_shape(self.task, idx)
            rows.append({"B": B, "T": T, "A": A, "bits_up": self.step_up_bits(B, T, A),
                         "bits_down": self.step_down_bits(B, T),
                         "client_fwd_flops": self.client_forward_flops(B, T),
                         "client_bwd_flops": self.client_backward_flops(B, T),
                         "server_flops": self.server_step_flops(B, T, A)})
        return rows

    def info(self) -> dict[str, float | int | str]:
        """Static facts for a run summary: sizes, client storage, adapter bits."""
        client_modules = [self.split.embed, *self.split.client_layers]
        seen: set[int] = set()
        storage = 0
        for mod in client_modules:
            for t in list(mod.parameters()) + list(mod.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    storage += t.numel() * t.element_size()
        return {
            "model": getattr(self.config.model, "name_or_path", "tiny"),
            "cut_layer": self.config.cut_layer,
            "n_layers": self.split.n_layers,
            "n_params": count_parameters(self.model),
            "n_trainable_client": sum(math.prod(s) for s in self.client_shapes.values()),
            "n_trainable_server": sum(p.numel() for p in self.split.server_params()),
            "client_storage_bytes": storage,
            "full_model_bytes": bytes_resident(self.model),
            "bits_up_adapter": self.upload_bits,
            "bits_down_adapter": self.download_bits,
            "n_train": int(len(self.train_idx)),
            "n_test": int(len(self.test_idx)),
        }

    # --- internals --------------------------------------------------------------------------

    def _activation_plan(self, B: int, T: int, A: int) -> SendPlan:
        return SendPlan(bits=self.step_up_bits(B, T, A), info={"dtype": self.config.activation_dtype})

    def _dropout_rng(self, client: int, rnd: int, step: int, side: str):
        """A forked torch RNG seeded per (client, round, step, side): LoRA dropout draws do not
        depend on how clients' steps interleave in simulated time."""
        return _SeededRng(int_seed(self.train_root, "dropout", client, rnd, step, side), self.model)

    def _write_steps(self) -> None:
        """Rewrite ``split_steps.csv`` (all aggregations so far) atomically in the run directory."""
        if self.context.run_dir is None:
            return
        columns = list(StepRecord.__dataclass_fields__)
        fd, tmp = tempfile.mkstemp(prefix=f".{STEPS_CSV}.", dir=self.context.run_dir)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for s in self.step_log:
                w.writerow([getattr(s, k) for k in columns])
        os.replace(tmp, os.path.join(self.context.run_dir, STEPS_CSV))


class _SeededRng:
    """Context: train mode (LoRA dropout active) under a forked, seeded global torch RNG (and
    that of the model's CUDA device, where dropout then draws)."""

    def __init__(self, seed: int, model: torch.nn.Module) -> None:
        self.seed = seed
        self.model = model

    def __enter__(self):
        dev = next(self.model.parameters()).device
        self._fork = torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [])
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        self._was_training = self.model.training
        self.model.train()
        return self

    def __exit__(self, *exc):
        self.model.train(self._was_training)
        return self._fork.__exit__(*exc)


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else math.nan

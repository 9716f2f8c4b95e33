"""The frozen prefix computed once: hidden states below the lowest trainable layer, cached.

When every trainable tensor (LoRA) sits in decoder layers >= L, the hidden state entering
layer L for a fixed token sequence never changes: it depends on the frozen embeddings and
layers < L only. :class:`FrozenPrefix` computes it once per example and reuses it in every
training step, round and client — and for evaluation, the prompts' and each label's answer
continuations' states — so a step runs only layers >= L (forward and backward), the final
norm and the output head on the answer positions.

The shared head computed once as well: every prompt of a task starts with the same tokens
(the chat template, the system prompt and the question — 57 of SmolLM2's ~90 prompt tokens
on the fortunes). Their states in layers >= L depend on the adapters but not on the rest of
the prompt (causal attention), so each step runs the head once per adapter (a batch of one;
its keys and values are then shared by every row, and the gradient through them sums over
the rows, as it must) and only the rest of each sequence per row.

Exact up to float rounding: each sequence's states are computed alone (a batch of one, no
padding, its own tokens on top of the head's keys and values in layers < L, themselves
computed once, alone), so they are a function of the sequence only — whatever batch, round, process or
cache history asked first, a run gives the same bits (and resumes identically). Against the
uncached model, which runs the lower layers inside each padded batch, sums are ordered
differently in the last bits: losses and trained adapters equal it to float tolerance
(tested; to 1e-10 in float64).

What is cached is the states at the real tokens of each sequence (no padding), in the
dtype the model computes in; ``max_bytes`` bounds it (beyond the bound, states are computed
for the batch at hand and not kept). Anything that changes the layers below L (a different
base, fedsoda's alignment) must call :meth:`FrozenPrefix.clear`.

Llama-family decoders (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``) only; the
caller falls back to the plain model for others (:func:`prefix_layer` returns 0).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fl.lm.data import Batch, EncodedTask, collate
from fl.lm.models import layer_of
from fl.lm.train import upcast

__all__ = ["prefix_layer", "shared_head", "FrozenPrefix"]


def _decoder(model: nn.Module):
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    get = getattr(lm, "get_decoder", None)
    dec = get() if get is not None else None
    if dec is None or not all(hasattr(dec, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return lm, None
    return lm, dec


def prefix_layer(model: nn.Module) -> int:
    """L: the lowest decoder layer holding a trainable tensor (0: nothing to cache — a
    trainable tensor outside the decoder layers, no trainable tensor, or not a Llama-family
    decoder)."""
    _, dec = _decoder(model)
    if dec is None:
        return 0
    layers = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = layer_of(name)
            if layer is None:
                return 0
            layers.append(layer)
    return min(layers) if layers else 0


def shared_head(task: EncodedTask) -> int:
    """The number of leading tokens every prompt of ``task`` shares (at most the shortest
    prompt's length minus one, so that every prompt keeps a token of its own)."""
    if len(task.prompts) == 0:
        return 0
    common = os.path.commonprefix([list(p) for p in task.prompts])
    return max(0, min(len(common), min(len(p) for p in task.prompts) - 1))


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # as fl.lm.train: positions count real tokens only, so left padding does not shift them
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class FrozenPrefix:
    """Hidden states entering decoder layer ``L`` of ``model``, cached per sequence.

    Args:
        model: a (peft-wrapped) Llama-family causal LM whose trainable tensors all sit in
            layers >= L; its modules are used in place, not copied.
        task: the encoded task whose examples are cached (keys are its indices).
        layer: L, in [1, n_layers - 1] (see :func:`prefix_layer`).
        max_bytes: bound of the cache.
        share_head: run the prompts' shared head (:func:`shared_head`) once per step and
            adapter instead of once per row (off: every row runs its whole sequence).
    """

    def __init__(self, model: nn.Module, task: EncodedTask, layer: int,
                 max_bytes: int = 2 << 30, share_head: bool = True) -> None:
        lm, dec = _decoder(model)
        if dec is None:
            raise ValueError(f"The frozen prefix needs a Llama-family decoder; {type(lm).__name__} is not one.")
        n = len(dec.layers)
        if not 1 <= layer <= n - 1:
            raise ValueError(f"The prefix layer must be in [1, {n - 1}] for this {n}-layer model. "
                             f"Got {layer} instead.")
        self.model, self.lm, self.config = model, lm, lm.config
        self.task, self.layer, self.max_bytes = task, int(layer), int(max_bytes)
        self.embed, self.rotary, self.norm = dec.embed_tokens, dec.rotary_emb, dec.norm
        self.lower, self.upper = list(dec.layers[:layer]), list(dec.layers[layer:])
        self.head = lm.get_output_embeddings()
        self.head_len = shared_head(task) if share_head else 0  # h: tokens every prompt starts with
        self._head: torch.Tensor | None = None  # (h, H): the head's state entering layer L
        self._head_lower: list = []  # its (cache index, keys, values) in layers < L
        self.head_nbytes = 0  # kept whatever max_bytes says (every sequence needs them)
        self._train: dict[int, torch.Tensor] = {}   # example -> (T_i - h, H) at its real tokens after the head
        self._eval: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # prompt (T_p - h, H), answers (L, A-1, H)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ the cache
    def clear(self) -> None:
        """Forget every cached state (call when anything below layer L changed)."""
        self._train.clear()
        self._eval.clear()
        self._head, self._head_lower, self.head_nbytes = None, [], 0
        self.nbytes = 0

    def _keep(self, nbytes: int) -> bool:
        if self.nbytes + nbytes > self.max_bytes:
            return False
        self.nbytes += nbytes
        return True

    def _device(self) -> torch.device:
        return self.head.weight.device

    @torch.no_grad()
    def _lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) entering layer L (the frozen layers < L, no grad)."""
        hidden = self.embed(input_ids)
        return self._run(self.lower, hidden, attention_mask)

    def _run(self, layers, hidden, attention_mask, cache=None, pos=None, first=None):
        """``layers`` on ``hidden`` (B, T, H); ``attention_mask`` (B, past + T) covers the
        cached positions too; ``first``: the index of the first of ``layers`` (default L),
        where the cache's length is read."""
        from transformers.masking_utils import create_causal_mask

        pos = _positions(attention_mask)[:, -hidden.shape[1]:] if pos is None else pos
        causal = create_causal_mask(config=self.config, inputs_embeds=hidden,
                                    attention_mask=attention_mask.long(), cache=cache, position_ids=pos,
                                    layer_idx=(self.layer if first is None else first)
                                    if cache is not None else None)
        rope = self.rotary(hidden, position_ids=pos)
        for layer in layers:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=pos,
                           cache=cache, use_cache=cache is not None)
        return hidden

    @torch.no_grad()
    def head_state(self) -> torch.Tensor:
        """The shared head's state entering layer L: (h, H), computed alone (h = 0: empty).
        Its keys and values in the layers < L are kept too: every sequence's own tokens run
        on top of them (:meth:`_lower_rest`)."""
        if self._head is None:
            from transformers import DynamicCache

            h, dev = self.head_len, self._device()
            ids = torch.tensor([self.task.prompts[0][:h]], dtype=torch.long, device=dev)
            if h:
                cache = DynamicCache(config=self.config)
                self._head = self._run(self.lower, self.embed(ids), torch.ones_like(ids), cache=cache,
                                       first=self._first_lower())[0]
                self._head_lower = [(layer.self_attn.layer_idx, cache.layers[layer.self_attn.layer_idx].keys,
                                     cache.layers[layer.self_attn.layer_idx].values) for layer in self.lower]
                self.head_nbytes = self._head.numel() * self._head.element_size() + sum(
                    k.numel() * k.element_size() + v.numel() * v.element_size() for _, k, v in self._head_lower)
            else:
                self._head = self.embed(ids)[0]  # (0, H): the right dtype and device
                self._head_lower = []
        return self._head

    def _first_lower(self) -> int:
        return int(getattr(self.lower[0].self_attn, "layer_idx", 0))

    @torch.no_grad()
    def _lower_rest(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        """States entering layer L (1, n, H) of one sequence's tokens after the head ``ids``
        (1, n), run on top of the head's keys and values in layers < L (a function of the
        sequence only). ``cache``: an empty KV cache, left holding head + sequence."""
        from transformers import DynamicCache

        self.head_state()
        h, n = self.head_len, ids.shape[1]
        cache = DynamicCache(config=self.config) if cache is None else cache
        for idx, k, v in self._head_lower:
            cache.update(k, v, idx)
        mask = torch.ones((1, h + n), dtype=torch.long, device=ids.device)
        pos = h + torch.arange(n, device=ids.device)[None, :]
        return self._run(self.lower, self.embed(ids), mask, cache=cache, pos=pos, first=self._first_lower())

    def _rest_states(self, indices: list[int]) -> list[torch.Tensor]:
        """Each example's state entering layer L after the head: (T_i - h, H), from the cache
        or computed (the sequence alone on top of the head: a function of the sequence only)."""
        missing = [i for i in dict.fromkeys(indices) if i not in self._train]
        fresh: dict[int, torch.Tensor] = {}
        dev, h = self._device(), self.head_len
        for i in missing:
            seq = self.task.prompts[i] + self.task.answers[self.task.labels[i]]
            state = self._lower_rest(torch.tensor([seq[h:]], dtype=torch.long, device=dev))[0]  # (T_i - h, H)
            fresh[i] = state
            if self._keep(state.numel() * state.element_size()):
                self._train[i] = state
        self.misses += len(missing)
        self.hits += len(indices) - len(missing)
        return [self._train.get(i, fresh.get(i)) for i in indices]

    def train_states(self, indices: Sequence[int]) -> tuple[Batch, torch.Tensor]:
        """The batch :func:`fl.lm.data.collate` builds for ``indices`` and the hidden states
        (B, T, H) entering layer L at its positions (zeros at padding)."""
        indices = [int(i) for i in indices]
        rest = self._rest_states(indices)
        head = self.head_state()
        batch = collate(self.task, indices)
        B, T = batch.input_ids.shape
        hidden = head.new_zeros((B, T, head.shape[-1]))
        for row, state in enumerate(rest):
            n = state.shape[0]
            hidden[row, T - n - head.shape[0]:T - n] = head
            hidden[row, T - n:] = state
        return batch, hidden

    def rest_states(self, indices: Sequence[int]) -> tuple[Batch, torch.Tensor]:
        """As :meth:`train_states` without the shared head's h columns: the batch of the
        sequences after the head (left-padded to T - h; ``target_pos`` counts from there)
        and their states (B, T - h, H) entering layer L."""
        indices = [int(i) for i in indices]
        rest = self._rest_states(indices)
        batch = collate(self.task, indices)
        h = self.head_len
        B, T = batch.input_ids.shape
        mask = batch.attention_mask[:, :T - h]  # row i's last T_i - h columns: its tokens after the head
        real = mask.bool()
        batch = Batch(torch.where(real, batch.input_ids[:, h:], self.task.pad_id), mask,
                      torch.where(real, batch.labels[:, h:], -100), batch.target_pos - h,
                      batch.target_ids, batch.target_mask)
        hidden = rest[0].new_zeros((B, T - h, rest[0].shape[-1]))
        for row, state in enumerate(rest):
            hidden[row, T - h - state.shape[0]:] = state
        return batch, hidden

    def _head_kv(self, groups: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """The shared head run through layers >= L, ``groups`` rows (one per adapter when
        clients are batched): per layer (its cache index, keys, values)."""
        from transformers import DynamicCache

        head = self.head_state()
        cache = DynamicCache(config=self.config)
        hid = head.unsqueeze(0).expand(groups, -1, -1)
        self._run(self.upper, hid, torch.ones((groups, head.shape[0]), dtype=torch.long, device=head.device),
                  cache=cache, first=self._first_upper())
        out = []
        for layer in self.upper:
            idx = layer.self_attn.layer_idx
            out.append((idx, cache.layers[idx].keys, cache.layers[idx].values))
        return out

    def _first_upper(self) -> int:
        return int(getattr(self.upper[0].self_attn, "layer_idx", self.layer))

    def upper_rest(self, hidden: torch.Tensor, mask: torch.Tensor, groups: int = 1, cache=None,
                   kv=None, layers: slice = slice(None)) -> torch.Tensor:
        """Layers >= L (or the slice ``layers`` of them) on the states after the head
        ``hidden`` (N, T - h, H) with their mask (N, T - h): the head runs once per group
        (N / ``groups`` consecutive rows share an adapter), its keys and values serve every
        row. ``cache``: a KV cache to fill (default: a fresh one), or the one an earlier call
        on the layers below ``layers`` filled (then the head is already in it); ``kv``: the
        head's keys and values from :meth:`_head_kv`, to run it once for many calls with the
        same adapters."""
        h, N = self.head_len, hidden.shape[0]
        chosen = self.upper[layers]
        if not chosen:
            return hidden
        first = self._first_upper() + self.upper.index(chosen[0])
        if h == 0:
            return self._run(chosen, hidden, mask, cache=cache, first=first if cache is not None else None)
        if N % groups:
            raise ValueError(f"{N} rows do not split into {groups} equal groups.")
        if cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        if cache.get_seq_length(self._first_upper()) == 0:  # a fresh cache: put the head in it
            kv = self._head_kv(groups) if kv is None else kv
            for idx, k, v in kv:  # row g*rows + j: group g's head
                cache.update(k.repeat_interleave(N // groups, 0), v.repeat_interleave(N // groups, 0), idx)
        full = torch.cat([mask.new_ones((N, h)), mask], 1)
        pos = h + _positions(mask)
        return self._run(chosen, hidden, full, cache=cache, pos=pos, first=first)

    # ------------------------------------------------------------------ training
    def answer_loss(self, indices: Sequence[int]) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens of the batch ``indices`` (as
        :func:`fl.lm.train.answer_loss`), running only layers >= L."""
        batch, hidden = self.rest_states(indices)
        dev = hidden.device
        hidden = self.upper_rest(hidden, batch.attention_mask.to(dev))
        T = hidden.shape[1]
        target_pos, target_mask = batch.target_pos.to(dev), batch.target_mask.to(dev)
        keep = T - int(target_pos[target_mask].min())  # head runs on the last `keep` positions
        logits = self.head(self.norm(hidden[:, -keep:, :]))  # (B, keep, V)
        rel = target_pos - (T - keep)  # (B, A) index into the kept positions
        picked = logits.gather(1, rel.clamp(min=0).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, A, V)
        return F.cross_entropy(upcast(picked[target_mask]), batch.target_ids.to(dev)[target_mask])

    # ------------------------------------------------------------------ evaluation
    def _answers(self) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.task
        L, A = len(task.answers), max(len(a) for a in task.answers)
        answers = torch.full((L, A), task.pad_id, dtype=torch.long)
        answer_mask = torch.zeros((L, A), dtype=torch.bool)
        for k, a in enumerate(task.answers):
            answers[k, :len(a)] = torch.tensor(a)
            answer_mask[k, :len(a)] = True
        return answers, answer_mask

    @torch.no_grad()
    def _fill_eval(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ``i``'s states after the shared head (T_p - h, H) and, per label, its answer
        continuation's states (L, A-1, H), computed alone: the prompt once (KV cache of layers
        < L kept), every label's continuation on top of it."""
        from transformers import DynamicCache

        answers, answer_mask = self._answers()
        L, A = answers.shape
        dev = self._device()
        h, n = self.head_len, len(self.task.prompts[i])
        cache = DynamicCache(config=self.config)
        prompt = self._lower_rest(torch.tensor([self.task.prompts[i][h:]], device=dev), cache)[0]  # (T_p - h, H)
        mask = torch.ones((1, n), dtype=torch.long, device=dev)
        if A == 1:
            return prompt, prompt.new_zeros((L, 0, prompt.shape[-1]))
        cache.batch_repeat_interleave(L)  # row k: label k
        am = answer_mask.to(dev)
        cont_mask = torch.cat([mask.repeat(L, 1), am[:, :-1].long()], 1)  # (L, T_p + A-1)
        pos = n + torch.arange(A - 1, device=dev)[None, :].expand(L, -1)  # (L, A-1)
        cont = self._run(self.lower, self.embed(answers[:, :-1].to(dev)), cont_mask, cache=cache,
                         pos=pos, first=self._first_lower())  # (L, A-1, H)
        return prompt, cont

    @torch.no_grad()
    def score_labels(self, indices: Sequence[int], batch_size: int = 16) -> torch.Tensor:
        """Log-likelihood of every label's answer given each prompt: (len(indices), n_labels),
        as :func:`fl.lm.train.score_labels`, from cached states: the shared head runs through
        layers >= L once per call, the rest of each prompt once (KV cache kept), each label's
        answer continuation on top of it. Prompts are batched by length (less padding); the
        scores come back in the order of ``indices``."""
        from transformers import DynamicCache

        indices = [int(i) for i in indices]
        missing = [i for i in dict.fromkeys(indices) if i not in self._eval]
        fresh = {i: self._fill_eval(i) for i in missing}
        for i, (p, c) in fresh.items():
            if self._keep(p.numel() * p.element_size() + c.numel() * c.element_size()):
                self._eval[i] = (p, c)
        self.misses += len(missing)
        self.hits += len(indices) - len(missing)
        answers, answer_mask = self._answers()
        L, A = answers.shape
        dev = self._device()
        h = self.head_len
        kv = self._head_kv(1) if h else None  # the head's keys and values: once per call
        order = sorted(range(len(indices)), key=lambda j: len(self.task.prompts[indices[j]]))
        scores = []
        for start in range(0, len(indices), batch_size):
            chunk = [indices[j] for j in order[start:start + batch_size]]
            states = [self._eval.get(i) or fresh[i] for i in chunk]
            B = len(chunk)
            Tp = max(p.shape[0] for p, _ in states)
            H = states[0][0].shape[-1]
            hidden = states[0][0].new_zeros((B, Tp, H))
            mask = torch.zeros((B, Tp), dtype=torch.long, device=dev)
            for row, (p, _) in enumerate(states):
                hidden[row, Tp - p.shape[0]:] = p
                mask[row, Tp - p.shape[0]:] = 1
            cache = DynamicCache(config=self.config)
            out = self.upper_rest(hidden, mask, cache=cache, kv=kv)  # the cache: head + prompts
            first = upcast(self.head(self.norm(out[:, -1:, :]))[:, -1]).log_softmax(-1)  # (B, V)
            score = first[:, answers[:, 0].to(dev)]  # (B, L)
            if A > 1:
                cache.batch_repeat_interleave(L)  # row b*L + k: prompt b, label k
                cont = torch.cat([c for _, c in states])  # (B*L, A-1, H)
                am = answer_mask.to(dev)
                head_mask = mask.new_ones((B * L, h))
                cont_mask = torch.cat([head_mask, mask.repeat_interleave(L, 0), am[:, :-1].long().repeat(B, 1)], 1)
                n_prompt = h + mask.sum(1).repeat_interleave(L)  # (B*L,)
                pos = n_prompt[:, None] + torch.arange(A - 1, device=dev)[None, :]  # (B*L, A-1)
                h2 = self._run(self.upper, cont, cont_mask, cache=cache, pos=pos, first=self._first_upper())
                logp = upcast(self.head(self.norm(h2))).log_softmax(-1)  # (B*L, A-1, V)
                nxt = answers[:, 1:].to(dev).repeat(B, 1)  # (B*L, A-1) the tokens they predict
                tok = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)  # (B*L, A-1)
                score = score + (tok * am[:, 1:].repeat(B, 1)).sum(-1).view(B, L)
            scores.append(score.cpu())
        if not scores:
            return torch.empty((0, L))
        ranked = torch.cat(scores)
        out = torch.empty_like(ranked)
        out[torch.tensor(order, dtype=torch.long)] = ranked  # back in the order of indices
        return out

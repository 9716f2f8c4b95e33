"""The frozen prefix computed once: hidden states below the lowest trainable layer, cached.

When every trainable tensor (LoRA) sits in decoder layers >= L, the hidden state entering
layer L for a fixed token sequence never changes: it depends on the frozen embeddings and
layers < L only. :class:`FrozenPrefix` computes it once per example and reuses it in every
training step, round and client — and for evaluation, the prompts' and each label's answer
continuations' states — so a step runs only layers >= L (forward and backward), the final
norm and the output head on the answer positions.

Exact up to float rounding: each sequence's states are computed alone (a batch of one, no
padding), so they are a function of the sequence only — whatever batch, round, process or
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

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fl.data import Batch, EncodedTask, collate
from fl.train import upcast
from fl.split import layer_of

__all__ = ["prefix_layer", "FrozenPrefix"]


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


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # as fl.train: positions count real tokens only, so left padding does not shift them
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class FrozenPrefix:
    """Hidden states entering decoder layer ``L`` of ``model``, cached per sequence.

    Args:
        model: a (peft-wrapped) Llama-family causal LM whose trainable tensors all sit in
            layers >= L; its modules are used in place, not copied.
        task: the encoded task whose examples are cached (keys are its indices).
        layer: L, in [1, n_layers - 1] (see :func:`prefix_layer`).
        max_bytes: bound of the cache.
    """

    def __init__(self, model: nn.Module, task: EncodedTask, layer: int,
                 max_bytes: int = 2 << 30) -> None:
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
        self._train: dict[int, torch.Tensor] = {}   # example -> (T_i, H) at its real tokens
        self._eval: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # prompt (T_p, H), answers (L, A-1, H)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ the cache
    def clear(self) -> None:
        """Forget every cached state (call when anything below layer L changed)."""
        self._train.clear()
        self._eval.clear()
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

    def train_states(self, indices: Sequence[int]) -> tuple[Batch, torch.Tensor]:
        """The batch :func:`fl.data.collate` builds for ``indices`` and the hidden states
        (B, T, H) entering layer L at its positions (zeros at padding)."""
        indices = [int(i) for i in indices]
        missing = [i for i in dict.fromkeys(indices) if i not in self._train]
        fresh: dict[int, torch.Tensor] = {}
        dev = self._device()
        for i in missing:  # alone: the state is a function of the sequence only
            b = collate(self.task, [i])
            state = self._lower(b.input_ids.to(dev), b.attention_mask.to(dev))[0]  # (T_i, H)
            fresh[i] = state
            if self._keep(state.numel() * state.element_size()):
                self._train[i] = state
        self.misses += len(missing)
        self.hits += len(indices) - len(missing)
        batch = collate(self.task, indices)
        B, T = batch.input_ids.shape
        first = self._train.get(indices[0], fresh.get(indices[0]))
        hidden = first.new_zeros((B, T, first.shape[-1]))
        for row, i in enumerate(indices):
            state = self._train.get(i, fresh.get(i))
            hidden[row, T - state.shape[0]:] = state
        return batch, hidden

    # ------------------------------------------------------------------ training
    def answer_loss(self, indices: Sequence[int]) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens of the batch ``indices`` (as
        :func:`fl.train.answer_loss`), running only layers >= L."""
        batch, hidden = self.train_states(indices)
        dev = hidden.device
        mask = batch.attention_mask.to(dev)
        hidden = self._run(self.upper, hidden, mask)
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
        """Prompt ``i``'s states (T_p, H) and, per label, its answer continuation's states
        (L, A-1, H), computed alone: the prompt once (KV cache of layers < L kept), every
        label's continuation on top of it."""
        from transformers import DynamicCache

        answers, answer_mask = self._answers()
        L, A = answers.shape
        dev = self._device()
        ids = torch.tensor([self.task.prompts[i]], device=dev)  # (1, T_p)
        mask = torch.ones_like(ids)
        cache = DynamicCache(config=self.config)
        prompt = self._run(self.lower, self.embed(ids), mask, cache=cache, first=0)[0]  # (T_p, H)
        if A == 1:
            return prompt, prompt.new_zeros((L, 0, prompt.shape[-1]))
        cache.batch_repeat_interleave(L)  # row k: label k
        am = answer_mask.to(dev)
        cont_mask = torch.cat([mask.repeat(L, 1), am[:, :-1].long()], 1)  # (L, T_p + A-1)
        pos = ids.shape[1] + torch.arange(A - 1, device=dev)[None, :].expand(L, -1)  # (L, A-1)
        cont = self._run(self.lower, self.embed(answers[:, :-1].to(dev)), cont_mask, cache=cache,
                         pos=pos, first=0)  # (L, A-1, H)
        return prompt, cont

    @torch.no_grad()
    def score_labels(self, indices: Sequence[int], batch_size: int = 16) -> torch.Tensor:
        """Log-likelihood of every label's answer given each prompt: (len(indices), n_labels),
        as :func:`fl.train.score_labels`, from cached states: the prompts run through layers
        >= L once (KV cache kept), each label's answer continuation on top of it."""
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
        scores = []
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
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
            h = self._run(self.upper, hidden, mask, cache=cache)
            first = upcast(self.head(self.norm(h[:, -1:, :]))[:, -1]).log_softmax(-1)  # (B, V)
            score = first[:, answers[:, 0].to(dev)]  # (B, L)
            if A > 1:
                cache.batch_repeat_interleave(L)  # row b*L + k: prompt b, label k
                cont = torch.cat([c for _, c in states])  # (B*L, A-1, H)
                am = answer_mask.to(dev)
                cont_mask = torch.cat([mask.repeat_interleave(L, 0), am[:, :-1].long().repeat(B, 1)], 1)
                n_prompt = mask.sum(1).repeat_interleave(L)  # (B*L,)
                pos = n_prompt[:, None] + torch.arange(A - 1, device=dev)[None, :]  # (B*L, A-1)
                h2 = self._run(self.upper, cont, cont_mask, cache=cache, pos=pos)
                logp = upcast(self.head(self.norm(h2))).log_softmax(-1)  # (B*L, A-1, V)
                nxt = answers[:, 1:].to(dev).repeat(B, 1)  # (B*L, A-1) the tokens they predict
                tok = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)  # (B*L, A-1)
                score = score + (tok * am[:, 1:].repeat(B, 1)).sum(-1).view(B, L)
            scores.append(score.cpu())
        return torch.cat(scores)

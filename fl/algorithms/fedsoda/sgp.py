"""Similarity group pruning (SGP, FedSODA [P2] (FedSODA, arXiv:2508.12727)): which decoder layers the sub-model keeps.

1. :func:`layer_representations`: run the full model on a calibration set (prompt + answer
   of public examples) and collect, over the real (unpadded) tokens, the decoder's input
   (the embeddings, index 0) and each layer's output (index l + 1 for layer l), before the
   final norm.
2. :func:`similarity_matrix`: similarity of every pair of those representations — mean
   per-token cosine (default) or linear CKA (Kornblith et al., ICML 2019; on at most
   ``cka_tokens`` evenly spaced tokens).
3. :func:`group_layers`: the middle layers 1 .. L−2 are cut into contiguous groups where
   consecutive layers' outputs are dissimilar: either at the ``n_keep − 3`` least similar
   boundaries (so that ``n_keep`` layers remain), or wherever the similarity falls below
   ``threshold``. In each group the most important layer is kept, importance being
   ``1 − sim(input, output)`` of the layer (how much it changes its input). The first and
   the last layer are always kept, each a group of its own.

The result records kept (sub-model) → original indices and the groups, and can be saved
into a run directory (``sgp_map.json``, ``sgp_similarity.png``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fl.lm.data import EncodedTask, collate
from fl.algorithms.fedsoda.config import SimilarityMetric
from fl.lm.train import _positions, causal_lm

__all__ = ["SimilarityMetric", "SGPResult", "layer_representations", "similarity_matrix", "group_layers",
           "similarity_group_pruning"]



@dataclass(frozen=True)
class SGPResult:
    """The outcome of SGP on an L-layer model.

    kept: original indices of the kept layers, increasing; sub-model layer i is original
        layer ``kept[i]``.
    groups: per kept layer, the original layers it stands for (contiguous, increasing); the
        groups cover 0..L−1 in order.
    similarity: (L+1, L+1) similarity of the representations (0: embeddings, l+1: output of
        layer l). importance: (L,) 1 − similarity(input, output) per layer.
    """

    n_layers: int
    kept: tuple[int, ...]
    groups: tuple[tuple[int, ...], ...]
    similarity: np.ndarray
    importance: np.ndarray
    metric: str

    @property
    def group_ends(self) -> tuple[int, ...]:
        """Per kept layer, the last original layer of its group (the output it should match)."""
        return tuple(g[-1] for g in self.groups)

    def to_json(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "metric": self.metric,
            "kept": list(self.kept),
            "kept_to_original": {str(i): k for i, k in enumerate(self.kept)},
            "groups": [list(g) for g in self.groups],
            "importance": [round(float(x), 6) for x in self.importance],
            "consecutive_similarity": [round(float(self.similarity[l + 1, l + 2]), 6)
                                       for l in range(self.n_layers - 1)],
            "similarity": [[round(float(x), 6) for x in row] for row in self.similarity],
        }

    def save(self, run_dir: str | Path) -> list[Path]:
        """Write ``sgp_map.json`` and ``sgp_similarity.png`` into ``run_dir``; return the paths."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        out = [run_dir / "sgp_map.json"]
        out[0].write_text(json.dumps(self.to_json(), indent=1))
        try:
            import matplotlib

            if "inline" not in matplotlib.get_backend():  # a notebook keeps its inline figures
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is optional; the map is the record
            return out
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        im = ax.imshow(self.similarity, vmin=min(0.0, float(self.similarity.min())), vmax=1.0, cmap="viridis")
        ax.set_xlabel("representation (0: embeddings, l+1: output of layer l)")
        ax.set_ylabel("representation")
        ax.set_title(f"SGP {self.metric} similarity; kept layers {list(self.kept)}", fontsize=8)
        for k in self.kept:
            ax.axhline(k + 1, color="w", lw=0.4, alpha=0.6)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = run_dir / "sgp_similarity.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
        return out


@torch.no_grad()
def layer_representations(model: nn.Module, task: EncodedTask, indices: Sequence[int],
                          batch_size: int = 8) -> list[torch.Tensor]:
    """Decoder input and every layer's output on the real tokens of ``indices``.

    Returns L+1 tensors of shape (N_tokens, hidden), float32, on the CPU (whatever the
    model's device: the similarities are computed there): index 0 the embeddings, index l+1
    the output of layer l (before the final norm).
    """
    lm = causal_lm(model)
    dev = next(lm.parameters()).device
    decoder = lm.get_decoder()
    layers = decoder.layers
    captured: list[torch.Tensor | None] = [None] * (len(layers) + 1)

    def keep(i):
        def hook(module, args, output):
            captured[i] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [decoder.embed_tokens.register_forward_hook(keep(0))]
    handles += [layer.register_forward_hook(keep(i + 1)) for i, layer in enumerate(layers)]
    reps: list[list[torch.Tensor]] = [[] for _ in captured]
    was_training = lm.training
    lm.eval()
    try:
        for start in range(0, len(indices), batch_size):
            batch = collate(task, list(indices[start:start + batch_size])).to(dev)
            lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
               position_ids=_positions(batch.attention_mask), use_cache=False, logits_to_keep=1)
            real = batch.attention_mask.bool()  # (B, T)
            for i, h in enumerate(captured):
                reps[i].append(h[real].float().cpu())  # (n_real, hidden)
    finally:
        for h in handles:
            h.remove()
        lm.train(was_training)
    return [torch.cat(r) for r in reps]


def similarity_matrix(reps: Sequence[torch.Tensor], metric: SimilarityMetric = "cosine",
                      cka_tokens: int = 512) -> np.ndarray:
    """(n, n) similarity of n token-aligned representations (each (N_tokens, hidden)).

    cosine: mean over tokens of the cosine of the two hidden vectors (tokens whose vector is
    zero in some representation are left out). cka: linear CKA of the
    two (tokens × hidden) matrices, on at most ``cka_tokens`` evenly spaced tokens.
    """
    if metric == "cosine":
        # tokens that are exactly zero somewhere (e.g. a zero pad embedding) have no direction
        live = torch.stack([r.norm(dim=-1) > 0 for r in reps]).all(0)  # (N,)
        unit = torch.stack([torch.nn.functional.normalize(r[live], dim=-1) for r in reps])  # (n, N', d)
        return torch.einsum("ind,jnd->ij", unit, unit).div(unit.shape[1]).cpu().numpy().astype(np.float64)
    if metric == "cka":
        N = reps[0].shape[0]
        pick = torch.linspace(0, N - 1, min(N, cka_tokens), device=reps[0].device).round().long()
        grams = []
        for r in reps:
            x = r[pick].double()
            x = x - x.mean(0, keepdim=True)
            k = x @ x.T  # (n_tok, n_tok): centred columns give a centred Gram matrix
            grams.append(k / k.norm().clamp(min=1e-30))
        g = torch.stack(grams).flatten(1)  # (n, n_tok²)
        return (g @ g.T).cpu().numpy()
    raise ValueError(f"SGP similarity must be 'cosine' or 'cka'. Got {metric!r} instead.")


def group_layers(similarity: np.ndarray, n_keep: int | None = None,
                 threshold: float | None = None) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], np.ndarray]:
    """Groups and kept layers from an (L+1, L+1) representation similarity matrix.

    Exactly one of ``n_keep`` (layers kept, first and last included, 2 <= n_keep <= L) and
    ``threshold`` (split between consecutive middle layers whose outputs' similarity is
    below it) is given. Ties keep the earlier layer / cut the earlier boundary.
    Returns (kept, groups, importance).
    """
    L = similarity.shape[0] - 1
    if (n_keep is None) == (threshold is None):
        raise ValueError("group_layers needs exactly one of n_keep and threshold.")
    importance = np.array([1.0 - similarity[l, l + 1] for l in range(L)])  # layer l: input l, output l+1
    if L <= 2:
        return tuple(range(L)), tuple((l,) for l in range(L)), importance
    middle = list(range(1, L - 1))
    # boundary b between middle layers b and b+1: similarity of their outputs
    bounds = {b: float(similarity[b + 1, b + 2]) for b in middle[:-1]}
    if n_keep is not None:
        if not 2 <= n_keep <= L:
            raise ValueError(f"SGP n_keep must be in [2, {L}] for this {L}-layer model. Got {n_keep} instead.")
        n_groups = n_keep - 2
        cuts = sorted(sorted(bounds, key=lambda b: (bounds[b], b))[:max(n_groups - 1, 0)])
    else:
        n_groups = None
        cuts = [b for b in sorted(bounds) if bounds[b] < threshold]
    middle_groups: list[list[int]] = []
    if n_groups != 0:
        middle_groups = [[]]
        for l in middle:
            middle_groups[-1].append(l)
            if l in cuts:
                middle_groups.append([])
    kept = [0]
    groups: list[list[int]] = [[0]]
    for g in middle_groups:
        kept.append(max(g, key=lambda l: (importance[l], -l)))
        groups.append(list(g))
    kept.append(L - 1)
    groups.append([L - 1])
    if n_groups == 0:  # every middle layer pruned: the first layer's group stands for them
        groups[0] = list(range(0, L - 1))
    return tuple(kept), tuple(tuple(g) for g in groups), importance


def similarity_group_pruning(model: nn.Module, task: EncodedTask, indices: Sequence[int],
                             n_keep: int | None = None, threshold: float | None = None,
                             metric: SimilarityMetric = "cosine", batch_size: int = 8) -> SGPResult:
    """SGP of ``model`` on the calibration examples ``indices`` (see the module docstring)."""
    reps = layer_representations(model, task, indices, batch_size)
    sim = similarity_matrix(reps, metric)
    kept, groups, importance = group_layers(sim, n_keep=n_keep, threshold=threshold)
    return SGPResult(len(reps) - 1, kept, groups, sim, importance, metric)

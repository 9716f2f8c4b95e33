"""What every real language-model algorithm sets up the same way: seeds, data, splits.

:class:`LMAlgorithm` is the base of ``fedavg_lora``, ``kd_topk``, ``split_lora`` and
``fedsoda``. Its :meth:`~LMAlgorithm.setup_task` derives the two seed roots (training
streams: the run's seed + ``seed_offset``; data splits: ``data_seed`` or the run's seed),
loads the dataset, encodes it with the model's chat template, draws the held-out test and
public splits and partitions the rest among the clients — each draw from its own named
stream (:mod:`fl.core.seeding`), so the order in which an algorithm sets up its models and its
data never changes either.

Checkpoints (:meth:`~LMAlgorithm.state_dict`) and worker replicas (:meth:`~LMAlgorithm.replica`,
for ``Send.job`` s run in other processes) both rely on a fresh build recreating the frozen
models and the data; both check it by fingerprints of the frozen tensors.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fl.core.algorithm import Algorithm, AlgorithmContext, Replica
from fl.lm.data import batch_shape, encode_task, load_dataset
from fl.lm.partition import holdout_split, label_histogram, partition, scarce_label_indices
from fl.core.seeding import numpy_stream

__all__ = ["LMAlgorithm", "LMReplica"]


@dataclass(frozen=True)
class LMReplica(Replica):
    """A :class:`~fl.core.algorithm.Replica` that checks its frozen weights against the host's
    (``fingerprints``: see :meth:`LMAlgorithm.state_dict`), so a worker whose model files or
    set-up differ fails loudly instead of training something else."""

    fingerprints: Mapping[tuple, float] = dataclasses.field(default_factory=dict)

    def __call__(self) -> "LMAlgorithm":
        algo = self.cls(self.config, self.context)
        algo._check_fingerprints(self.fingerprints, "a worker's replica was built",
                                 "give every worker the same model cache (and fedwave "
                                 "version) as the host, or use execution.backend: inline.")
        return algo


def scarce_labels(labels, train_idx, test_idx, label_names: Sequence[str], data) -> list[str]:
    """One message per label that keeps fewer training examples than the balanced test split
    takes from it: the clients then barely see a class the test asks for as often as any
    other, and accuracy on it measures the filter, not the method (e.g. ``max_chars: 140``
    leaves 37 limericks, 20 of them in the test)."""
    import numpy as np

    n = len(label_names)
    train = np.bincount(np.asarray(labels)[train_idx], minlength=n)
    test = np.bincount(np.asarray(labels)[test_idx], minlength=n)
    return [f"fl.options.data: label {label_names[k]!r} keeps {int(train[k])} training examples "
            f"(the test split takes {int(test[k])}); the clients will hardly learn it. Fix: widen "
            f"data.min_chars/data.max_chars (now {data.min_chars}..{data.max_chars}) or lower "
            f"data.n_test (now {data.n_test})."
            for k in scarce_label_indices(labels, train_idx, test_idx)]


class LMAlgorithm(Algorithm):
    """An :class:`~fl.core.algorithm.Algorithm` training a language model on a labelled task.

    After :meth:`setup_task`: ``train_root`` (int), ``dataset``, ``task`` (encoded),
    ``train_idx`` / ``public_idx`` / ``test_idx`` (dataset indices), ``parts`` (per client:
    positions in ``train_idx``) and ``client_idx`` (per client: dataset indices).
    """

    def seed_roots(self, config: Any, context: AlgorithmContext) -> int:
        """Check the population, set ``train_root``; return the data-split root."""
        if context.n_clients < 1:
            raise ValueError(f"{self.name} needs n_clients >= 1. Got {context.n_clients} instead.")
        self.train_root = context.seed + config.seed_offset
        return context.seed if config.data_seed is None else config.data_seed

    def setup_task(self, config: Any, context: AlgorithmContext, tokenizer, data_root: int) -> None:
        """Load, encode, split and partition ``config.data`` (see the module docstring)."""
        self.dataset = load_dataset(config.data)
        self.task = encode_task(self.dataset, tokenizer, config.data.max_len)
        labels = self.dataset.labels
        self.train_idx, self.public_idx, self.test_idx = holdout_split(
            labels, config.data.n_test, config.data.n_public, numpy_stream(data_root, "holdout"))
        self.parts = partition(config.partition, labels[self.train_idx], context.n_clients,
                               numpy_stream(data_root, "partition"))
        self.client_idx = [self.train_idx[p] for p in self.parts]
        for warning in scarce_labels(labels, self.train_idx, self.test_idx, self.dataset.label_names, config.data):
            warnings.warn(warning, stacklevel=2)

    # --- device, precision, the frozen prefix -------------------------------------------------
    @property
    def device(self):
        """The torch device of this algorithm's models (``execution.device``, resolved)."""
        from fl.lm.device import resolve_device

        dev = self.__dict__.get("_device")
        if dev is None:
            dev = self.__dict__["_device"] = resolve_device(self.context.runtime.device)
        return dev

    def forward_ctx(self):
        """The context of every forward pass (:func:`fl.lm.device.autocast`)."""
        from fl.lm.device import autocast

        return autocast(self.device, self.context.runtime.dtype)

    def make_prefix(self, model, task):
        """A :class:`~fl.lm.prefix.FrozenPrefix` of ``model`` on ``task``, or None when the
        prefix cache is off or there is nothing below the lowest layer with adapters."""
        from fl.lm.prefix import FrozenPrefix, prefix_layer

        rt = self.context.runtime
        layer = prefix_layer(model)
        if not rt.prefix_cache or layer < 1:
            return None
        return FrozenPrefix(model, task, layer, max_bytes=rt.prefix_cache_mb << 20)

    def train_model(self, model, prefix, plan, lr: float, generator, weight_decay: float = 0.0) -> list[float]:
        """:func:`fl.lm.train.local_train` of ``model`` on the batches ``plan`` (index lists) of
        the task: from ``prefix``'s cached states when there is one, else the whole model."""
        from fl.lm.data import collate
        from fl.lm.train import local_train

        if prefix is not None:
            return local_train(model, iter(plan), len(plan), lr, generator, weight_decay,
                               loss_fn=prefix.answer_loss, forward_ctx=self.forward_ctx)
        return local_train(model, (collate(self.task, idx) for idx in plan), len(plan), lr, generator,
                           weight_decay, forward_ctx=self.forward_ctx)

    def eval_model(self, model, prefix, indices, batch_size: int) -> dict[str, Any]:
        """Rank-classification accuracy and answer loss of ``model`` on ``indices`` (from
        ``prefix``'s cached states when there is one), and the per-prompt results
        (:func:`fl.lm.train.rank_metrics`)."""
        from fl.lm.train import evaluate, rank_metrics

        with self.forward_ctx():
            if prefix is None:
                return evaluate(model, self.task, indices, batch_size)
            was = model.training
            model.eval()
            try:
                scores = prefix.score_labels(indices, batch_size)
            finally:
                model.train(was)
            return rank_metrics(scores, self.task, indices)

    def reported(self, m: Mapping[str, Any]) -> dict[str, float]:
        """What an evaluation reports of :meth:`eval_model`'s metrics: accuracy with its 95 %
        Wilson interval (``accuracy_lo``, ``accuracy_hi``), loss, and ``n_eval``. Its
        per-prompt results are kept for the host (:meth:`take_prompt_results`)."""
        self._prompt_results = m.get("prompts")
        return {k: m[k] for k in ("accuracy", "accuracy_lo", "accuracy_hi", "loss", "n_eval")}

    def take_prompt_results(self):
        """The per-prompt results of the evaluation :meth:`reported` last, once."""
        out, self._prompt_results = self.__dict__.get("_prompt_results"), None
        return out

    def prefix_report(self) -> dict[str, float]:
        """The prefix caches' memory (``prefix_cache_mib``: kept states + shared heads, all
        prefixes of this algorithm) and hit rate so far (``prefix_hit_rate``); {} without a
        prefix cache. Diagnostics of this process (a resumed run starts with an empty cache),
        so they go to the run summary, not to the per-round numerics."""
        from fl.lm.prefix import FrozenPrefix

        seen, prefixes = set(), []
        for v in vars(self).values():
            if isinstance(v, FrozenPrefix) and id(v) not in seen:
                seen.add(id(v))
                prefixes.append(v)
        if not prefixes:
            return {}
        nbytes = sum(p.nbytes + p.head_nbytes for p in prefixes)
        hits, misses = sum(p.hits for p in prefixes), sum(p.misses for p in prefixes)
        return {"prefix_cache_mib": nbytes / 2**20,
                "prefix_hit_rate": hits / (hits + misses) if hits + misses else float("nan")}

    def ce_flops(self, flop_profile, plan: Sequence[Sequence[int]]) -> float:
        """Matmul FLOPs of CE training steps on these batches (index lists) of the task, for
        the model ``flop_profile`` describes (the head runs on the answer positions: see
        :func:`fl.lm.train.answer_loss`)."""
        total = 0
        for idx in plan:
            B, T, A = batch_shape(self.task, idx)
            total += flop_profile.train_step(B, T, head_tokens=A + 1)
        return float(total)

    def n_samples(self, client: int) -> int:
        return int(len(self.client_idx[client]))

    def label_histogram(self) -> list[dict]:
        """Per-client label counts (rows: client, n_samples, one column per label)."""
        return label_histogram(self.parts, self.dataset.labels[self.train_idx], self.dataset.label_names)

    # --- checkpoints ------------------------------------------------------------------------
    # A fresh build from the same config and context recreates the models, the tokenizer and
    # the encoded data, so a checkpoint refers to them by name instead of storing them: the
    # frozen base weights are not written (a SmolLM2 checkpoint holds adapters, optimiser
    # states and counters, a few MB, not 540 MB of fp32 weights every round), the trainable
    # tensors' values are, and optimisers keep pointing at the live parameters.
    _REBUILT_ATTRS = ("tokenizer", "dataset", "task", "prefix")

    def _rebuilt(self) -> dict[tuple, Any]:
        """key -> object for every module, parameter and buffer a fresh build has, and the
        tokenizer and data (attributes, or modules inside attribute lists/tuples/dicts)."""
        import torch

        out: dict[tuple, Any] = {}

        def add_module(path: tuple, module) -> None:
            for name, sub in module.named_modules(remove_duplicate=False):
                out.setdefault(("module", *path, name), sub)
            for name, p in module.named_parameters(remove_duplicate=False):
                out.setdefault(("param", *path, name), p)
            for name, b in module.named_buffers(remove_duplicate=False):
                out.setdefault(("buffer", *path, name), b)

        for attr, value in self.__dict__.items():
            if attr in self._REBUILT_ATTRS:
                if value is not None:  # None is no object of its own: written as None
                    out[("attr", attr)] = value
            elif isinstance(value, torch.nn.Module):
                add_module((attr,), value)
            elif isinstance(value, (list, tuple, dict)):
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for k, v in items:
                    if isinstance(v, torch.nn.Module):
                        add_module((attr, str(k)), v)
        return out

    @staticmethod
    def _fingerprints(rebuilt: Mapping[tuple, Any]) -> dict[tuple, float]:
        """key -> sum of the values (float64) of every frozen parameter and buffer."""
        return {k: float(v.detach().double().sum()) for k, v in rebuilt.items()
                if k[0] in ("param", "buffer") and not v.requires_grad}

    def _check_fingerprints(self, fingerprints: Mapping[tuple, float], what: str, fix: str,
                            rebuilt: Mapping[tuple, Any] | None = None) -> None:
        """Raise if this build's frozen tensors differ from ``fingerprints`` (relative 1e-6)."""
        fresh = self._rebuilt() if rebuilt is None else rebuilt
        for key, fp in fingerprints.items():
            obj = fresh.get(key)
            if obj is None or abs(float(obj.detach().double().sum()) - fp) > 1e-6 * max(1.0, abs(fp)):
                raise ValueError(
                    f"{self.name}: {what} with different frozen weights "
                    f"({'/'.join(map(str, key[1:]))} differs); {fix}")

    def replica(self) -> LMReplica:
        """A fresh build from the same config and context that checks, once built, that its
        frozen weights are this algorithm's (see :class:`LMReplica`)."""
        return LMReplica(type(self), self.config, dataclasses.replace(self.context, run_dir=None),
                         self._fingerprints(self._rebuilt()))

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's attributes as a code-free :func:`fl.core.statefile.encode` document,
        with models, tokenizer and data referred to by name; the trainable tensors' values
        alongside.

        Each frozen tensor's fingerprint (sum of its values in float64) travels along, and
        :meth:`load_state_dict` refuses a build whose frozen tensors differ.
        """
        from fl.core.statefile import encode

        rebuilt = self._rebuilt()
        by_id = {id(obj): key for key, obj in rebuilt.items()}
        trainable = {_key_name(k): v.detach().clone() for k, v in rebuilt.items()
                     if k[0] == "param" and v.requires_grad}
        try:
            attrs = encode(dict(self.__dict__), lambda obj: by_id.get(id(obj)))
        except TypeError as exc:
            raise TypeError(f"{self.name}: its state cannot be checkpointed ({exc}); override "
                            "state_dict/load_state_dict, or list what a fresh build recreates "
                            "in _REBUILT_ATTRS.") from exc
        return {"format": "lm_algorithm/3", "attrs": attrs, "trainable": trainable,
                "fingerprints": [[list(k), v] for k, v in self._fingerprints(rebuilt).items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        import torch

        from fl.core.statefile import decode

        if state.get("format") != "lm_algorithm/3":
            raise ValueError(f"{self.name}: not a checkpoint of this algorithm "
                             f"(format {state.get('format')!r}, expected 'lm_algorithm/3').")
        fresh = self._rebuilt()
        fingerprints = {tuple(k): float(v) for k, v in state["fingerprints"]}
        self._check_fingerprints(fingerprints, "the checkpoint was written",
                                 "resume with the same model files and fl.options as the "
                                 "interrupted run.", fresh)

        def resolve(key):
            if key not in fresh:
                raise ValueError(f"{self.name}: the checkpoint refers to {key!r}, which this "
                                 "build does not have.")
            return fresh[key]

        attrs = decode(state["attrs"], resolve)
        by_name = {_key_name(k): v for k, v in fresh.items() if k[0] == "param"}
        with torch.no_grad():
            for name, value in state["trainable"].items():
                if name not in by_name:
                    raise ValueError(f"{self.name}: the checkpoint holds a trainable tensor "
                                     f"{name!r} that this build does not have.")
                by_name[name].copy_(value)
        self.__dict__.update(attrs)


def _key_name(key: tuple) -> str:
    """A rebuilt object's key as one string (a dict key a state file can hold)."""
    return "/".join(map(str, key))

"""Splitting data among clients (numpy only): partitioners, held-out splits, histograms.

A partitioner maps the labels of the training pool to one index array per client. Every
partitioner draws from an explicit ``numpy.random.Generator``, assigns every sample to
exactly one client, and never leaves a client empty (it raises a clear error when that is
impossible). Partitioners are registered in :data:`PARTITIONERS` by the name YAML uses
(``partition.kind``), each with a small frozen config; :data:`PartitionSpec` is their
discriminated union, built from the registry.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fl.core.registry import Registry

__all__ = [
    "IIDPartition",
    "DirichletPartition",
    "ShardsPartition",
    "ByCategoryPartition",
    "PartitionSpec",
    "PARTITIONERS",
    "partition",
    "partitioner_names",
    "iid",
    "dirichlet",
    "shards",
    "by_category",
    "holdout_split",
    "label_histogram",
    "scarce_label_indices",
    "largest_test_split",
]


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class IIDPartition(_Cfg):
    """Uniformly shuffled, near-equal client shares."""

    kind: Literal["iid"] = Field("iid", description="Uniformly shuffled, near-equal shares.")


class DirichletPartition(_Cfg):
    """Label skew: each label's samples are split among clients by proportions ~ Dir(alpha).

    Smaller alpha gives more skew. Draws are repeated (up to ``max_tries``) until every
    client holds at least ``min_samples`` samples.
    """

    kind: Literal["dirichlet"] = Field("dirichlet", description="Label skew ~ Dir(alpha).")
    alpha: float = Field(0.5, gt=0, description="Concentration; smaller gives more skew.")
    min_samples: int = Field(1, ge=1, description="Redraw until every client holds this many.")
    max_tries: int = Field(1000, ge=1, description="Most draws before giving up.")


class ShardsPartition(_Cfg):
    """Sort by label, cut into ``n_clients × n_shards_per_client`` contiguous shards, deal them
    out at random (McMahan et al. 2017's pathological non-IID split)."""

    kind: Literal["shards"] = Field("shards", description="Label-sorted shards dealt at random.")
    n_shards_per_client: int = Field(2, ge=1, description="Shards each client gets.")


class ByCategoryPartition(_Cfg):
    """One label per client where possible: label k goes to the clients c with
    c % n_labels == k (split evenly among them); with fewer clients than labels, client c
    holds every label k with k % n_clients == c."""

    kind: Literal["by_category"] = Field("by_category", description="One label per client.")


def _check(n_samples: int, n_clients: int, what: str) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1. Got {n_clients} instead.")
    if n_samples < n_clients:
        raise ValueError(
            f"{what}: cannot give each of {n_clients} clients a sample from {n_samples} samples; "
            f"use fewer clients or more data."
        )


def iid(labels: np.ndarray, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and cut into ``n_clients`` near-equal parts (sizes differ by at most one)."""
    _check(len(labels), n_clients, "iid partition")
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), n_clients)]


def dirichlet(
    labels: np.ndarray, n_clients: int, rng: np.random.Generator,
    alpha: float = 0.5, min_samples: int = 1, max_tries: int = 1000,
) -> list[np.ndarray]:
    """Per-label proportions ~ Dir(alpha · 1_{n_clients}) (Hsu et al. 2019)."""
    _check(len(labels), n_clients * min_samples, f"dirichlet partition (min_samples={min_samples})")
    labels = np.asarray(labels)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for k in classes:
            members = rng.permutation(np.flatnonzero(labels == k))
            p = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(members)).astype(np.int64)
            for c, piece in enumerate(np.split(members, cuts)):
                parts[c].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_samples:
            return out
    raise ValueError(
        f"dirichlet partition: no draw in {max_tries} tries gave every one of {n_clients} clients "
        f"at least {min_samples} samples (alpha={alpha}, {len(labels)} samples); raise alpha, "
        f"lower min_samples, or use fewer clients."
    )


def shards(labels: np.ndarray, n_clients: int, rng: np.random.Generator,
           n_shards_per_client: int = 2) -> list[np.ndarray]:
    """Label-sorted contiguous shards, ``n_shards_per_client`` random ones per client."""
    n_shards = n_clients * n_shards_per_client
    _check(len(labels), n_shards, f"shards partition ({n_shards} shards)")
    order = np.argsort(np.asarray(labels), kind="stable")
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(n_clients, n_shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in deal]


def by_category(labels: np.ndarray, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Clients specialise in labels (see :class:`ByCategoryPartition`)."""
    labels = np.asarray(labels)
    _check(len(labels), n_clients, "by_category partition")
    classes = np.unique(labels)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for j, k in enumerate(classes):
        owners = [c for c in range(n_clients) if c % len(classes) == j] or [j % n_clients]
        members = rng.permutation(np.flatnonzero(labels == k))
        if len(members) < len(owners):
            raise ValueError(
                f"by_category partition: label {k} has {len(members)} samples for {len(owners)} "
                f"clients; use fewer clients or another partitioner."
            )
        for c, piece in zip(owners, np.array_split(members, len(owners))):
            parts[c].append(piece)
    empty = [c for c, p in enumerate(parts) if not p]
    if empty:  # only possible if some label index is missing entirely
        raise ValueError(f"by_category partition: clients {empty} got no label.")
    return [np.sort(np.concatenate(p)) for p in parts]


#: Partitioners by the name YAML uses: config (with its ``kind`` tag) and function
#: ``(labels, n_clients, rng, **options) -> parts``.
PARTITIONERS: Registry[Callable[..., list[np.ndarray]]] = Registry("partitioner", "Partition")
for _cfg, _fn in ((IIDPartition, iid), (DirichletPartition, dirichlet), (ShardsPartition, shards),
                  (ByCategoryPartition, by_category)):
    PARTITIONERS.register(_cfg.model_fields["kind"].default, _cfg, _fn)

#: The ``partition`` option of the learning algorithms: ``{kind: dirichlet, alpha: 0.5}``
#: (or just ``dirichlet``).
PartitionSpec = PARTITIONERS.union(__name__)


def partitioner_names() -> list[str]:
    return PARTITIONERS.names()


def partition(spec: BaseModel, labels: np.ndarray, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the partitioner ``spec`` names; returns one sorted index array per client."""
    options = spec.model_dump(exclude={"kind"})
    return PARTITIONERS.get(spec.kind)(np.asarray(labels), n_clients, rng, **options)


AUTO_TEST_MAX = 1000  # n_test: auto takes up to this many prompts (a 95 % interval of ±3 points)


def auto_test_size(labels: np.ndarray, n_public: int = 0) -> int:
    """About how many prompts ``n_test: auto`` takes (an upper bound: the exact number
    depends on which examples the public split draws first; :func:`holdout_split` says):
    up to :data:`AUTO_TEST_MAX`, at most half of each label's examples."""
    counts = np.bincount(np.asarray(labels))
    room = max(0, len(labels) - n_public - 1)
    return int(min(AUTO_TEST_MAX, int((counts // 2).sum()), room))


def holdout_split(
    labels: np.ndarray, n_test: int | str, n_public: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into (train, public, test), each sorted.

    test: ``n_test`` samples balanced over labels as far as each label allows (round robin
    over labels, a random member each time); public: ``n_public`` uniformly random samples
    of the rest; train: everything else. ``n_test="auto"``: the public split is drawn first,
    then up to :data:`AUTO_TEST_MAX` test samples from the rest, at most half of each
    label's remaining examples (training keeps at least as many of every label as the test
    takes).
    """
    labels = np.asarray(labels)
    if n_test == "auto":
        # the public split first (uniform), then the test from the rest: at most half of each
        # label's remaining examples, so training keeps at least as many as the test takes
        if n_public >= len(labels):
            raise ValueError(f"n_public ({n_public}) must leave training data out of {len(labels)} samples.")
        public = np.sort(rng.choice(len(labels), size=n_public, replace=False)) if n_public \
            else np.array([], dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(labels)), public)
        uniq = np.unique(labels)
        pools = [list(rng.permutation(rest[labels[rest] == k])) for k in uniq]
        limit = [len(p) // 2 for p in pools]
        n_test = min(AUTO_TEST_MAX, sum(limit))
        if n_test < 1:
            raise ValueError(f"n_test: auto finds no test examples in {len(labels)} samples (every label "
                             "needs two outside the public split). Fix: give more data or a number for "
                             "data.n_test.")
        test = _round_robin(pools, limit, n_test)
        train = np.setdiff1d(rest, test)
        return train, public, np.sort(np.array(test, dtype=np.int64))
    if n_test + n_public >= len(labels):
        raise ValueError(
            f"n_test ({n_test}) + n_public ({n_public}) must leave training data out of {len(labels)} samples."
        )
    pools = [list(rng.permutation(np.flatnonzero(labels == k))) for k in np.unique(labels)]
    test = _round_robin(pools, [len(p) for p in pools], n_test)
    rest = np.setdiff1d(np.arange(len(labels)), test)
    public = np.sort(rng.choice(rest, size=n_public, replace=False)) if n_public else np.array([], dtype=np.int64)
    train = np.setdiff1d(rest, public)
    return train, public, np.sort(np.array(test, dtype=np.int64))


def _round_robin(pools: list[list[int]], limit: list[int], n: int) -> list[int]:
    """``n`` members taken round robin over ``pools`` (the last of each first), at most
    ``limit[j]`` from pool j (the limits must allow ``n``)."""
    taken = [0] * len(pools)
    out: list[int] = []
    while len(out) < n:
        for j, pool in enumerate(pools):
            if pool and taken[j] < limit[j] and len(out) < n:
                out.append(int(pool.pop()))
                taken[j] += 1
    return out


def scarce_label_indices(labels: np.ndarray, train_idx, test_idx) -> list[int]:
    """The label indices that keep fewer training examples (``train_idx``) than the test
    split (``test_idx``) takes from them: accuracy on such a label measures the data filter,
    not the method (:func:`fl.lm.algorithm.scarce_labels` warns about them)."""
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 0
    train = np.bincount(labels[np.asarray(train_idx, dtype=np.int64)], minlength=n)
    test = np.bincount(labels[np.asarray(test_idx, dtype=np.int64)], minlength=n)
    return [k for k in range(n) if train[k] < test[k]]


def largest_test_split(labels: np.ndarray, n_public: int, rng_for, cap: int | None = None) -> int:
    """The largest ``n_test`` (at most ``cap``) whose split by :func:`holdout_split` leaves
    no scarce label (:func:`scarce_label_indices`): every label keeps at least as many
    training examples as the balanced test split takes from it. 0 when none does.

    labels: (N,) int label index per example. n_public: the public split's size.
    rng_for: a function returning a fresh ``Generator`` of the split's stream (the same one
        the run draws from, e.g. ``lambda: numpy_stream(data_root, "holdout")``), so the
        answer holds for that seed's public split exactly.
    """
    labels = np.asarray(labels)
    pools = np.bincount(labels) if labels.size else np.zeros(0, dtype=np.int64)
    pools = pools[pools > 0]
    # an upper bound from the test counts alone (deterministic: holdout_split's round robin
    # over the labels in index order), ignoring what the public split takes: take test
    # examples in that order until one would leave its label fewer for training than for test
    limit = len(labels) - n_public - 1 if cap is None else min(cap, len(labels) - n_public - 1)
    taken = np.zeros_like(pools)
    bound = 0
    while 0 <= bound < limit:
        for k in range(len(pools)):
            if 2 * (taken[k] + 1) > pools[k] or bound >= limit:
                limit = -1  # stop: the next example would make label k scarce (or n is at cap)
                break
            taken[k] += 1
            bound += 1
    for n in range(bound, 0, -1):
        train, _, test = holdout_split(labels, n, n_public, rng_for())
        if not scarce_label_indices(labels, train, test):
            return n
    return 0


def label_histogram(parts: Sequence[np.ndarray], labels: np.ndarray, label_names: Sequence[str]) -> list[dict]:
    """Per-client label counts: rows ``{"client": c, "n_samples": n, <label>: count, ...}``."""
    labels = np.asarray(labels)
    rows = []
    for c, idx in enumerate(parts):
        counts = np.bincount(labels[idx], minlength=len(label_names))
        rows.append({"client": c, "n_samples": int(len(idx)), **{n: int(k) for n, k in zip(label_names, counts)}})
    return rows

import numpy as np
import pytest

from fl.lm.partition import (
    ByCategoryPartition, DirichletPartition, IIDPartition, ShardsPartition, holdout_split, label_histogram,
    largest_test_split, partition, partitioner_names, scarce_label_indices,
)

LABELS = np.repeat(np.arange(6), [300, 250, 200, 60, 150, 40])  # imbalanced, like the fortunes

SPECS = [IIDPartition(), DirichletPartition(alpha=0.3), DirichletPartition(alpha=100.0),
         ShardsPartition(n_shards_per_client=2), ByCategoryPartition()]


def test_every_partitioner_is_tested():
    assert sorted({s.kind for s in SPECS}) == partitioner_names()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("n_clients", [1, 4, 6, 13])
def test_each_sample_exactly_once_and_no_empty_client(spec, n_clients):
    parts = partition(spec, LABELS, n_clients, np.random.default_rng(0))
    assert len(parts) == n_clients
    flat = np.concatenate(parts)
    assert np.array_equal(np.sort(flat), np.arange(len(LABELS)))  # every sample, exactly once
    assert min(len(p) for p in parts) >= 1


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_same_generator_seed_same_partition(spec):
    n = 12  # by_category: two clients per label, so the split within a label is random
    a = partition(spec, LABELS, n, np.random.default_rng(7))
    b = partition(spec, LABELS, n, np.random.default_rng(7))
    c = partition(spec, LABELS, n, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def _skew(parts):
    """Mean total-variation distance between client label distributions and the global one."""
    glob = np.bincount(LABELS, minlength=6) / len(LABELS)
    tv = [0.5 * np.abs(np.bincount(LABELS[p], minlength=6) / len(p) - glob).sum() for p in parts]
    return float(np.mean(tv))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skews = []
    for alpha in [100.0, 1.0, 0.1]:
        s = [_skew(partition(DirichletPartition(alpha=alpha), LABELS, 8, np.random.default_rng(seed)))
             for seed in range(5)]
        skews.append(np.mean(s))
    assert skews[0] < skews[1] < skews[2], skews
    assert skews[0] < 0.1 and skews[2] > 0.4


def test_by_category_gives_one_label_per_client_when_there_are_enough_clients():
    parts = partition(ByCategoryPartition(), LABELS, 12, np.random.default_rng(0))
    assert all(len(np.unique(LABELS[p])) == 1 for p in parts)


def test_shards_limit_labels_per_client():
    parts = partition(ShardsPartition(n_shards_per_client=2), LABELS, 10, np.random.default_rng(0))
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 4  # two contiguous label-sorted shards


@pytest.mark.parametrize("spec, n_clients, match", [
    (IIDPartition(), 2000, "cannot give each of 2000 clients"),
    (ShardsPartition(n_shards_per_client=3), 400, r"1200 shards"),
    (DirichletPartition(alpha=0.01, min_samples=100, max_tries=5), 9, "no draw in 5 tries"),
    (ByCategoryPartition(), 300, "label 5 has 40 samples for 50 clients"),
])
def test_impossible_partitions_say_why(spec, n_clients, match):
    with pytest.raises(ValueError, match=match):
        partition(spec, LABELS, n_clients, np.random.default_rng(0))


def test_partition_config_errors_name_the_key():
    with pytest.raises(ValueError, match="alpha"):
        DirichletPartition(alpha=0)


def test_holdout_split_is_disjoint_and_balanced():
    train, public, test = holdout_split(LABELS, n_test=60, n_public=100, rng=np.random.default_rng(0))
    allidx = np.concatenate([train, public, test])
    assert np.array_equal(np.sort(allidx), np.arange(len(LABELS)))
    assert len(test) == 60 and len(public) == 100
    assert np.bincount(LABELS[test], minlength=6).tolist() == [10] * 6
    with pytest.raises(ValueError, match="must leave training data"):
        holdout_split(LABELS, n_test=900, n_public=100, rng=np.random.default_rng(0))


def test_holdout_balances_as_far_as_small_labels_allow():
    labels = np.repeat(np.arange(3), [100, 100, 2])
    _, _, test = holdout_split(labels, n_test=30, n_public=0, rng=np.random.default_rng(0))
    assert sorted(np.bincount(labels[test]).tolist()) == [2, 14, 14]


def test_label_histogram_table():
    parts = partition(DirichletPartition(alpha=0.5), LABELS, 4, np.random.default_rng(1))
    names = ["a", "b", "c", "d", "e", "f"]
    rows = label_histogram(parts, LABELS, names)
    assert [r["client"] for r in rows] == [0, 1, 2, 3]
    assert all(r["n_samples"] == sum(r[n] for n in names) for r in rows)
    assert [sum(r[n] for r in rows) for n in names] == np.bincount(LABELS).tolist()


def test_auto_test_split_takes_up_to_1000_and_at_most_half_of_each_label():
    from fl.lm.partition import AUTO_TEST_MAX, auto_test_size

    rng = np.random.default_rng(0)
    # the embedded fortunes' shape: one huge label, two scarce ones
    labels = np.repeat(np.arange(6), [9000, 750, 520, 450, 150, 44])
    train, public, test = holdout_split(labels, "auto", 128, rng)
    counts = np.bincount(labels[test], minlength=6)
    assert len(test) == AUTO_TEST_MAX == auto_test_size(labels, 128)
    train_counts = np.bincount(labels[train], minlength=6)
    assert (train_counts >= counts).all()  # training keeps at least as many of every label
    assert 20 <= counts[5] <= 22 and 72 <= counts[4] <= 75  # about half of the scarce labels
    assert counts[:3].max() - counts[:3].min() <= 1 and counts[3] <= 225  # the rest balanced up to its half
    assert len(np.intersect1d(test, public)) == 0 and len(train) + len(public) + len(test) == len(labels)
    small = np.repeat(np.arange(3), [10, 6, 3])  # less data: half of each label
    _, _, test = holdout_split(small, "auto", 0, rng)
    assert list(np.bincount(small[test])) == [5, 3, 1]
    with pytest.raises(ValueError, match="n_test: auto finds no test examples"):
        holdout_split(np.arange(3), "auto", 0, rng)


def _scarce(labels, n_test, n_public, seed):
    train, _, test = holdout_split(labels, n_test, n_public, np.random.default_rng(seed))
    return scarce_label_indices(labels, train, test)


@pytest.mark.parametrize("n_public, seed", [(0, 0), (100, 0), (100, 5), (300, 2)])
def test_largest_test_split_is_the_largest_without_a_scarce_label(n_public, seed):
    """No scarce label at n, one at n + 1 (that split, drawn with the same stream); the
    bound is set by the smallest label (40 examples: at most 20 in the test), reached after
    21 of each label before it in the round robin: 5 * 21 + 20 = 125."""
    n = largest_test_split(LABELS, n_public, lambda: np.random.default_rng(seed))
    assert _scarce(LABELS, n, n_public, seed) == []
    assert _scarce(LABELS, n + 1, n_public, seed) != []
    assert n <= 125 and (n_public > 0 or n == 125)


def test_largest_test_split_by_hand_and_its_cap():
    # labels 0, 1, 2 with 10, 6, 4 examples, no public split: round robin takes 0,1,2,0,1,2,0,1
    # (label 1: 3 tested, 3 left; label 2: 2 and 2); a 3rd from label 2 would leave it 1 < 3
    labels = np.repeat(np.arange(3), [10, 6, 4])
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    assert largest_test_split(labels, 0, rng) == 8
    train, _, test = holdout_split(labels, 8, 0, rng())
    assert np.bincount(labels[test]).tolist() == [3, 3, 2]
    assert scarce_label_indices(labels, train, test) == []
    assert largest_test_split(labels, 0, rng, cap=4) == 4
    assert largest_test_split(np.repeat(np.arange(2), [1, 9]), 0, rng) == 0  # label 0 cannot be tested


def test_scarce_label_indices_counts_train_against_test():
    labels = np.array([0, 0, 0, 1, 1, 2])
    assert scarce_label_indices(labels, [0, 1, 3], [2, 4, 5]) == [2]  # label 2: 0 train, 1 test
    assert scarce_label_indices(labels, [0, 1, 3, 5], [2, 4]) == []

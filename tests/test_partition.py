"""Partitioning: disjoint class groups, re-indexed labels, the iid sibling control."""

import numpy as np
import pytest

from dilt.data import load_dataset
from dilt.data.partition import class_groups, make_partitions


def test_contiguous_is_the_proposals_split():
    assert class_groups(10, 2, "contiguous", 0) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]


@pytest.mark.parametrize("n, scheme", [(2, "contiguous"), (3, "random"), (4, "random")])
def test_class_partitions_are_disjoint_and_relabelled(n, scheme):
    d = load_dataset("digits", seed=0)
    parts = make_partitions(d.train_targets, d.val_targets, 10, n, scheme, seed=1)
    assert len(parts) == n
    assert sorted(c for p in parts for c in p.classes) == list(range(10))
    seen = np.concatenate([p.train_idx for p in parts])
    assert len(seen) == len(set(seen)) == len(d.train_targets)   # every sample exactly once
    for p in parts:
        assert set(d.train_targets[p.train_idx]) == set(p.classes)
        local = p.label_map[d.train_targets[p.train_idx]]
        assert local.min() == 0 and local.max() == p.num_classes - 1
        assert set(d.val_targets[p.val_idx]) <= set(p.classes)


def test_random_scheme_depends_on_seed():
    assert class_groups(10, 3, "random", 0) != class_groups(10, 3, "random", 1)
    assert class_groups(10, 3, "random", 5) == class_groups(10, 3, "random", 5)


def test_iid_parts_hold_every_class_and_split_samples():
    d = load_dataset("digits", seed=0)
    parts = make_partitions(d.train_targets, d.val_targets, 10, 2, "iid", seed=0)
    a, b = parts
    assert not set(a.train_idx) & set(b.train_idx)
    assert len(a.train_idx) + len(b.train_idx) == len(d.train_targets)
    for p in parts:
        assert set(d.train_targets[p.train_idx]) == set(range(10))
        assert not p.class_disjoint
    assert abs(len(a.train_idx) - len(b.train_idx)) <= 10


def test_iid_parts_refuse_a_class_with_fewer_samples_than_parts():
    """A class with one validation image cannot be in both iid halves: refused, not dropped."""
    train = np.repeat(np.arange(4), 10)
    val = np.array([0, 0, 1, 1, 2, 2, 3])          # class 3: one validation image
    with pytest.raises(ValueError, match=r"iid2: class 3 has 1 validation sample\(s\)"):
        make_partitions(train, val, 4, 2, "iid", seed=0)
    with pytest.raises(ValueError, match=r"class 2 has 0 validation"):   # absent altogether
        make_partitions(train, np.array([0, 0, 1, 1, 3, 3]), 4, 2, "iid", seed=0)
    parts = make_partitions(train, np.append(val, 3), 4, 2, "iid", seed=0)
    assert all(set(np.append(val, 3)[p.val_idx]) == {0, 1, 2, 3} for p in parts)


def test_splits_are_disjoint_and_test_is_fixed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert np.array_equal(a.test.x, b.test.x)                 # every seed tests on the same images
    assert not np.array_equal(a.val.x, b.val.x)               # the validation split follows the seed
    tr = {tuple(x.flatten().tolist()) for x in a.train.x}
    te = {tuple(x.flatten().tolist()) for x in a.test.x}
    va = {tuple(x.flatten().tolist()) for x in a.val.x}
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert not (te & va) and len(te & tr) <= 5                # digits has a few duplicate images


# --- semantic (superclass) partitions ----------------------------------------------------------

# CIFAR-100's official fine class -> superclass map (the `coarse_labels` of its pickles)
CIFAR100_COARSE = [4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10,
                   7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13,
                   14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1,
                   9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
                   18, 1, 2, 15, 6, 0, 17, 8, 14, 13]


@pytest.mark.parametrize("n", [2, 3, 4, 20])
def test_semantic_parts_are_unions_of_whole_superclasses(n):
    sup = np.asarray(CIFAR100_COARSE)
    assert np.bincount(sup).tolist() == [5] * 20
    groups = class_groups(100, n, "semantic", seed=0, superclasses=sup)
    assert len(groups) == n
    flat = [c for g in groups for c in g]
    assert sorted(flat) == list(range(100)) and len(flat) == 100        # disjoint, covers all
    supers = [set(sup[list(g)].tolist()) for g in groups]
    for g, s in zip(groups, supers):
        # a union of whole superclasses: every class of each of its superclasses is in it
        assert set(g) == set(np.flatnonzero(np.isin(sup, list(s))).tolist())
    # superclasses in id order, cut into near-equal runs (n=2: 0-9 vs 10-19)
    assert [sorted(s) for s in supers] == [g.tolist() for g in np.array_split(np.arange(20), n)]
    # fixed: the seed plays no part
    assert class_groups(100, n, "semantic", seed=7, superclasses=sup) == groups


def test_semantic_partitions_split_samples_by_superclass():
    sup = np.asarray(CIFAR100_COARSE)
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 100, 3000), rng.integers(0, 100, 500)
    parts = make_partitions(train, val, 100, 2, "semantic", seed=0, superclasses=sup)
    assert set(sup[train[parts[0].train_idx]]) == set(range(10))
    assert set(sup[train[parts[1].train_idx]]) == set(range(10, 20))
    assert sorted(np.concatenate([p.train_idx for p in parts]).tolist()) == list(range(3000))
    assert sorted(np.concatenate([p.val_idx for p in parts]).tolist()) == list(range(500))
    for p in parts:
        assert p.class_disjoint
        local = p.label_map[train[p.train_idx]]
        assert local.min() == 0 and local.max() == p.num_classes - 1 == 49


def test_semantic_needs_superclasses():
    from dilt.data.partition import scheme_problem

    d = load_dataset("digits", seed=0)
    with pytest.raises(ValueError, match="semantic partition scheme needs superclass labels") as e:
        make_partitions(d.train_targets, d.val_targets, 10, 2, "semantic", seed=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot split 20 superclasses into n=21"):
        class_groups(100, 21, "semantic", 0, np.asarray(CIFAR100_COARSE))
    # what the config can check without the files: one line naming the data set
    assert scheme_problem("semantic", 2, "cifar100") is None
    assert "imagenet has none" in scheme_problem("semantic", 2, "imagenet")
    assert "21 semantic partitions" in scheme_problem("semantic", 21, "cifar100")
    assert scheme_problem("contiguous", 2, "imagenet") is None

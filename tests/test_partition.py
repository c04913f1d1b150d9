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


def test_splits_are_disjoint_and_test_is_fixed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert np.array_equal(a.test.x, b.test.x)                 # every seed tests on the same images
    assert not np.array_equal(a.val.x, b.val.x)               # the validation split follows the seed
    tr = {tuple(x.flatten().tolist()) for x in a.train.x}
    te = {tuple(x.flatten().tolist()) for x in a.test.x}
    va = {tuple(x.flatten().tolist()) for x in a.val.x}
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert not (te & va) and len(te & tr) <= 5                # digits has a few duplicate images

"""Spectral clustering of layers: eigengap choice, labels, depth numbering, ARI."""

import numpy as np

from dilt.analysis.clustering import choose_k, cluster_joint, local_scaling_affinity, renumber_by_depth


def planted_joint(sizes=(3, 4, 3), within=0.01, between=1.0, seed=0):
    """A joint 2L x 2L 'GW' matrix of two networks whose layers form len(sizes) consecutive
    blocks; a layer is close to every layer of its block in either network."""
    rng = np.random.default_rng(seed)
    block = np.repeat(np.arange(len(sizes)), sizes)
    lab = np.concatenate([block, block])
    gw = np.where(lab[:, None] == lab[None, :], within, between)
    gw = gw * (1 + 0.1 * rng.random(gw.shape))
    gw = (gw + gw.T) / 2
    np.fill_diagonal(gw, 0)
    return gw, block


def test_eigengap_picks_three_planted_blocks_and_labels_match():
    gw, block = planted_joint()
    L = len(block)
    out = cluster_joint(gw, L, "auto", k_max=10)
    assert out["k"] == 3 and out["k_by_eigengap"] == 3
    assert np.argmax(out["eigengaps"]) + 2 == 3
    assert np.array_equal(out["labels_net1"], block)  # renumbered by depth: 0, 1, 2 in order
    assert np.array_equal(out["labels_net2"], block)
    assert out["ari"] == 1.0


def test_fixed_k_is_used_and_labels_are_renumbered_by_depth():
    gw, block = planted_joint(sizes=(4, 4))
    out = cluster_joint(gw, len(block), 2)
    assert out["k"] == 2 and not out["k_auto"]
    assert list(out["labels_net1"]) == [0] * 4 + [1] * 4


def test_renumber_by_depth():
    labels = np.array([5, 5, 2, 2, 9])
    assert list(renumber_by_depth(labels, np.arange(5))) == [0, 0, 1, 1, 2]


def test_local_scaling_affinity_is_symmetric_with_zero_diagonal():
    rng = np.random.default_rng(1)
    d = rng.random((12, 12))
    d = d + d.T
    np.fill_diagonal(d, 0)
    A = local_scaling_affinity(d, k_nn=3)
    assert np.allclose(A, A.T) and np.all(np.diag(A) == 0)
    assert np.all((A > 0) & (A <= 1) | np.eye(12, dtype=bool))
    # an asymmetric input is symmetrised explicitly
    A2 = local_scaling_affinity(d + np.triu(rng.random((12, 12)), 1) * 0.1, k_nn=3)
    assert np.allclose(A2, A2.T)


def test_choose_k_on_two_separated_groups():
    A = np.kron(np.eye(2), np.ones((5, 5)))
    np.fill_diagonal(A, 0)
    A = A + 1e-3  # weakly connected
    np.fill_diagonal(A, 0)
    k, gaps, lam = choose_k(A, k_max=6)
    assert k == 2 and lam[0] < 1e-10

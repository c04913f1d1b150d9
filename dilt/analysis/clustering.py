"""Spectral clustering of layers from a (joint) GW matrix.

The GW values are turned into distances with a square root (GW with square loss scales like a
squared distance), into affinities by local scaling (Zelnik-Manor and Perona, 2004: each node's
bandwidth is its distance to its k-th nearest neighbour; k = 5 by default, below the 7 of the
paper because the joint graph has only 2L nodes and blocks of a few layers), and clustered with scikit-learn's
``SpectralClustering(affinity="precomputed", assign_labels="cluster_qr")``. The number of
clusters is the largest eigengap of the normalised Laplacian when ``k="auto"``. Clusters are
renumbered by depth: cluster 0 holds the shallowest layers on average.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score


def local_scaling_affinity(dist: np.ndarray, k_nn: int = 5) -> np.ndarray:
    """A_ij = exp(-d_ij^2 / (sigma_i sigma_j)) with sigma_i the distance from i to its
    ``k_nn``-th nearest neighbour (capped at n-1); symmetric, zero diagonal."""
    d = np.asarray(dist, dtype=np.float64)
    d = (d + d.T) / 2
    n = len(d)
    k = max(1, min(k_nn, n - 1))
    sigma = np.sort(d, axis=1)[:, k]  # column 0 is the node itself
    positive = d[d > 0]
    floor = positive.min() if positive.size else 1.0
    sigma = np.maximum(sigma, floor * 1e-3)  # duplicated points would give sigma = 0
    A = np.exp(-d**2 / np.outer(sigma, sigma))
    np.fill_diagonal(A, 0.0)
    return (A + A.T) / 2


def eigengaps(affinity: np.ndarray, k_max: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) of the symmetric normalised Laplacian and the gaps
    lambda_{k+1} - lambda_k for k = 2..k_max (entry 0 is k = 2)."""
    lap = laplacian(np.asarray(affinity, dtype=np.float64), normed=True)
    lam = np.linalg.eigvalsh((lap + lap.T) / 2)
    k_max = min(k_max, len(lam) - 1)
    gaps = np.array([lam[k] - lam[k - 1] for k in range(2, k_max + 1)])
    return lam, gaps


def choose_k(affinity: np.ndarray, k_max: int = 10) -> tuple[int, np.ndarray, np.ndarray]:
    """k in 2..k_max with the largest eigengap; returns (k, gaps, eigenvalues)."""
    lam, gaps = eigengaps(affinity, k_max)
    return int(np.argmax(gaps)) + 2, gaps, lam


def renumber_by_depth(labels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 in increasing order of their members' mean depth."""
    labels = np.asarray(labels)
    uniq = np.unique(labels)
    order = sorted(uniq, key=lambda c: (np.mean(depth[labels == c]), c))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[c] for c in labels], dtype=int)


def cluster_layers(gw: np.ndarray, depth, k="auto", *, k_max: int = 10, k_nn: int = 5,
                   seed: int = 0) -> dict:
    """Cluster the nodes of a GW matrix (e.g. the 2L x 2L joint matrix).

    ``depth``: each node's layer index (used to number the clusters). Returns the labels, k,
    whether k was chosen automatically, the eigengaps (k = 2..k_max) and eigenvalues.
    """
    gw = np.asarray(gw, dtype=np.float64)
    gw = (gw + gw.T) / 2  # symmetrise explicitly (sklearn would do it silently)
    dist = np.sqrt(np.clip(gw, 0, None))
    A = local_scaling_affinity(dist, k_nn)
    k_chosen, gaps, lam = choose_k(A, k_max)
    k_used = k_chosen if k == "auto" else int(k)
    sc = SpectralClustering(n_clusters=k_used, affinity="precomputed",
                            assign_labels="cluster_qr", random_state=seed)
    labels = renumber_by_depth(sc.fit_predict(A), np.asarray(depth, dtype=float))
    return {"labels": labels, "k": k_used, "k_auto": k == "auto", "k_by_eigengap": k_chosen,
            "eigengaps": gaps, "eigenvalues": lam, "affinity": A}


def cluster_joint(joint: np.ndarray, n1: int, k="auto", **kw) -> dict:
    """Cluster the joint matrix of two networks (n1 layers first, then network 2's) and compare
    the two networks' layer labels with the adjusted Rand index (same architecture needed)."""
    n2 = len(joint) - n1
    depth = np.concatenate([np.arange(n1), np.arange(n2)])
    out = cluster_layers(joint, depth, k, **kw)
    lab1, lab2 = out["labels"][:n1], out["labels"][n1:]
    out["labels_net1"], out["labels_net2"] = lab1, lab2
    out["ari"] = float(adjusted_rand_score(lab1, lab2)) if n1 == n2 else float("nan")
    return out

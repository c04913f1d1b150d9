"""Functional-disentanglement analysis (Experiment 2): GW between layers of two networks,
spectral clustering of the layers, and per-block mask overlap statistics.

Entry point: :func:`run_analysis`. Its result is plain JSON data (lists, numbers, strings, None
for missing values); the figures and tables in :mod:`dilt.report` read it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from dilt.masks import Mask

DEFAULTS = {"reduce": "gap", "proj_dim": 256, "normalise": "mean", "k": "auto", "k_max": 10,
            "k_nn": 5, "n_jobs": 1, "permutations": 10000, "seed": 0, "solver": "exact",
            "batch_size": 256, "label": ""}

RESULT_KEYS = ("layer_names", "n_probe", "settings", "joint_matrix", "G", "start_won",
               "start_counts", "gw_by_start", "labels_joint", "labels", "k", "k_by_eigengap",
               "eigengaps", "eigenvalues", "ari", "layers", "blocks", "correlations", "cka",
               "excluded_layers", "notes", "seconds")


def run_analysis(models: Sequence[torch.nn.Module], masks: Sequence[Mask], probe_x: torch.Tensor,
                 layer_names: Sequence[str], cfg: dict | None = None,
                 feature_cache: Sequence[str | None] | None = None,
                 gw_checkpoint: str | None = None) -> dict:
    """GW matrix, layer clusters and mask-overlap statistics for two networks.

    ``models[0]`` / ``models[1]`` (F_1, F_2) and ``masks[0]`` / ``masks[1]`` (their IMP masks over
    the same parameters) are compared; with more than two models only the first two are used.
    ``feature_cache``: one .npz path per model (or None) where its probe features are kept; the
    caller makes the name unique to the weights, probe and reduction. ``gw_checkpoint``: where
    the GW pairs solved so far are kept (see :func:`dilt.analysis.gw.joint_matrix`).
    ``probe_x``: the shared held-out probe inputs. ``layer_names``: the modules to compare (the same
    in both networks). ``cfg`` keys (all optional): see ``DEFAULTS``.

    Returns a JSON-serialisable dict with the keys ``RESULT_KEYS``.
    """
    from dilt.analysis.blocks import block_table, layer_table
    from dilt.analysis.clustering import cluster_joint
    from dilt.analysis.features import extract_features
    from dilt.analysis.gw import distance_matrix, joint_matrix
    from dilt.analysis.stats import linear_cka, partial_spearman_perm, spearman_perm

    cfg = {**DEFAULTS, **(cfg or {})}
    if len(models) < 2 or len(masks) < 2:
        raise ValueError("run_analysis needs two models and two masks")
    layer_names = list(layer_names)
    L = len(layer_names)
    notes = []
    if len(models) > 2:
        notes.append(f"{len(models)} models given: only models[0] and models[1] are compared")
    t0 = time.perf_counter()

    caches = list(feature_cache or [None, None])
    feats = [extract_features(m, probe_x, layer_names, cfg["reduce"], cfg["batch_size"],
                              proj_dim=cfg["proj_dim"], seed=cfg["seed"], cache=c)
             for m, c in zip(models[:2], caches)]
    dists = [[distance_matrix(f[name], cfg["normalise"]) for name in layer_names] for f in feats]
    t1 = time.perf_counter()
    J = joint_matrix(dists[0], dists[1], n_jobs=cfg["n_jobs"], solver=cfg["solver"],
                     checkpoint=gw_checkpoint)
    t2 = time.perf_counter()
    G = J.values[:L, L:]

    cl = cluster_joint(J.values, L, cfg["k"], k_max=cfg["k_max"], k_nn=cfg["k_nn"],
                       seed=cfg["seed"])
    lab1, lab2 = cl["labels_net1"], cl["labels_net2"]
    cka = [linear_cka(feats[0][n], feats[1][n]) for n in layer_names]
    m1, m2 = masks[0], masks[1]
    layers = layer_table(layer_names, G, m1, m2, lab1, lab2, cka)
    blocks = block_table(layer_names, G, lab1, m1, m2, lab2)

    excluded = [r["layer"] for r in layers if r["parameter"] is None]
    if excluded:
        notes.append("layers without a mask entry (Jaccard NaN, left out of the correlations): "
                     + ", ".join(excluded))
    gii = [r["gw_ii"] for r in layers]
    jac = [r["jaccard"] for r in layers]
    depth = [r["index"] for r in layers]
    n_perm, seed = cfg["permutations"], cfg["seed"]
    correlations = {
        "layer_gw_vs_jaccard": spearman_perm(gii, jac, n_perm, seed),
        "layer_gw_vs_jaccard_partial_depth": partial_spearman_perm(gii, jac, depth, n_perm, seed),
        "block_gw_vs_jaccard": spearman_perm([b["gw_ii_mean"] for b in blocks],
                                             [b["jaccard"] for b in blocks], n_perm, seed),
        "layer_cka_vs_gw": spearman_perm(cka, gii, n_perm, seed),
    }
    starts, counts = np.unique(J.start[np.triu_indices(2 * L, 1)], return_counts=True)
    out = {
        "layer_names": layer_names,
        "n_probe": int(len(probe_x)),
        "settings": {**cfg, "gw": "exact square-loss GW (POT conditional gradient), uniform "
                                   "weights, lower of the identity and uniform starts",
                     "affinity": "local scaling on sqrt(GW)",
                     "blocks": "clusters of network 1's layers"},
        "joint_matrix": J.values,
        "G": G,
        "start_won": J.start,
        "start_counts": dict(zip(starts.tolist(), counts.tolist())),
        "gw_by_start": J.start_values,
        "labels_joint": cl["labels"],
        "labels": {"net1": lab1, "net2": lab2},
        "k": cl["k"],
        "k_by_eigengap": cl["k_by_eigengap"],
        "eigengaps": {"k": list(range(2, 2 + len(cl["eigengaps"]))), "gap": cl["eigengaps"]},
        "eigenvalues": cl["eigenvalues"],
        "ari": cl["ari"],
        "layers": layers,
        "blocks": blocks,
        "correlations": correlations,
        "cka": cka,
        "excluded_layers": excluded,
        "notes": notes,
        "seconds": {"features": t1 - t0, "gw": t2 - t1, "total": time.perf_counter() - t0},
    }
    return to_json(out)


def to_json(obj):
    """Numpy arrays and scalars to lists and numbers, NaN and inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        return to_json(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

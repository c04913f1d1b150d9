"""Per-layer and per-block (cluster) tables linking GW distances to mask overlap.

Layer ``L`` owns the parameter ``L.weight`` when both masks contain it; layers without a mask
entry (the dense first layer and the head by default) get a NaN Jaccard.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dilt.masks import Mask, chance_jaccard, jaccard


def owned_parameter(layer: str, m1: Mask, m2: Mask) -> str | None:
    name = f"{layer}.weight"
    return name if name in m1 and name in m2 else None


def _overlap(m1: Mask, m2: Mask, names: list[str]) -> dict:
    if not names:
        nan = float("nan")
        return {"params": 0, "jaccard": nan, "chance_jaccard": nan, "ratio": nan}
    j = jaccard(m1, m2, names)
    c = chance_jaccard(m1, m2, names)
    return {"params": int(sum(m1[n].numel() for n in names)), "jaccard": j,
            "chance_jaccard": c, "ratio": j / c if c > 0 else float("nan")}


def layer_table(layer_names: Sequence[str], G: np.ndarray, m1: Mask, m2: Mask,
                labels1=None, labels2=None, cka=None) -> list[dict]:
    """One row per layer: G_ii, mask overlap of its weight, densities, cluster labels, CKA."""
    rows = []
    for i, layer in enumerate(layer_names):
        param = owned_parameter(layer, m1, m2)
        row = {"layer": layer, "index": i, "parameter": param, "gw_ii": float(G[i, i])}
        row.update(_overlap(m1, m2, [param] if param else []))
        row["density1"] = float(m1[param].float().mean()) if param else float("nan")
        row["density2"] = float(m2[param].float().mean()) if param else float("nan")
        if labels1 is not None:
            row["cluster1"] = int(labels1[i])
        if labels2 is not None:
            row["cluster2"] = int(labels2[i])
        if cka is not None:
            row["cka"] = float(cka[i])
        rows.append(row)
    return rows


def block_table(layer_names: Sequence[str], G: np.ndarray, labels: Sequence[int], m1: Mask,
                m2: Mask, labels2: Sequence[int] | None = None) -> list[dict]:
    """One row per cluster of ``labels`` (network 1's labels define a block's layers): its layers,
    and over the block's prunable (masked) layers the mean G_ii and the Jaccard / chance Jaccard
    / ratio of their parameters, so both sides of Figure 3 describe the same layers
    (``gw_ii_mean_all`` adds the dense first layer and the head where the block has them)."""
    labels = np.asarray(labels)
    rows = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        owned = [(i, owned_parameter(layer_names[i], m1, m2)) for i in idx]
        names = [p for _, p in owned if p]
        masked = [G[i, i] for i, p in owned if p]
        row = {"block": int(c), "layers": [layer_names[i] for i in idx],
               "n_layers": int(len(idx)), "first_index": int(idx.min()),
               "last_index": int(idx.max()),
               "gw_ii_mean": float(np.mean(masked)) if masked else float("nan"),
               "gw_ii_mean_all": float(np.mean([G[i, i] for i in idx]))}
        row.update(_overlap(m1, m2, names))
        row["n_masked_layers"] = len(names)
        if labels2 is not None:
            row["layers_net2"] = [layer_names[i] for i in np.flatnonzero(np.asarray(labels2) == c)]
        rows.append(row)
    return rows


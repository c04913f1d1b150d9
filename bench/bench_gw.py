"""Benchmark: the joint 2L x 2L GW matrix computed by dilt.analysis.gw against a straightforward loop.

Features are synthetic but structured like two ResNet-18-sized networks (widths 64..512): each
network is a chain of random tanh maps of one shared latent, so neighbouring layers are similar;
the two networks share their first half of maps (small perturbations) and differ afterwards.

* ours:      one distance matrix per layer, each unordered pair solved once from the identity
             and the uniform start (keep the lower), pairs spread over ``--jobs`` processes.
* baseline:  for every (i, j) of the 2L x 2L matrix, recompute both distance matrices and call
             ``ot.gromov.gromov_wasserstein2`` from the uniform plan, on one core.

Prints the speed ratio and the ratio of mean GW values (lower is better), over the off-diagonal
entries (the baseline's diagonal GW(X, X) is also shown: it is not always 0).

Quick run (under a minute on 2 cores):  python bench/bench_gw.py --n 256 --layers 8
The defaults (--n 1024 --layers 20) take over an hour for the baseline loop on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import ot
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dilt.analysis.gw import distance_matrix, joint_matrix  # noqa: E402

RESNET18_WIDTHS = [64] * 5 + [128] * 5 + [256] * 5 + [512] * 5


def synthetic_networks(n: int, layers: int, seed: int = 0, latent: int = 32):
    """Two lists of ``layers`` feature matrices (n, width) as described in the module doc."""
    rng = np.random.default_rng(seed)
    widths = [RESNET18_WIDTHS[int(i * len(RESNET18_WIDTHS) / layers)] for i in range(layers)]
    z = rng.standard_normal((n, latent))
    nets = []
    shared = [rng.standard_normal((a, b)) / np.sqrt(a)
              for a, b in zip([latent] + widths[:-1], widths)]
    for net in range(2):
        h, feats = z, []
        for l, W in enumerate(shared):
            if l >= layers // 2 or net == 1:  # the second network drifts, strongly after half way
                scale = 1.0 if l >= layers // 2 else 0.1
                W = (W if l < layers // 2 else 0.0) + scale * rng.standard_normal(W.shape) / np.sqrt(W.shape[0])
            h = np.tanh(h @ W + 0.1 * rng.standard_normal((n, W.shape[1])))
            feats.append(h)
        nets.append(feats)
    return nets


def baseline(feats: list[np.ndarray], entries=None) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward loop over ``entries`` (all (i, j) by default); returns GW values and
    seconds per entry (NaN where not computed)."""
    m = len(feats)
    vals, secs = np.full((m, m), np.nan), np.full((m, m), np.nan)
    if entries is None:
        entries = [(i, j) for i in range(m) for j in range(m)]
    with threadpool_limits(1):
        for i, j in entries:
            t = time.perf_counter()
            C1 = distance_matrix(feats[i])
            C2 = distance_matrix(feats[j])
            vals[i, j] = ot.gromov.gromov_wasserstein2(C1, C2)
            secs[i, j] = time.perf_counter() - t
    return vals, secs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="probe points")
    ap.add_argument("--layers", type=int, default=20, help="layers per network")
    ap.add_argument("--jobs", type=int, default=2, help="processes for ours")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--baseline-sample", type=int, default=0,
                    help="run the baseline loop on this many random entries only and extrapolate "
                         "its time to the whole matrix (0 = all entries)")
    args = ap.parse_args(argv)

    net1, net2 = synthetic_networks(args.n, args.layers, args.seed)
    feats = net1 + net2
    m = len(feats)
    off = ~np.eye(m, dtype=bool)

    t = time.perf_counter()
    dists = [distance_matrix(f) for f in feats]
    J = joint_matrix(dists[:args.layers], dists[args.layers:], n_jobs=args.jobs)
    t_ours = time.perf_counter() - t
    print(f"ours: {t_ours:.1f} s for {m * (m - 1) // 2} unordered pairs, {args.jobs} processes",
          flush=True)

    all_entries = [(i, j) for i in range(m) for j in range(m)]
    entries = all_entries
    if 0 < args.baseline_sample < len(all_entries):
        pick = np.random.default_rng(args.seed).choice(len(all_entries), args.baseline_sample, replace=False)
        entries = [all_entries[k] for k in sorted(pick)]
    t = time.perf_counter()
    B, secs = baseline(feats, entries)
    t_run = time.perf_counter() - t
    # time for the whole matrix: measured, or the sample's mean seconds per entry times m*m
    t_base = t_run if entries is all_entries else np.nanmean(secs) * m * m
    t_base_upper = (np.nansum(secs[np.triu_indices(m, 1)]) if entries is all_entries
                    else np.nanmean(secs) * m * (m - 1) / 2)
    print(f"baseline: {t_run:.1f} s for {len(entries)} of {m * m} ordered pairs, 1 core"
          + ("" if entries is all_entries else f" (whole matrix extrapolated: {t_base:.0f} s)"), flush=True)
    off = off & ~np.isnan(B)   # compare values where the baseline ran

    starts = J.start[np.triu_indices(m, 1)]
    res = {
        "n": args.n, "layers_per_network": args.layers, "jobs": args.jobs,
        "baseline_entries_run": len(entries), "baseline_extrapolated": entries is not all_entries,
        "seconds_ours": t_ours, "seconds_baseline": t_base,
        "speedup": t_base / t_ours,
        "speedup_vs_baseline_upper_triangle_only": t_base_upper / t_ours,
        "mean_gw_ours_offdiag": float(J.values[off].mean()),
        "mean_gw_baseline_offdiag": float(B[off].mean()),
        "gw_ratio_ours_over_baseline": float(J.values[off].mean() / B[off].mean()),
        "pairs_ours_lower_than_baseline": float((J.values[off] < B[off] - 1e-12).mean()),
        "pairs_ours_higher_than_baseline": float((J.values[off] > B[off] + 1e-12).mean()),
        "baseline_diagonal_max": float(np.nanmax(np.diag(B))) if not np.isnan(np.diag(B)).all() else float("nan"),
        "identity_start_won": float(np.mean(starts == "identity")),
    }
    for k, v in res.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()

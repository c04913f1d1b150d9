"""Exact square-loss Gromov-Wasserstein (GW) distances between layer representations.

Every layer is turned into one Euclidean distance matrix (float64, scaled by its mean off-diagonal
distance by default), computed once per layer. A pair of layers is compared with POT's exact
conditional-gradient solver (``ot.gromov.gromov_wasserstein``) started from two couplings:

* ``identity``: I/n. Valid because both layers see the same probe points in the same order; it is
  the natural guess for similar layers and reaches low values in a few iterations.
* ``uniform``:  the product of the marginals (POT's default start).

The lower of the two local minima is kept (any valid coupling gives an upper bound on GW) and the
winning start is reported. GW(X, X) = 0 is set without solving (the identity coupling attains it).

The optional batched path (``solver="batched"``, meant for a GPU and large n) runs POT's
entropic proximal solver ``ot.solve_gromov_batch`` for many pairs at once, rounds each coupling
onto the exact marginals (Altschuler et al., 2017, Alg. 2) and polishes it with the exact solver;
only the polished exact value is reported. Entropic values are never reported as GW.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import ot
from scipy.spatial.distance import pdist, squareform

STARTS = ("identity", "uniform")
NORMALISATIONS = ("mean", "max", "none")


def emd_iterations(n: int, m: int) -> int:
    """The network simplex's iteration cap for the linear step of an n x m problem. POT's
    default of 100,000 can stop short of the optimum at paper scale: it then warns and returns a
    feasible, suboptimal direction (a 2,048-point pair of synthetic clouds hit it in 6 steps,
    1,024 points in none). 10 n m leaves the smoke suite's 96-point problems as they were."""
    return max(100_000, 10 * n * m)


def distance_matrix(x, normalise: str = "mean") -> np.ndarray:
    """Euclidean distance matrix of the rows of ``x`` in float64, divided by the mean ("mean")
    or largest ("max") off-diagonal distance, or left as is ("none")."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalise!r}; known: {', '.join(NORMALISATIONS)}")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    d = pdist(x)
    scale = {"mean": d.mean() if d.size else 0.0, "max": d.max() if d.size else 0.0,
             "none": 1.0}[normalise]
    if scale > 0:
        d /= scale
    return squareform(d)


@dataclass
class GWPair:
    value: float                 # the lowest value over the starts (clipped at 0)
    start: str                   # the start that reached it
    values: dict[str, float]     # value reached from every start


def _coupling(start, p: np.ndarray, q: np.ndarray) -> np.ndarray | None:
    if isinstance(start, str):
        if start == "uniform":
            return None  # POT's default: p q^T
        if start == "identity":
            if len(p) != len(q):
                raise ValueError("the identity start needs the same number of points on both sides")
            return np.diag(p)
        raise ValueError(f"unknown start {start!r}")
    return np.asarray(start, dtype=np.float64)


def gw_cg(C1: np.ndarray, C2: np.ndarray, G0: np.ndarray | None = None, *,
          max_iter: int = 10000, tol_rel: float = 1e-9, tol_abs: float = 1e-9) -> tuple[float, np.ndarray]:
    """Square-loss GW by POT's conditional gradient (``ot.optim.cg``) with POT's exact line
    search, for symmetric C1, C2 and uniform weights: the iterates of
    ``ot.gromov.gromov_wasserstein(..., symmetric=True)``, at half the matrix products. POT
    recomputes C1 G C2 at every iterate; here the line search's C1 dG C2 updates it
    (C1 (G + a dG) C2 = C1 G C2 + a C1 dG C2), so each iteration costs two n^3 products instead
    of four. Returns the GW value (POT's ``gw_dist``) and the coupling."""
    from ot.gromov._utils import init_matrix
    from ot.optim import cg, solve_1d_linesearch_quad

    p, q = ot.unif(len(C1)), ot.unif(len(C2))
    G0 = np.outer(p, q) if G0 is None else np.asarray(G0, dtype=np.float64)
    constC, hC1, hC2 = init_matrix(C1, C2, p, q, "square_loss")
    first = {}   # constC - hC1 G0 hC2^T, shared by the initial cost and gradient

    def tens(G):
        if first.get("G") is not G:
            first.update(G=G, tens=constC - hC1 @ G @ hC2.T)
        return first["tens"]

    def f(G):
        return float(np.sum(tens(G) * G))

    def df(G):
        return 2 * tens(G)

    def line_search(cost, G, deltaG, Mi, cost_G, df_G, **kwargs):
        # POT's exact line search (solve_gromov_linesearch, symmetric, M = 0, reg = 1), also
        # returning the gradient at G + alpha dG, which cg then uses instead of calling df
        dot = hC1 @ deltaG @ hC2.T
        a = -np.sum(dot * deltaG)
        b = -2 * np.sum(dot * G)
        alpha = solve_1d_linesearch_quad(a, b)
        return alpha, 1, cost_G + a * alpha**2 + b * alpha, df_G - 2 * alpha * dot

    G, log = cg(p, q, 0.0, 1.0, f, df, G0, line_search, log=True, numItermax=max_iter,
                numItermaxEmd=emd_iterations(len(p), len(q)), stopThr=tol_rel, stopThr2=tol_abs)
    return float(log["loss"][-1]), G


def gw_pair(C1: np.ndarray, C2: np.ndarray, starts=STARTS, *, max_iter: int = 10000,
            tol_rel: float = 1e-9, tol_abs: float = 1e-9) -> GWPair:
    """Exact square-loss GW between two symmetric distance matrices (uniform weights), run from
    each of ``starts`` ("identity", "uniform" or an explicit coupling array) with :func:`gw_cg`;
    keeps the lowest value. The tolerances are POT's defaults. Ties go to the start listed
    first."""
    p = ot.unif(len(C1))
    q = ot.unif(len(C2))
    values: dict[str, float] = {}
    for i, start in enumerate(starts):
        name = start if isinstance(start, str) else f"given{i}"
        values[name] = gw_cg(C1, C2, _coupling(start, p, q), max_iter=max_iter,
                             tol_rel=tol_rel, tol_abs=tol_abs)[0]
    return GWPair(max(min(values.values()), 0.0), _winner(values), values)


def _winner(values: dict[str, float], rtol: float = 1e-9) -> str:
    """The first start whose value is within ``rtol`` (relative, floor 1e-12) of the lowest."""
    low = min(values.values())
    return next(k for k, v in values.items() if v <= low + max(rtol * abs(low), 1e-12))


@dataclass
class GWMatrix:
    """GW values between two lists of layers, the winning start per entry and each start's value."""
    values: np.ndarray
    start: np.ndarray  # dtype object: the start that won each entry
    start_values: dict[str, np.ndarray] = field(default_factory=dict)

    def block(self, rows: slice, cols: slice) -> GWMatrix:
        return GWMatrix(self.values[rows, cols], self.start[rows, cols],
                        {k: v[rows, cols] for k, v in self.start_values.items()})


def _solve_one(C1, C2, starts, options):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread per worker process
        return gw_pair(C1, C2, starts, **options)


def _solve_pairs(dists, pairs, n_jobs: int, starts, options) -> list[GWPair]:
    if n_jobs == 1 or len(pairs) <= 1:
        return [gw_pair(dists[i], dists[j], starts, **options) for i, j in pairs]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_solve_one)(dists[i], dists[j], starts, options) for i, j in pairs)


def _assemble(shape, pairs, results, names, symmetric: bool) -> GWMatrix:
    values = np.zeros(shape)
    start = np.full(shape, "identity", dtype=object)  # diagonal of a joint matrix: GW(X, X) = 0
    per = {n: np.zeros(shape) for n in names}
    for (i, j), r in zip(pairs, results):
        cells = [(i, j), (j, i)] if symmetric else [(i, j)]
        for cell in cells:
            values[cell] = r.value
            start[cell] = r.start
            for n in names:
                per[n][cell] = r.values.get(n, np.nan)
    return GWMatrix(values, start, per)


def gw_matrix(dists_a, dists_b, n_jobs: int = 2, *, starts=STARTS, solver: str = "exact",
              **options) -> GWMatrix:
    """GW between every layer of ``dists_a`` (rows) and every layer of ``dists_b`` (columns),
    given their distance matrices. Pairs run in ``n_jobs`` processes."""
    dists = list(dists_a) + list(dists_b)
    la = len(dists_a)
    pairs = [(i, la + j) for i in range(la) for j in range(len(dists_b))]
    results = _run(dists, pairs, n_jobs, starts, solver, options)
    out = _assemble((len(dists), len(dists)), pairs, results, _start_names(results), False)
    return out.block(slice(0, la), slice(la, None))


def joint_matrix(dists_1, dists_2, n_jobs: int = 2, *, starts=STARTS, solver: str = "exact",
                 checkpoint: str | os.PathLike | None = None, **options) -> GWMatrix:
    """The symmetric 2L x 2L GW matrix over the layers of network 1 then network 2: the two
    diagonal blocks compare layers within a network, the off-diagonal block ``G`` (rows: network
    1, columns: network 2) across networks. Each unordered pair is solved once.

    ``checkpoint``: a JSON file the solved pairs are written to (atomically, every
    ``CHECKPOINT_PAIRS`` x ``n_jobs`` pairs) and read back from, so a killed run solves only the
    pairs it had not finished (a pair is solved the same way either time). The caller names it
    uniquely for the inputs and removes it when done."""
    dists = list(dists_1) + list(dists_2)
    pairs = list(combinations(range(len(dists)), 2))
    done = _load_pairs(checkpoint, len(dists)) if checkpoint is not None else {}
    todo = [p for p in pairs if p not in done]
    step = len(todo) if checkpoint is None else CHECKPOINT_PAIRS * max(1, n_jobs)
    for k in range(0, len(todo), max(1, step)):
        chunk = todo[k:k + step]
        done.update(zip(chunk, _run(dists, chunk, n_jobs, starts, solver, options)))
        if checkpoint is not None:
            _save_pairs(checkpoint, len(dists), done)
    results = [done[p] for p in pairs]
    return _assemble((len(dists), len(dists)), pairs, results, _start_names(results), True)


CHECKPOINT_PAIRS = 16  # pairs per worker between two writes of the checkpoint


def _save_pairs(path, n: int, done: dict) -> None:
    from dilt.io import write_json

    write_json(path, {"layers": n, "pairs": [[i, j, r.value, r.start, r.values]
                                             for (i, j), r in sorted(done.items())]})


def _load_pairs(path, n: int) -> dict:
    """The pairs a checkpoint holds ({} when there is none, or it is of another layer count)."""
    from dilt.io import read_json

    if not os.path.exists(path):
        return {}
    kept = read_json(path)
    if kept.get("layers") != n:
        return {}
    return {(i, j): GWPair(value, start, values) for i, j, value, start, values in kept["pairs"]}


def cross_block(joint: GWMatrix, n1: int) -> np.ndarray:
    """``G``: rows = layers of network 1, columns = layers of network 2."""
    return joint.values[:n1, n1:]


def _start_names(results) -> list[str]:
    names: list[str] = []
    for r in results:
        names += [n for n in r.values if n not in names]
    return names


def _run(dists, pairs, n_jobs, starts, solver, options) -> list[GWPair]:
    if solver == "auto":
        solver = "batched" if _cuda_available() and len(dists[0]) > 1024 else "exact"
    if solver == "exact":
        return _solve_pairs(dists, pairs, n_jobs, starts, options)
    if solver == "batched":
        return gw_pairs_batched(dists, pairs, **options)
    raise ValueError(f"unknown solver {solver!r} (exact, batched, auto)")


# -- batched (GPU) path ---------------------------------------------------------------------------
def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def round_to_marginals(F: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Project a nonnegative approximate coupling onto {T >= 0 : T 1 = p, T^T 1 = q}
    (Altschuler, Weed and Rigollet 2017, Algorithm 2): scale rows and columns down to their
    marginals, then add the missing mass as a rank-one correction."""
    F = np.clip(np.asarray(F, dtype=np.float64), 0, None)
    rows = F.sum(1)
    F = F * np.minimum(1.0, np.divide(p, rows, out=np.ones_like(p), where=rows > 0))[:, None]
    cols = F.sum(0)
    F = F * np.minimum(1.0, np.divide(q, cols, out=np.ones_like(q), where=cols > 0))[None, :]
    err_r = p - F.sum(1)
    err_c = q - F.sum(0)
    missing = err_r.sum()
    if missing > 0:
        F = F + np.outer(err_r, err_c) / missing
    return F


def gw_pairs_batched(dists, pairs, *, device: str | None = None, batch: int = 8,
                     reg: float = 1e-2, max_iter: int = 200, max_iter_inner: int = 50,
                     **exact_options) -> list[GWPair]:
    """GW for ``pairs`` of ``dists`` via ``ot.solve_gromov_batch`` (torch; CUDA when available),
    started from the identity and the uniform coupling, with ``tol=0`` so it runs ``max_iter``
    proximal steps (with the default tolerance it stops after one). Each entropic coupling is
    rounded onto the exact marginals and polished by the exact solver; the exact values are
    reported with starts "batched-identity" / "batched-uniform"."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out: list[GWPair] = []
    for s in range(0, len(pairs), batch):
        chunk = pairs[s:s + batch]
        n = len(dists[chunk[0][0]])
        if any(len(dists[i]) != n or len(dists[j]) != n for i, j in chunk):
            raise ValueError("the batched path needs the same number of points in every layer")
        Ca = torch.from_numpy(np.stack([dists[i] for i, _ in chunk])).to(device, torch.float64)
        Cb = torch.from_numpy(np.stack([dists[j] for _, j in chunk])).to(device, torch.float64)
        plans = {}
        for name, T0 in (("identity", torch.eye(n, dtype=torch.float64, device=device) / n),
                         ("uniform", torch.full((n, n), 1.0 / n**2, dtype=torch.float64,
                                                device=device))):
            res = ot.solve_gromov_batch(Ca, Cb, reg=reg, loss="sqeuclidean", symmetric=True,
                                        T_init=T0.expand(len(chunk), n, n).contiguous(),
                                        max_iter=max_iter, tol=0, max_iter_inner=max_iter_inner,
                                        grad="detach")
            plans[name] = res.plan.detach().cpu().numpy()
        p = ot.unif(n)
        for b, (i, j) in enumerate(chunk):
            starts = [round_to_marginals(plans[k][b], p, p) for k in plans]
            r = gw_pair(dists[i], dists[j], starts, **exact_options)
            renamed = {f"batched-{k}": v for k, v in zip(plans, r.values.values())}
            out.append(GWPair(max(min(renamed.values()), 0.0), _winner(renamed), renamed))
    return out

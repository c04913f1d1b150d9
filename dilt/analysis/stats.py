"""Rank correlations with permutation p-values, partial rank correlation, and linear CKA."""

from __future__ import annotations

import numpy as np
from scipy import stats


def _pearson_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    den = np.sqrt((x**2).sum(axis=axis) * (y**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=axis) / den


def _finite(*arrays) -> list[np.ndarray]:
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    ok = np.all([np.isfinite(a) for a in arrays], axis=0)
    return [a[ok] for a in arrays]


def _perm_test(x: np.ndarray, y: np.ndarray, n_perm: int, seed: int) -> tuple[float, float]:
    """Pearson correlation of x and y with a two-sided permutation p-value from
    ``scipy.stats.permutation_test`` (pairings permuted; NaN below 3 points)."""
    r = float(_pearson_along(x, y))
    if len(x) < 3 or not np.isfinite(r):
        return r, float("nan")
    res = stats.permutation_test((x, y), lambda a, b, axis: _pearson_along(a, b, axis),
                                 permutation_type="pairings", vectorized=True,
                                 n_resamples=n_perm, alternative="two-sided", rng=seed)
    return r, float(res.pvalue)


def spearman_perm(x, y, n_perm: int = 10000, seed: int = 0) -> dict:
    """Spearman's rho of x and y (pairs with a NaN dropped) and its permutation p-value."""
    x, y = _finite(x, y)
    rho, p = _perm_test(stats.rankdata(x), stats.rankdata(y), n_perm, seed)
    return {"rho": rho, "p": p, "n": int(len(x))}


def partial_spearman_perm(x, y, z, n_perm: int = 10000, seed: int = 0) -> dict:
    """Spearman's rho of x and y controlling for z: the Pearson correlation of the ranks of x and
    y after regressing out the ranks of z; the p-value permutes the residuals' pairings."""
    x, y, z = _finite(x, y, z)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    Z = np.column_stack([np.ones_like(rz), rz])

    def resid(v):
        return v - Z @ np.linalg.lstsq(Z, v, rcond=None)[0]

    if len(x) < 4:
        return {"rho": float("nan"), "p": float("nan"), "n": int(len(x))}
    rho, p = _perm_test(resid(rx), resid(ry), n_perm, seed)
    return {"rho": rho, "p": p, "n": int(len(x))}


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature matrices with the same rows."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    x = x - x.mean(0)
    y = y - y.mean(0)
    if x.shape[1] + y.shape[1] < 2 * len(x):  # feature-space form is cheaper
        num = np.linalg.norm(y.T @ x) ** 2
        den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    else:
        kx, ky = x @ x.T, y @ y.T
        num = (kx * ky).sum()
        den = np.linalg.norm(kx) * np.linalg.norm(ky)
    return float(num / den) if den > 0 else float("nan")

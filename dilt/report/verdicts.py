"""Verdicts on the proposal's hypotheses, from ``results.csv`` and the experiment-2 analyses.

Rules (DESIGN.md, "Verdict rules"):

* Two runs are compared only when they share a seed (hence theta_0) and, at
  ``at: matched-density``, when their actual densities (1 - actual_sparsity) differ by at most
  ``tolerance`` relative to the anchor's density. Otherwise the other side's accuracy is
  interpolated, linearly in log density, between the two rows of that seed that bracket the
  anchor's density ("interpolated"). Pairs that cannot be matched are counted as unmatched and
  never enter a statistic. ``at: target`` pairs rows of the same target sparsity (costs such as
  rounds or epochs, and the proposal's source-matched comparison) and reports the density ratio.
* Rows flagged by :func:`flag` (collapsed, bottleneck, chance, failed_source) never count as
  support: a comparison with any flagged input is left out of its claim and counted separately.
* Each comparison and each claim gets a paired test over seeds (:func:`paired`): mean paired
  difference, 95% t (or bootstrap) interval, and a verdict: supported, refuted or inconclusive.
  A claim's per-seed values average only the comparisons every seed has. Costs (``at: target``
  on rounds / epochs / trainings) count rows that reached the target, the cheapest of them;
  accuracy ``at: target`` with densities apart is "descriptive" (reported, not judged).
* Correlations (experiment 2) are computed per seed; fewer than 4 points (plus one per partialled
  covariate) is "not testable", never a result. Per-seed rhos are then tested like differences.

Claims are declared as plain dicts (a ``claims:`` list in workflow_config.yaml); see
:func:`check_claims` for the format and :data:`DEFAULT_CLAIMS` for the proposal's hypotheses.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from dilt.io import write_text
from dilt.methods import cap as _cap
from dilt.methods import iterative as _imp
from dilt.methods import rigl as _rigl
from dilt.report.latex import escape

TOLERANCE = 0.02
CHANCE_MARGIN = 0.05
MIN_SEEDS = 3
# a percentile bootstrap over fewer seeds is about [min, max] of the differences (three seeds of
# one sign would be "supported"): below this many it decides nothing
MIN_BOOTSTRAP_SEEDS = 10
MIN_POINTS = 4

EXPECT = ("greater", "less", "competitive", "equivalent")
QUANTITIES = {"value": (100.0, "points"), "round": (1.0, "rounds"), "epochs": (1.0, "epochs"),
              "trainings": (1.0, "trainings")}
AT = ("matched-density", "target")
CHANCE = "chance"   # compare.b: side a's accuracy against its chance level (top-k: k / classes)
FLAGS = ("bottleneck", "chance", "collapsed", "failed_source")

# Columns every pair shares (unless the claim's sides select different values of one).
STRATA = ["model", "dataset", "source_dataset", "split", "metric"]
# Columns a selector (``where`` or a side of ``compare``) may name in a results claim.
SELECTABLE = ["experiment", "model", "dataset", "source_dataset", "partition", "method",
              "ticket", "mode", "control", "protocol", "target_sparsity", "split", "metric", "seed"]
# Columns that identify what a row is; a side may not mix values of these within one pairing.
IDENTITY = ["experiment", "method", "ticket", "control", "protocol", "split", "metric"]
LAYER_VARS = ("depth", "gw_ii", "jaccard", "jaccard_ratio", "density")
ANALYSIS_SELECTABLE = ["model", "dataset", "partition", "seed"]
PARTITION_KINDS = {"experts": "class-disjoint partitions (not iid, not full data)",
                   "siblings": "iid partitions", "full": "no partition (-)"}

_CLAIM_KEYS = {"id", "text", "kind", "where", "compare", "quantity", "at", "same", "expect",
               "margin", "tolerance", "by", "x", "y", "partial", "skilled_on"}


# ---------------------------------------------------------------- selection

def _partition_mask(col: pd.Series, value: str) -> np.ndarray:
    s = col.astype(str)
    if value == "experts":
        return ((s != "-") & ~s.str.startswith("iid")).to_numpy()
    if value == "siblings":
        return s.str.startswith("iid").to_numpy()
    if value == "full":
        return (s == "-").to_numpy()
    return (s == value).to_numpy()


def _value_mask(col: pd.Series, name: str, value) -> np.ndarray:
    values = value if isinstance(value, list) else [value]
    m = np.zeros(len(col), bool)
    for v in values:
        if name == "partition":
            m |= _partition_mask(col, str(v))
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            m |= np.isclose(pd.to_numeric(col, errors="coerce").to_numpy(float), float(v))
        else:
            m |= (col.astype(str) == str(v)).to_numpy()
    return m


def select(df: pd.DataFrame, selector: Mapping) -> pd.DataFrame:
    """Rows of ``df`` matching every ``column: value`` (or list of values) of ``selector``.

    ``partition`` also takes the kinds ``experts``, ``siblings`` and ``full``."""
    m = np.ones(len(df), bool)
    for k, v in selector.items():
        m &= _value_mask(df[k], k, v)
    return df[m]


def _emptied_by(df: pd.DataFrame, selector: Mapping) -> str:
    """The first ``key=value`` of ``selector`` that leaves no rows (for 'not run' reasons)."""
    for k, v in selector.items():
        if k not in df.columns:
            return f"the results have no column {k!r}"
        nxt = select(df, {k: v})
        if nxt.empty:
            have = sorted(map(str, df[k].unique()))[:8]
            return f"no rows with {k}={v!r} (have: {', '.join(have) or 'none'})"
        df = nxt
    return "no rows"


# ---------------------------------------------------------------- flags

def _chance_level(rows: pd.DataFrame, num_classes) -> np.ndarray:
    """Chance accuracy of each row's metric (top-k: k/K), NaN where unknown or not top-k."""
    if "num_classes" in rows.columns:
        k_cls = pd.to_numeric(rows["num_classes"], errors="coerce").to_numpy(float)
    elif isinstance(num_classes, numbers.Real):
        k_cls = np.full(len(rows), float(num_classes))
    elif isinstance(num_classes, Mapping):
        missing = sorted(set(rows["dataset"]) - set(num_classes))
        if missing:
            raise ValueError(f"num_classes has no entry for dataset {missing[0]!r}")
        k_cls = rows["dataset"].map(num_classes).to_numpy(float)
    else:
        return np.full(len(rows), np.nan)
    topk = rows["metric"].astype(str).str.extract(r"^top(\d+)$")[0].astype(float).to_numpy()
    return np.minimum(1.0, topk / k_cls)


def flag(rows: pd.DataFrame, *, margin: float = CHANCE_MARGIN, num_classes=None,
         density_floor: float | None = None) -> pd.Series:
    """Why each row must not count as support: a ';'-joined subset of :data:`FLAGS`, "" if clean.

    Keeps the flags already in a ``flags`` column and adds: ``collapsed`` (an empty layer),
    ``bottleneck`` (``bottleneck_layers`` > 0, or ``min_layer_density`` below
    ``density_floor``), ``chance`` (the ticket's top-1 on split ``full`` is at most
    1/K + ``margin``; every split of that ticket carries it, so a specialist that is near chance
    on the other partition's classes is not flagged for that; rows whose ticket has no ``full``
    top-1 row are checked on their own top-k value against k/K). K comes from a ``num_classes``
    column, else from ``num_classes`` (an int, or a dict by dataset); without either, chance is
    not assessed.
    """
    sets = _flag_sets(rows)
    if "collapsed" in rows.columns:
        coll = rows["collapsed"].astype(str).str.lower().eq("true").to_numpy()
        if "empty_layers" in rows.columns:
            coll = coll | (pd.to_numeric(rows["empty_layers"], errors="coerce").fillna(0)
                           .to_numpy() > 0)
        _add(sets, coll, "collapsed")
    if "bottleneck_layers" in rows.columns:
        _add(sets, pd.to_numeric(rows["bottleneck_layers"], errors="coerce").fillna(0) > 0,
             "bottleneck")
    if density_floor is not None and "min_layer_density" in rows.columns:
        dens = pd.to_numeric(rows["min_layer_density"], errors="coerce").to_numpy(float)
        _add(sets, (dens >= 0) & (dens < density_floor), "bottleneck")
    _add(sets, _chance_flags(rows, margin, num_classes), "chance")
    return pd.Series([";".join(sorted(s)) for s in sets], index=rows.index, name="flags",
                     dtype=object)


def _flag_sets(rows: pd.DataFrame) -> list[set]:
    """Each row's flags as a set (from its ';'-joined ``flags``; empty without the column)."""
    return [set(filter(None, str(f).split(";"))) for f in
            (rows["flags"].fillna("") if "flags" in rows.columns else [""] * len(rows))]


# the columns that name one ticket of one seed (its rows differ by split and metric)
_TICKET = ("experiment", "model", "dataset", "source_dataset", "partition", "method", "ticket",
           "mode", "control", "protocol", "target_sparsity", "seed")


def _ticket_keys(rows: pd.DataFrame) -> np.ndarray:
    return rows[[c for c in _TICKET if c in rows.columns]].astype(str).agg("|".join, axis=1).to_numpy()


def _add(sets: list[set], mask, name: str) -> None:
    for s, m in zip(sets, np.asarray(mask, bool)):
        if m:
            s.add(name)


def _chance_flags(rows: pd.DataFrame, margin: float, num_classes) -> np.ndarray:
    chance = _chance_level(rows, num_classes)
    own = pd.to_numeric(rows["value"], errors="coerce").to_numpy(float) <= chance + margin
    keys = _ticket_keys(rows)
    is_full = ((rows["split"].astype(str) == "full") & (rows["metric"].astype(str) == "top1"))
    ref = dict(zip(keys[is_full.to_numpy()], own[is_full.to_numpy()]))
    return np.array([ref.get(k, o) for k, o in zip(keys, own)], bool)


# ---------------------------------------------------------------- matching

def _density(rows: pd.DataFrame) -> np.ndarray:
    return 1.0 - pd.to_numeric(rows["actual_sparsity"]).to_numpy(float)


def _curve(b: pd.DataFrame, value: str) -> pd.DataFrame:
    """One point per distinct density (duplicates averaged, their flags joined), sorted."""
    c = pd.DataFrame({"density": _density(b), "y": b[value].to_numpy(float),
                      "flags": b["flags"].astype(str).to_numpy() if "flags" in b else ""})
    return (c.groupby("density", as_index=False)
             .agg(y=("y", "mean"), flags=("flags", lambda f: _join_flags(*f)))
             .sort_values("density").reset_index(drop=True))


def _join_flags(*flags: str) -> str:
    return ";".join(sorted({x for f in flags for x in str(f).split(";") if x}))


def _match_one(da: float, curve: pd.DataFrame | None, tolerance: float, interpolate: bool):
    """(status, density_b, value_b, flags_b, note) for an anchor of density ``da``."""
    if curve is None or curve.empty:
        return "unmatched", np.nan, np.nan, "", "no row of the other side for this seed"
    rel = np.abs(curve.density.to_numpy() - da) / da
    j = int(np.argmin(rel))
    if rel[j] <= tolerance:
        p = curve.iloc[j]
        return ("matched", p["density"], p["y"], p["flags"],
                f"densities differ by {100 * rel[j]:.2f}%")
    below, above = curve[curve.density < da], curve[curve.density > da]
    if interpolate and not below.empty and not above.empty and below.density.iloc[-1] > 0:
        lo, hi = below.iloc[-1], above.iloc[0]
        w = (math.log(da) - math.log(lo.density)) / (math.log(hi.density) - math.log(lo.density))
        return ("interpolated", da, lo["y"] + w * (hi["y"] - lo["y"]),
                _join_flags(lo["flags"], hi["flags"]),
                f"interpolated between densities {lo.density:.4g} and {hi.density:.4g}")
    return ("unmatched", curve.density.iloc[j], np.nan, "",
            f"nearest density {curve.density.iloc[j]:.4g} differs by {100 * rel[j]:.1f}% "
            f"(> {100 * tolerance:g}%) and no two rows bracket {da:.4g}")


def match(a_rows: pd.DataFrame, b_rows: pd.DataFrame, tolerance: float = TOLERANCE, *,
          on: Sequence[str] = ("seed",), value: str = "value",
          interpolate: bool = True) -> pd.DataFrame:
    """Pair each row of ``a_rows`` with ``b_rows`` sharing its ``on`` columns (the seed) at the
    same actual density.

    A b row is accepted when |d_b - d_a| <= ``tolerance`` * d_a (d = 1 - actual_sparsity); the
    nearest is taken. Otherwise, with ``interpolate``, b's ``value`` is interpolated linearly in
    log density between the two b rows that bracket d_a. Returns one row per a row: the ``on``
    columns, ``a_index``, ``density_a``, ``density_b``, ``value_a``, ``value_b``, ``status``
    (matched / interpolated / unmatched), ``flags`` (of every row used) and ``note``.
    """
    on = list(on)
    curves = {(k if isinstance(k, tuple) else (k,)): _curve(g, value)
              for k, g in b_rows.groupby(on, sort=False)} if len(b_rows) else {}
    out = []
    da_all = _density(a_rows)
    for (idx, ra), da in zip(a_rows.iterrows(), da_all):
        key = tuple(ra[c] for c in on)
        status, db, vb, fb, note = _match_one(da, curves.get(key), tolerance, interpolate)
        fa = str(ra["flags"]) if "flags" in a_rows.columns else ""
        out.append({**dict(zip(on, key)), "a_index": idx, "density_a": da, "density_b": db,
                    "value_a": float(ra[value]), "value_b": vb, "status": status,
                    "flags": _join_flags(fa, fb) if status != "unmatched" else fa,
                    "note": note})
    cols = on + ["a_index", "density_a", "density_b", "value_a", "value_b", "status", "flags",
                 "note"]
    return pd.DataFrame(out, columns=cols)


# ---------------------------------------------------------------- statistics

def _interval(d: np.ndarray, alpha: float, method: str, seed: int) -> tuple[float, float]:
    if len(d) < 2:
        return math.nan, math.nan
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    if method == "t":
        lo, hi = stats.t.interval(1 - alpha, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    else:
        res = stats.bootstrap((d,), np.mean, confidence_level=1 - alpha, method="percentile",
                              n_resamples=9999, rng=seed)
        lo, hi = res.confidence_interval
    return float(lo), float(hi)


def _side(lo: float, hi: float, expect: str, margin: float) -> tuple[str, str]:
    """(verdict, reason) from where the interval lies relative to the expected side."""
    iv = f"[{lo:.3g}, {hi:.3g}]"
    if expect == "equivalent":
        if -margin < lo and hi < margin:
            return "supported", f"interval {iv} lies within +-{margin:g}"
        if lo > margin or hi < -margin:
            return "refuted", f"interval {iv} lies outside +-{margin:g}"
        return "inconclusive", f"interval {iv} crosses +-{margin:g}"
    bound = {"greater": margin, "less": -margin, "competitive": -margin}[expect] + 0.0
    up = expect != "less"
    if (lo > bound) if up else (hi < bound):
        return "supported", f"interval {iv} lies {'above' if up else 'below'} {bound:g}"
    if (hi < bound) if up else (lo > bound):
        return "refuted", (f"interval {iv} lies {'below' if up else 'above'} {bound:g}, "
                           f"against the expected side")
    return "inconclusive", f"interval {iv} contains {bound:g}"


def paired(diffs, alpha: float = 0.05, method: str = "t", *, expect: str = "greater",
           margin: float = 0.0, flagged: int = 0, min_n: int = MIN_SEEDS, seed: int = 0) -> dict:
    """Mean paired difference, its (1 - alpha) interval and a verdict.

    ``method``: "t" (Student t on the differences) or "bootstrap" (percentile, 9999 resamples).
    ``expect``: greater (interval above ``margin``), less (below -``margin``), competitive
    (above -``margin``: non-inferior) or equivalent (inside +-``margin``). The verdict is
    inconclusive when ``flagged`` > 0, when n < ``min_n`` (or, for the bootstrap, n <
    :data:`MIN_BOOTSTRAP_SEEDS`), or when the interval straddles the bound; supported / refuted
    when it lies entirely on the expected / other side.
    """
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {EXPECT}, got {expect!r}")
    d = np.asarray(diffs, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("diffs contain a NaN or infinite value")
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    lo, hi = _interval(d, alpha, method, seed)
    out = {"n": n, "mean": mean, "lo": lo, "hi": hi, "alpha": alpha, "method": method}
    if flagged:
        return {**out, "verdict": "inconclusive", "reason": f"{flagged} flagged input(s)"}
    if n < min_n:
        return {**out, "verdict": "inconclusive", "reason": f"n = {n} < {min_n} seeds"}
    if method == "bootstrap" and n < MIN_BOOTSTRAP_SEEDS:
        return {**out, "verdict": "inconclusive",
                "reason": f"n = {n} < {MIN_BOOTSTRAP_SEEDS} seeds for a bootstrap interval"}
    verdict, reason = _side(lo, hi, expect, margin)
    return {**out, "verdict": verdict, "reason": f"{reason} (n = {n}, {method} interval)"}


def correlation(x, y, covariates: Sequence = (), *, min_points: int = MIN_POINTS) -> dict:
    """Spearman's rho of x and y, partial on ``covariates`` (Pearson correlation of the ranks'
    residuals after regressing out the covariates' ranks); NaN pairs dropped.

    Fewer than ``min_points`` + len(covariates) points, or a constant variable, is
    ``testable: False`` with the reason, never a value."""
    cols = [np.asarray(v, dtype=float) for v in (x, y, *covariates)]
    ok = np.all([np.isfinite(c) for c in cols], axis=0)
    cols = [c[ok] for c in cols]
    n, need = int(ok.sum()), min_points + len(covariates)
    if n < need:
        return {"rho": math.nan, "n": n, "testable": False,
                "reason": f"{n} points < {need}: not testable"}
    ranks = [stats.rankdata(c) for c in cols]
    if any(np.ptp(r) == 0 for r in ranks[:2]):
        return {"rho": math.nan, "n": n, "testable": False, "reason": "a variable is constant"}
    if not covariates:
        return {"rho": float(stats.spearmanr(cols[0], cols[1]).statistic), "n": n,
                "testable": True, "reason": ""}
    Z = np.column_stack([np.ones(n), *ranks[2:]])
    rx, ry = (r - Z @ np.linalg.lstsq(Z, r, rcond=None)[0] for r in ranks[:2])
    if np.allclose(rx, 0) or np.allclose(ry, 0):
        return {"rho": math.nan, "n": n, "testable": False,
                "reason": "a variable is fully explained by the covariates"}
    return {"rho": float(np.corrcoef(rx, ry)[0, 1]), "n": n, "testable": True, "reason": ""}


# ---------------------------------------------------------------- claims: validation

def _fail(i: int, claim, key: str, msg: str):
    cid = claim.get("id") if isinstance(claim, dict) else None
    raise ValueError(f"claims[{i}]" + (f" ({cid})" if cid else "") + f": key {key!r} {msg}")


def _check_selector(i, c, key, sel, allowed) -> None:
    if not isinstance(sel, dict):
        _fail(i, c, key, f"must be a mapping of column: value, got {sel!r}")
    for k, v in sel.items():
        if k not in allowed:
            _fail(i, c, f"{key}.{k}", f"is not a selectable column (allowed: {', '.join(allowed)})")
        vals = v if isinstance(v, list) else [v]
        if not vals or not all(isinstance(x, (str, numbers.Real)) and not isinstance(x, bool)
                               for x in vals):
            _fail(i, c, f"{key}.{k}", f"must be a string, number or list of them, got {v!r}")


def _check_common(i: int, c: dict) -> None:
    for k in c:
        if k not in _CLAIM_KEYS:
            _fail(i, c, k, f"is unknown (known: {', '.join(sorted(_CLAIM_KEYS))})")
    for k in ("id", "text"):
        if not isinstance(c.get(k), str) or not c[k].strip():
            _fail(i, c, k, "must be a non-empty string")
    if c.get("kind", "contrast") not in ("contrast", "correlation"):
        _fail(i, c, "kind", f"must be 'contrast' or 'correlation', got {c['kind']!r}")
    if c.get("expect") not in EXPECT:
        _fail(i, c, "expect", f"must be one of {', '.join(EXPECT)}, got {c.get('expect')!r}")
    m = c.get("margin", 0.0)
    if isinstance(m, bool) or not isinstance(m, numbers.Real) or m < 0:
        _fail(i, c, "margin", f"must be a number >= 0, got {m!r}")
    if c["expect"] in ("competitive", "equivalent") and not m > 0:
        _fail(i, c, "margin", f"must be > 0 when expect is {c['expect']!r}")


def _check_contrast(i: int, c: dict) -> None:
    cmp = c.get("compare")
    if not isinstance(cmp, dict) or set(cmp) not in ({"a", "b"}, {"a", "b", "c", "d"}):
        _fail(i, c, "compare", "must map exactly a, b (a - b) or a, b, c, d ((a - b) - (c - d))")
    for k in ("x", "y", "partial"):
        if k in c:
            _fail(i, c, k, "belongs to correlation claims only")
    _check_selector(i, c, "where", c.get("where", {}), SELECTABLE)
    if cmp["b"] == CHANCE and (set(cmp) != {"a", "b"} or c.get("quantity", "value") != "value"):
        _fail(i, c, "compare.b", "'chance' compares side a's accuracy with chance: a and b only")
    if "skilled_on" in c and (cmp["b"] != CHANCE or not isinstance(c["skilled_on"], str)):
        _fail(i, c, "skilled_on", "is the split (a string) on which side a must beat chance by the "
              "margin, for compare.b 'chance' only")
    for side, sel in cmp.items():
        if not (side == "b" and sel == CHANCE):
            _check_selector(i, c, f"compare.{side}", sel, SELECTABLE)
    if c.get("quantity", "value") not in QUANTITIES:
        _fail(i, c, "quantity", f"must be one of {', '.join(QUANTITIES)}, got {c['quantity']!r}")
    if c.get("at", "matched-density") not in AT:
        _fail(i, c, "at", f"must be one of {', '.join(AT)}, got {c['at']!r}")
    for key in ("same", "by"):
        v = c.get(key, [])
        if not isinstance(v, list) or any(x not in SELECTABLE for x in v):
            _fail(i, c, key, f"must be a list of columns from {', '.join(SELECTABLE)}, got {v!r}")
    t = c.get("tolerance", TOLERANCE)
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < 1:
        _fail(i, c, "tolerance", f"must be a number in (0, 1), got {t!r}")


def _check_correlation(i: int, c: dict) -> None:
    for k in ("x", "y"):
        if c.get(k) not in LAYER_VARS:
            _fail(i, c, k, f"must be one of {', '.join(LAYER_VARS)}, got {c.get(k)!r}")
    if c["x"] == c["y"]:
        _fail(i, c, "y", "must differ from x")
    p = c.get("partial", [])
    if not isinstance(p, list) or any(v not in LAYER_VARS or v in (c["x"], c["y"]) for v in p):
        _fail(i, c, "partial", f"must be a list of other variables from {', '.join(LAYER_VARS)}")
    for k in ("quantity", "at", "same", "tolerance"):
        if k in c:
            _fail(i, c, k, "belongs to contrast claims only")
    if c["expect"] == "competitive":
        _fail(i, c, "expect", "'competitive' is not defined for correlations")
    _check_selector(i, c, "where", c.get("where", {}), ANALYSIS_SELECTABLE)
    cmp = c.get("compare", {"a": {}, "b": {}})
    if not isinstance(cmp, dict) or set(cmp) != {"a", "b"}:
        _fail(i, c, "compare", "of a correlation claim must map exactly a and b")
    for side, sel in cmp.items():
        _check_selector(i, c, f"compare.{side}", sel, ANALYSIS_SELECTABLE)
    by = c.get("by", [])
    if not isinstance(by, list) or any(x not in ANALYSIS_SELECTABLE for x in by):
        _fail(i, c, "by", f"must be a list of columns from {', '.join(ANALYSIS_SELECTABLE)}")


def check_claims(claims) -> None:
    """Raise ValueError (one line: claim index, id and key) for a malformed declaration.

    A claim is a mapping with ``id``, ``text``, ``expect`` (greater / less / competitive /
    equivalent), optional ``margin`` (>= 0, in the quantity's units: points for accuracy;
    required > 0 for competitive and equivalent), ``kind`` (contrast, default, or
    correlation), ``where`` (column: value or list, for every side) and ``by`` (the columns
    that split a claim into separately reported groups).

    contrast: ``compare`` {a, b} (a - b) or {a, b, c, d} ((a - b) - (c - d)), each a selector
    overriding ``where`` (b may be ``"chance"``: side a's accuracy against its chance level,
    1/K for top-1 over K classes; then ``skilled_on``, a split, counts only the rows of a
    ticket that beats chance there by the margin: "near chance on T_2" says nothing of a
    specialist that learned nothing of T_1 either); ``quantity`` (value, round, epochs, trainings); ``at``
    (matched-density or target); ``same`` (columns besides model, dataset, source_dataset,
    split, metric and seed that must agree within a pair); ``tolerance``.
    correlation: ``x``, ``y`` and ``partial`` from :data:`LAYER_VARS`, evaluated per seed on
    the analyses; optional ``compare`` {a, b} tests rho_a - rho_b (e.g. experts vs siblings).
    """
    if not isinstance(claims, list):
        raise ValueError(f"claims must be a list, got {type(claims).__name__}")
    seen = set()
    for i, c in enumerate(claims):
        if not isinstance(c, dict):
            raise ValueError(f"claims[{i}]: must be a mapping, got {type(c).__name__}")
        _check_common(i, c)
        if c["id"] in seen:
            _fail(i, c, "id", f"{c['id']!r} is declared twice")
        seen.add(c["id"])
        (_check_correlation if c.get("kind") == "correlation" else _check_contrast)(i, c)


# ---------------------------------------------------------------- claims: contrasts

def _sides(c: dict) -> dict:
    """Each side's selector; side b ``chance`` selects side a's rows (their chance level)."""
    where = c.get("where", {})
    cmp = c["compare"]
    return {k: {**where, **(cmp["a"] if v == CHANCE else v)} for k, v in cmp.items()}


def _agree(sels: dict, names: Sequence[str], col: str) -> bool:
    first = sels[names[0]].get(col)
    return all(sels[s].get(col) == first for s in names)


def _key(c: dict, sels: dict, names: Sequence[str]) -> list[str]:
    """Columns a pair must share: STRATA + ``same`` (+ target), less those the sides set apart."""
    base = STRATA + [s for s in c.get("same", []) if s not in STRATA and s != "seed"]
    if c.get("at", "matched-density") == "target" and "target_sparsity" not in base:
        base.append("target_sparsity")
    return [k for k in base if _agree(sels, names, k)]


def _check_single(rows: pd.DataFrame, on: list[str], cols: Sequence[str], cid: str,
                  side: str) -> None:
    """Raise if ``rows`` mix values of one of ``cols`` within a pairing group ``on``."""
    for col in cols:
        if col in on or col not in rows.columns:
            continue
        n = rows.groupby(on, sort=False)[col].nunique()
        if (n > 1).any():
            vals = sorted(map(str, rows[col].unique()))
            raise ValueError(f"claim {cid!r}: side {side} mixes {col} values {vals} within one "
                             f"pairing; fix {col!r} in 'where' or the side, or add it to 'same'")


def _cheapest_reaching(rows: pd.DataFrame, on: list[str], q: str, tol: float,
                       keep_short: bool = False) -> pd.DataFrame:
    """A cost claim's rows (``at: target``, quantity rounds / epochs / trainings): only rows whose
    mask has reached its target sparsity (density at most (1 - target)(1 + ``tol``)); of several
    (a ticket's source- and density-matched rows) the cheapest, as the cost of reaching it.
    ``keep_short``: a group with no such row keeps its sparsest row, marked ``_short`` (its pair
    is then unmatched: a side that never reached the target is reported, never dropped)."""
    target_density = 1.0 - pd.to_numeric(rows["target_sparsity"]).to_numpy(float)
    ok = _density(rows) <= target_density * (1 + tol)
    group = list(dict.fromkeys(on + ["target_sparsity", "partition"]))
    cheapest = rows[ok].sort_values(q, kind="stable").drop_duplicates(group, keep="first")
    cheapest = cheapest.assign(_short=False)
    if keep_short:
        short = rows[~ok].assign(_d=_density(rows[~ok])).sort_values("_d", kind="stable")
        short = short.drop_duplicates(group, keep="first").drop(columns="_d")
        reached = pd.MultiIndex.from_frame(cheapest[group].astype(str))
        short = short[~pd.MultiIndex.from_frame(short[group].astype(str)).isin(reached)]
        cheapest = pd.concat([cheapest, short.assign(_short=True)])
    return cheapest.assign(mode="first to reach").sort_index()


def _pairs(rows: dict, a: str, b: str, key: list[str], c: dict, tol: float) -> pd.DataFrame:
    """Matched pairs of side ``a`` against side ``b`` with the scaled difference ``diff``, the
    relative density gap ``gap`` and ``dup`` (the anchor repeats a mask pair counted already)."""
    on, dm = key + ["seed"], c.get("at", "matched-density") == "matched-density"
    q = c.get("quantity", "value")
    ra_rows, rb_rows = rows[a], rows[b]
    if not dm and q != "value":
        ra_rows = _cheapest_reaching(ra_rows, on, q, tol, keep_short=True)
        rb_rows = _cheapest_reaching(rb_rows, on, q, tol)
    _check_single(ra_rows, on, IDENTITY, c["id"], a)
    _check_single(rb_rows, on, IDENTITY + ["partition"] + ([] if dm else ["mode"]), c["id"], b)
    if not dm and rb_rows.duplicated(on).any():
        raise ValueError(f"claim {c['id']!r}: side {b} has several rows per target and seed; "
                         f"add the column that tells them apart to 'same' or 'where'")
    m = match(ra_rows, rb_rows, tol if dm else math.inf, on=on, value=q, interpolate=dm)
    ra = ra_rows.loc[m["a_index"]]
    m["anchor_target"] = ra["target_sparsity"].to_numpy(float)
    m["anchor_mode"] = ra["mode"].astype(str).to_numpy()
    m["anchor_partition"] = ra["partition"].astype(str).to_numpy()
    m["diff"] = QUANTITIES[q][0] * (m["value_a"] - m["value_b"])
    m["gap"] = (m["density_b"] - m["density_a"]).abs() / m["density_a"]
    m["dup"] = ra["_dup"].to_numpy(bool) if "_dup" in ra.columns else False
    if "_short" in ra.columns:
        short = ra["_short"].to_numpy(bool)
        m.loc[short, "status"] = "unmatched"
        m.loc[short, "note"] = f"side {a} did not reach its target sparsity"
    return m.drop(columns=["a_index"])


def _did(ab: pd.DataFrame, cd: pd.DataFrame, key: list[str], sels: dict, cid: str,
         tol: float, dm: bool) -> pd.DataFrame:
    """(a - b) - (c - d), joined by seed, anchor target and mode (and partition if shared).

    Both differences are at matched density within themselves; at ``matched-density`` the
    anchors a and c must also be (within ``tol``), or the pair is unmatched. A joined pair repeats
    one counted already only when both of its anchors do."""
    join = key + ["seed", "anchor_target", "anchor_mode"]
    if _agree(sels, ["a", "c"], "partition"):
        join.append("anchor_partition")
    for frame in (ab, cd):
        if frame.duplicated(join).any():
            raise ValueError(f"claim {cid!r}: several pairs per seed and target in one "
                             f"difference; add the column that tells them apart to 'same'")
    m = ab.merge(cd, on=join, how="outer", suffixes=("", "_cd"), indicator=True)
    both = m["_merge"] == "both"
    cross = (m["density_a_cd"] - m["density_a"]).abs() / m["density_a"]
    apart = both & (cross > tol) if dm else np.zeros(len(m), bool)
    bad = ~both | (m["status"] == "unmatched") | (m["status_cd"] == "unmatched") | apart
    m["status"] = np.where(bad, "unmatched", np.where(
        (m["status"] == "interpolated") | (m["status_cd"] == "interpolated"),
        "interpolated", "matched"))
    m["note"] = np.where(apart, [f"anchors a and c differ in density by {100 * x:.1f}%"
                                 for x in cross.fillna(0)], m["note"].fillna(""))
    m["flags"] = [_join_flags(x, y) for x, y in zip(m["flags"].fillna(""),
                                                    m["flags_cd"].fillna(""))]
    m["diff"] = m["diff"] - m["diff_cd"]
    m["gap"] = np.fmax(np.fmax(m["gap"], m["gap_cd"]), cross)
    m["dup"] = m["dup"].fillna(False).astype(bool) & m["dup_cd"].fillna(False).astype(bool)
    if "anchor_partition_cd" in m.columns:
        m["anchor_partition"] = m["anchor_partition"].fillna("?") + "/" + \
            m["anchor_partition_cd"].fillna("?")
    return m[[c for c in ab.columns if c in m.columns]]


def _label(sel: Mapping | str) -> str:
    if sel == CHANCE:
        return "chance"
    return " ".join(str(v) for v in sel.values()) or "all"


def _describe(c: dict) -> str:
    cmp = c["compare"]
    d = f"{_label(cmp['a'])} - {_label(cmp['b'])}"
    if "c" in cmp:
        d = f"({d}) - ({_label(cmp['c'])} - {_label(cmp['d'])})"
    where = ", ".join(f"{k}={v}" for k, v in c.get("where", {}).items()
                      if (k, v) not in (("metric", "top1"), ("control", "ticket")))
    at = c.get("at", "matched-density")
    at = (f"matched density ({100 * c.get('tolerance', TOLERANCE):g}%)" if at != "target"
          else "same target sparsity, not density-matched")
    return f"{d}" + (f" [{where}]" if where else "") + f"; {at}"


def _base(c: dict, group: dict, comparison: str) -> dict:
    q = c.get("quantity", "value")
    return {"id": c["id"], "text": c["text"], "kind": c.get("kind", "contrast"),
            "group": group, "comparison": comparison, "expect": c["expect"],
            "margin": float(c.get("margin", 0.0)),
            "units": "rho" if c.get("kind") == "correlation" else QUANTITIES[q][1],
            "n": 0, "n_pairs": 0, "mean": math.nan, "lo": math.nan, "hi": math.nan,
            "unmatched": 0, "interpolated": 0, "flagged": 0, "flagged_comparisons": 0,
            "flag_reasons": "", "density_gap": math.nan, "comparisons": []}


def _not_run(c: dict, reason: str) -> dict:
    return {**_base(c, {}, _describe(c) if c.get("kind") != "correlation" else _corr_describe(c)),
            "verdict": "not run", "reason": reason}


def _comparison(sub: pd.DataFrame, cols: list[str], c: dict, alpha, method) -> dict:
    per_seed = sub.groupby("seed").agg(diff=("diff", "mean"),
                                       flags=("flags", lambda f: _join_flags(*f)))
    n_flag = int((per_seed["flags"] != "").sum())
    res = paired(per_seed["diff"], alpha, method, expect=c["expect"],
                 margin=float(c.get("margin", 0.0)), flagged=n_flag)
    return {**{k: sub[k].iloc[0] for k in cols}, **res, "flags": _join_flags(*per_seed["flags"]),
            "seeds": per_seed.index.tolist()}


def _group_verdict(c, group, g: pd.DataFrame, cols: list[str], alpha, method,
                   tol: float) -> dict:
    out = _base(c, group, _describe(c))
    used = g[g["status"] != "unmatched"]
    out["unmatched"] = int((g["status"] == "unmatched").sum())
    at_target = c.get("at", "matched-density") == "target"
    unequal_ok = at_target and c.get("quantity", "value") == "value"  # accuracy at unequal density
    comps = []
    for _, s in (used.groupby(cols, sort=True, dropna=False) if len(used) else []):
        comp = _comparison(s, cols, c, alpha, method)
        if unequal_ok and s["gap"].max() > tol:   # as the claim: reported, never judged
            comp.update(verdict="descriptive", reason=f"densities differ by up to "
                        f"{100 * s['gap'].max():.0f}%: reported, not judged")
        comps.append(comp)
    clean = used[~used.groupby(cols, dropna=False)["flags"].transform(
        lambda f: (f != "").any()).astype(bool)] if len(used) else used
    # the claim pairs seeds over one common set of comparisons: those every seed has
    seeds = clean["seed"].nunique() if len(clean) else 0
    complete = (clean.groupby(cols, dropna=False)["seed"].transform("nunique") == seeds
                if len(clean) else pd.Series(dtype=bool))
    partial = clean[~complete].groupby(cols, dropna=False).ngroups if len(clean) else 0
    clean = clean[complete] if len(clean) else clean
    counted = ({tuple(k) if isinstance(k, tuple) else (k,) for k, _ in
                clean.groupby(cols, sort=True, dropna=False)} if len(clean) else set())
    for comp in comps:  # which comparisons the claim's verdict rests on
        comp["counted"] = tuple(comp[k] for k in cols) in counted
    out.update(comparisons=comps, interpolated=int((clean["status"] == "interpolated").sum()),
               flagged=int((used["flags"] != "").sum()),
               flagged_comparisons=sum(x["flags"] != "" for x in comps),
               flag_reasons=_join_flags(*used["flags"]) if len(used) else "", n_pairs=len(clean))
    if len(clean) and not at_target:
        out["density_gap"] = float(clean["gap"].max())
    elif len(clean):
        out["density_gap"] = float((clean.density_a / clean.density_b).mean() - 1)
    left = []
    if out["unmatched"]:
        left.append(f"{out['unmatched']} unmatched pair(s)")
    if out["flagged_comparisons"]:
        left.append(f"{out['flagged_comparisons']} of {len(comps)} comparison(s) with flagged "
                    f"inputs ({out['flag_reasons']})")
    if partial:
        left.append(f"{partial} comparison(s) without a clean pair for each of the {seeds} seeds")
    unequal = unequal_ok and len(used) and used["gap"].max() > tol
    if clean.empty and unequal:
        return {**out, "verdict": "descriptive",
                "reason": f"masks whose densities differ by up to {100 * used['gap'].max():.0f}% "
                          f"are reported, not judged; and " + "; ".join(left or ["no clean pair"])}
    if clean.empty:
        why = ("every comparison has flagged inputs" if len(used) and not seeds else
               f"no comparison has a clean pair for each of the {seeds} seeds" if seeds else
               "no pair could be matched at equal density")
        return {**out, "verdict": "inconclusive", "reason": "; ".join([why] + left)}
    per_seed = clean.groupby("seed")["diff"].mean()
    res = paired(per_seed, alpha, method, expect=c["expect"], margin=float(c.get("margin", 0)))
    reason = res.pop("reason") + ("; left out: " + ", ".join(left) if left else "")
    if unequal:
        return {**out, **res, "verdict": "descriptive",
                "reason": f"accuracies of masks whose densities differ by up to "
                          f"{100 * clean['gap'].max():.0f}% are reported, not judged (verdicts "
                          f"compare at equal density); the interval would read: {reason}"}
    return {**out, **res, "reason": reason}


def same_mask_duplicates(df: pd.DataFrame) -> pd.Series:
    """True for each density-matched row whose mask is already in ``df`` as a source-matched row
    (or an earlier density-matched one): same ticket, control, seed, split, round and actual
    sparsity. Counting both would count one mask pair twice."""
    key = [c for c in ("experiment", "model", "dataset", "source_dataset", "partition", "method",
                       "ticket", "control", "protocol", "seed", "split", "metric", "round")
           if c in df.columns]
    if df.empty or "mode" not in df.columns:
        return pd.Series(False, index=df.index)
    tiered = df.assign(_s=pd.to_numeric(df["actual_sparsity"]).round(9),
                       _dm=(df["mode"] != "source-matched"),
                       _t=pd.to_numeric(df["target_sparsity"]))
    tiered = tiered[df["mode"].isin(["source-matched", "density-matched"])]
    order = tiered.sort_values(["_dm", "_t"], kind="stable")
    dup = order.duplicated(key + ["_s"], keep="first") & order["_dm"]
    return dup.reindex(df.index, fill_value=False)


def _evaluate_contrast(df: pd.DataFrame, c: dict, tolerance, alpha, method,
                       num_classes=None) -> list[dict]:
    dm = c.get("at", "matched-density") == "matched-density"
    df = df.assign(_dup=same_mask_duplicates(df) if dm else False)
    sels = _sides(c)
    rows = {}
    for side, sel in sels.items():
        rows[side] = select(df, sel) if all(k in df.columns for k in sel) else df.iloc[:0]
        if rows[side].empty:
            return [_not_run(c, f"side {side}: {_emptied_by(df, sel)}")]
    if c["compare"]["b"] == CHANCE:   # side a's rows at their chance level, unflagged
        level = _chance_level(rows["a"], num_classes)
        if np.isnan(level).any():
            return [_not_run(c, "side b: the chance level of side a's rows is not known "
                                "(num_classes)")]
        rows["b"] = rows["a"].assign(value=level, flags="")
        if "skilled_on" in c:
            rows["a"] = _flag_unskilled(df, rows["a"], sels["a"], c["skilled_on"],
                                        float(c["margin"]) / 100, num_classes)
    tol = float(c.get("tolerance", tolerance))
    key = _key(c, sels, ["a", "b"])
    pairs = _pairs(rows, "a", "b", key, c, tol)
    if "c" in sels:
        key = _key(c, sels, ["a", "b", "c", "d"])
        cd = _pairs(rows, "c", "d", _key(c, sels, ["c", "d"]), c, tol)
        pairs = _did(pairs, cd, key, sels, c["id"], tol, dm)
    pairs = pairs[~pairs["dup"].astype(bool)]  # a mask pair counted once (source-matched first)
    by = [b for b in c.get("by", ["model", "dataset", "source_dataset"]) if b in key]
    cols = [k for k in key if k not in by] + ["anchor_target", "anchor_mode", "anchor_partition"]
    groups = pairs.groupby(by, sort=True) if by else [((), pairs)]
    return [_group_verdict(c, dict(zip(by, k if isinstance(k, tuple) else (k,))), g, cols,
                           alpha, method, tol) for k, g in groups]


def _flag_unskilled(df: pd.DataFrame, rows: pd.DataFrame, sel: Mapping, split: str,
                    margin: float, num_classes) -> pd.DataFrame:
    """``rows`` with the flag ``chance`` added where the same ticket (and seed) is not above
    chance by ``margin`` on ``split``, or has no row there."""
    own = select(df, {**sel, "split": split})  # (sel fixes the metric)
    skilled = own["value"].astype(float).to_numpy() > _chance_level(own, num_classes) + margin
    sets = _flag_sets(rows)
    _add(sets, ~np.isin(_ticket_keys(rows), _ticket_keys(own)[skilled]), "chance")
    return rows.assign(flags=[";".join(sorted(f)) for f in sets])


# ---------------------------------------------------------------- claims: correlations

def _analysis_items(analyses):
    if isinstance(analyses, Mapping):
        for k, a in analyses.items():
            if not isinstance(k, tuple) or len(k) not in (3, 4):
                raise ValueError(f"analyses key {k!r} must be (model, seed, partition) or "
                                 f"(model, dataset, seed, partition)")
            names = (("model", "seed", "partition") if len(k) == 3
                     else ("model", "dataset", "seed", "partition"))
            yield {**dict(zip(names, k)), **a}
    else:
        yield from analyses


def layer_frame(analyses) -> pd.DataFrame:
    """One row per layer of every experiment-2 analysis, with :data:`LAYER_VARS`.

    ``analyses``: a mapping from (model, seed, partition) or (model, dataset, seed, partition)
    to a :func:`dilt.analysis.run_analysis` result, or a list of such results carrying those
    keys. An optional ``flags`` entry (str or list, e.g. failed_source) flags every layer.
    ``jaccard_ratio`` is Jaccard over its chance level d1 d2 / (d1 + d2 - d1 d2)."""
    rows = []
    for i, a in enumerate(_analysis_items(analyses)):
        for k in ("model", "seed", "partition", "layers"):
            if k not in a:
                raise ValueError(f"analyses[{i}]: missing key {k!r}")
        fl = a.get("flags", "")
        fl = ";".join(fl) if isinstance(fl, (list, tuple)) else str(fl or "")
        for r in a["layers"]:
            d1, d2 = (_num(r.get(k)) for k in ("density1", "density2"))
            chance = _num(r.get("chance_jaccard"))
            if math.isnan(chance) and d1 + d2 > 0:
                chance = d1 * d2 / (d1 + d2 - d1 * d2)
            jac = _num(r.get("jaccard"))
            rows.append({"model": a["model"], "dataset": a.get("dataset", "-"),
                         "partition": a["partition"], "seed": a["seed"], "flags": fl,
                         "layer": r.get("layer"), "depth": _num(r.get("index")),
                         "gw_ii": _num(r.get("gw_ii")), "jaccard": jac,
                         "jaccard_ratio": jac / chance if chance > 0 else math.nan,
                         "density": (d1 + d2) / 2})
    return pd.DataFrame(rows, columns=["model", "dataset", "partition", "seed", "flags", "layer",
                                       *LAYER_VARS])


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _corr_describe(c: dict) -> str:
    part = f" | {', '.join(c['partial'])}" if c.get("partial") else ""
    d = f"rho({c['x']}, {c['y']}{part})"
    cmp = c.get("compare")
    if cmp:
        d = f"{d}: {_label(cmp['a'])} - {_label(cmp['b'])}"
    where = ", ".join(f"{k}={v}" for k, v in c.get("where", {}).items())
    return d + (f" [{where}]" if where else "") + "; per seed, over layers"


def _seed_rhos(rows: pd.DataFrame, c: dict) -> pd.DataFrame:
    out = []
    for (m, ds, p, s), g in rows.groupby(["model", "dataset", "partition", "seed"], sort=True):
        r = correlation(g[c["x"]], g[c["y"]], [g[v] for v in c.get("partial", [])])
        out.append({"model": m, "dataset": ds, "partition": p, "seed": s, **r,
                    "flags": _join_flags(*g["flags"])})
    return pd.DataFrame(out)


def _one_per(t: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """One rho per ``on`` group (a seed): the mean over that side's partitions when it has
    several (testable only if each is), so partitions never count as extra seeds."""
    if not t.duplicated(on).any():
        return t
    rows = []
    for k, g in t.groupby(on, sort=True):
        ok = bool(g["testable"].all())
        rows.append({**dict(zip(on, k if isinstance(k, tuple) else (k,))),
                     "partition": "+".join(map(str, g["partition"])),
                     "rho": float(g["rho"].mean()) if ok else math.nan, "n": int(g["n"].sum()),
                     "testable": ok, "reason": next((r for r in g["reason"] if r), ""),
                     "flags": _join_flags(*g["flags"])})
    return pd.DataFrame(rows)


def _corr_group(c, group, t: pd.DataFrame, alpha, method) -> dict:
    out = _base(c, group, _corr_describe(c))
    ok = t[t["testable"]]
    out.update(n_pairs=len(ok), flagged=int((ok["flags"] != "").sum()),
               flag_reasons=_join_flags(*ok["flags"]) if len(ok) else "")
    if ok.empty:
        return {**out, "verdict": "not testable",
                "reason": "; ".join(sorted(set(t["reason"]))) or "no seed"}
    res = paired(ok["rho"], alpha, method, expect=c["expect"],
                 margin=float(c.get("margin", 0.0)), flagged=out["flagged"])
    skipped = len(t) - len(ok)
    if skipped:
        why = t.loc[~t["testable"], "reason"].iloc[0]
        res["reason"] += f"; {skipped} seed(s) not testable ({why})"
    return {**out, **res}


def _evaluate_correlation(layers: pd.DataFrame | None, c: dict, alpha, method) -> list[dict]:
    if layers is None or layers.empty:
        return [_not_run(c, "no experiment-2 analyses were given")]
    where = c.get("where", {})
    cmp = c.get("compare")
    sides = {k: {**where, **v} for k, v in (cmp or {"a": {}}).items()}
    rhos = {}
    for side, sel in sides.items():
        rows = select(layers, sel)
        if rows.empty:
            return [_not_run(c, f"side {side}: {_emptied_by(layers, sel)} in the analyses")]
        rhos[side] = _seed_rhos(rows, c)
    by = [b for b in c.get("by", ["model", "dataset"]) if b != "seed"]
    if cmp is None:
        t = rhos["a"]
        by = by + (["partition"] if "partition" not in by else [])
    else:
        on = by + ["seed"] + (["partition"] if sides["a"].get("partition") ==
                              sides["b"].get("partition") and "partition" not in by else [])
        t = _one_per(rhos["a"], on).merge(_one_per(rhos["b"], on), on=on, suffixes=("", "_b"))
        t["testable"] = t["testable"] & t["testable_b"]
        t["rho"] = t["rho"] - t["rho_b"]
        t["flags"] = [_join_flags(x, y) for x, y in zip(t["flags"], t["flags_b"])]
        t["reason"] = [x or y for x, y in zip(t["reason"], t["reason_b"])]
        if t.empty:
            return [_not_run(c, "no seed has an analysis on both sides")]
    return [_corr_group(c, dict(zip(by, k if isinstance(k, tuple) else (k,))), g, alpha, method)
            for k, g in t.groupby(by, sort=True)]


# ---------------------------------------------------------------- claims: entry points

def evaluate_claims(results: pd.DataFrame, claims: list, analyses=None, *,
                    tolerance: float = TOLERANCE, alpha: float = 0.05, method: str = "t",
                    chance_margin: float = CHANCE_MARGIN, num_classes=None,
                    density_floor: float | None = None) -> list[dict]:
    """One verdict per claim and group (``by``, default model / dataset / source dataset).

    Each verdict: id, text, kind, group, comparison, expect, margin, units, n (seeds), n_pairs,
    mean, lo, hi (the paired difference and its interval, in ``units``), alpha, method,
    verdict (supported / refuted / inconclusive / descriptive / not testable / not run), reason,
    unmatched, interpolated, flagged (pairs), flagged_comparisons, flag_reasons, density_gap (largest
    relative density difference counted; for ``at: target`` the mean density ratio - 1) and
    comparisons (the per-target verdicts). Flags are :func:`flag` of ``results`` with
    ``chance_margin``, ``num_classes`` and ``density_floor``.
    """
    check_claims(claims)
    df = results.copy()
    if len(df):
        df["flags"] = flag(df, margin=chance_margin, num_classes=num_classes,
                           density_floor=density_floor)
    layers = layer_frame(analyses) if analyses is not None else None
    out = []
    for c in claims:
        if c.get("kind") == "correlation":
            out += _evaluate_correlation(layers, c, alpha, method)
        elif df.empty:
            out.append(_not_run(c, "results.csv has no rows"))
        else:
            out += _evaluate_contrast(df, c, tolerance, alpha, method, num_classes)
    return out


# Classes per data set, for the chance flag where the caller passes no mapping.
KNOWN_NUM_CLASSES = {"digits": 10, "digits_rot": 10, "cifar10": 10, "cifar100": 100,
                     "imagenet": 1000, "stanford_cars": 196, "cub200": 200}
SETTINGS = ("tolerance", "alpha", "method", "chance_margin", "density_floor")


def analysis_records(analyses) -> list[dict]:
    """Experiment-2 results as :func:`layer_frame` reads them: each ``analysis.json`` dict with
    its ``meta`` (model, dataset, seed, partition) lifted to the top level. ``analyses``: a list
    of dicts or a mapping setting -> list (as :func:`dilt.reporting.analyses` returns)."""
    if analyses is None:
        return []
    items = (a for runs in analyses.values() for a in runs) if isinstance(analyses, Mapping) \
        else iter(analyses)
    out = []
    for a in items:
        meta = a.get("meta") or {}
        out.append({**{k: meta[k] for k in ("model", "dataset", "seed", "partition")
                       if k in meta}, **{k: v for k, v in a.items() if k != "meta"}})
    return out


def suite_verdicts(results, analyses=None, claims=None, num_classes=None,
                   settings: Mapping | None = None) -> list[dict]:
    """:func:`evaluate_claims` as the report runs it: ``results`` a DataFrame or results.csv path,
    ``analyses`` as :func:`analysis_records` takes them, ``claims`` the suite's declared claims
    (None or empty: :data:`DEFAULT_CLAIMS`), ``num_classes`` {dataset: K} (merged over
    :data:`KNOWN_NUM_CLASSES`), ``settings`` any of :data:`SETTINGS` (other keys ignored)."""
    if results is None or isinstance(results, (str, Path)):
        from dilt.report.aggregate import read_results
        results = (read_results(results) if results is not None and Path(results).exists()
                   else pd.DataFrame())
    if not isinstance(num_classes, numbers.Real):
        num_classes = {**KNOWN_NUM_CLASSES, **dict(num_classes or {})}
    kw = {k: v for k, v in dict(settings or {}).items() if k in SETTINGS}
    recs = analysis_records(analyses)
    return evaluate_claims(results, list(claims or DEFAULT_CLAIMS), recs or None,
                           num_classes=num_classes, **kw)


def write_claims(results_csv, analyses, claims, out_path, num_classes=None,
                 settings: Mapping | None = None) -> list[dict]:
    """The tables step: evaluate the suite's claims (:func:`suite_verdicts`), write the claims
    table to ``out_path`` (``tables/<suite>/claims.tex``) and the verdicts as JSON beside it
    (``claims.json``); return the verdicts."""
    verdicts = suite_verdicts(results_csv, analyses, claims, num_classes, settings)
    claims_table(verdicts, out_path)
    write_text(Path(out_path).with_suffix(".json"),
               json.dumps(verdicts, indent=1, default=_json_default, allow_nan=True) + "\n")
    return verdicts


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _fmt_diff(v: dict) -> str:
    if v["verdict"] in ("not run", "not testable") or math.isnan(v["mean"]):
        return "--"
    ci = "" if math.isnan(v["lo"]) else f" [{v['lo']:+.2f}, {v['hi']:+.2f}]"
    return f"{v['mean']:+.2f}{ci} {v['units']}"


def _group_label(group: dict) -> str:
    g = dict(group)
    src = g.pop("source_dataset", None)
    label = "/".join(str(x) for x in g.values()) or "all"
    return label + (f" (from {src})" if src not in (None, "-", g.get("dataset")) else "")


def claims_frame(verdicts: list[dict]) -> pd.DataFrame:
    """The claims table as plain text: claim, group, comparison, n, difference [CI], verdict.
    A claim evaluated in several groups states its text and comparison on its first row only."""
    rows, last = [], None
    for v in verdicts:
        first = v["id"] != last
        last = v["id"]
        rows.append({"Claim": f"{v['id']}: {v['text']}" if first else "",
                     "Group": _group_label(v["group"]),
                     "Comparison": v["comparison"] if first else "", "n": v["n"],
                     "Paired difference": _fmt_diff(v), "Verdict": v["verdict"]})
    return pd.DataFrame(rows, columns=["Claim", "Group", "Comparison", "n", "Paired difference",
                                       "Verdict"])


def claims_table(verdicts: list[dict], path: str | Path, *, caption: str | None = None,
                 label: str = "tab:claims") -> Path:
    """Write the claims as a booktabs ``longtable`` (every cell escaped; it may run over pages)
    to ``path``."""
    df = claims_frame(verdicts)
    alpha = verdicts[0]["alpha"] if verdicts and "alpha" in verdicts[0] else 0.05
    caption = caption or (
        f"Declared claims. Paired difference: mean over seeds of the per-seed difference, with its "
        f"{100 * (1 - alpha):.0f}\\% interval; supported / refuted when the interval lies entirely "
        f"on the expected / other side, otherwise inconclusive. Comparisons are at equal actual "
        f"density unless stated; descriptive: masks of unequal density, reported and not judged; "
        f"flagged tickets never count as support.")
    rr = r">{\raggedright\arraybackslash}"
    fmt = (rf"{rr}p{{0.22\linewidth}}{rr}p{{0.12\linewidth}}{rr}p{{0.24\linewidth}}r"
           rf"{rr}p{{0.14\linewidth}}{rr}p{{0.09\linewidth}}")
    head = " & ".join(escape(c) for c in df.columns) + r" \\"
    lines = [r"{\footnotesize\setlength{\tabcolsep}{3pt}", rf"\begin{{longtable}}{{{fmt}}}",
             rf"\caption{{{caption}}}\label{{{label}}}\\", r"\toprule", head, r"\midrule",
             r"\endfirsthead", r"\toprule", head, r"\midrule", r"\endhead",
             r"\bottomrule", r"\endlastfoot"]
    for _, row in df.iterrows():
        if row["Claim"] and len(lines) > 13:
            lines.append(r"\addlinespace")
        cells = [escape(x) for x in row]
        cells[1] = cells[1].replace("/", r"/\allowbreak{}").replace(r"\_", r"\_\allowbreak{}")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\end{longtable}}"]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def sentence(v: dict) -> str:
    """One plain sentence (not escaped) stating a verdict and the numbers that decided it."""
    group = ", ".join(f"{k} {x}" for k, x in v["group"].items())
    head = f"{v['id']} ({group})" if group else v["id"]
    if v["verdict"] in ("not run", "not testable"):
        return f"{head}: {v['verdict']}: {v['reason']}."
    return (f"{head}: {v['text']} The mean paired difference is {_fmt_diff(v)} over "
            f"{v['n']} seeds: {v['verdict']} ({v['reason']}).")


# ---------------------------------------------------------------- the proposal's hypotheses

# The registered methods the proposal's hypotheses name, by the names their own modules register
# (the report never spells a method's name).
LTH, COLT, DILT, RIGL, CAP = (m.name for m in (_imp.LTH, _imp.COLT, _imp.DILT, _rigl.RIGL, _cap.CAP))
HYPOTHESIS_METHODS = (LTH, COLT, DILT, RIGL, CAP)

_RT = {"experiment": "retrain", "split": "full", "metric": "top1", "control": "ticket", "protocol": "retrain"}
_TR = {"experiment": "transfer", "split": "full", "metric": "top1", "control": "ticket"}
_EXP = {"partition": "experts"}
_SIB = {"partition": "siblings"}
_LTH = {"method": LTH, "partition": "full"}


def _cost(cid, who, sel, quantity):
    unit = QUANTITIES[quantity][1]
    return {"id": cid, "text": f"{who} reaches each target sparsity in fewer {unit} than LTH.",
            "where": _RT, "compare": {"a": sel, "b": _LTH}, "quantity": quantity,
            "at": "target", "expect": "less"}


def _vs_iid(cid, text, where, a, b, **kw):
    """The experts' difference minus the iid siblings' difference, paired by seed."""
    return {"id": cid, "text": text, "where": where,
            "compare": {"a": {**a, **_EXP}, "b": {**b, **_EXP}, "c": {**a, **_SIB},
                        "d": {**b, **_SIB}}, "expect": "greater", **kw}


_COLT = {"method": COLT, **_EXP}
_CORE = {"method": DILT, "ticket": "core", **_EXP}
_UNION = {"method": DILT, "ticket": "union", **_EXP}

_DEFAULT = [
    _cost("E1-colt-rounds", "COLT", _COLT, "round"),
    _cost("E1-colt-epochs", "COLT", _COLT, "epochs"),
    _cost("E1-core-rounds", "The DiLT core", _CORE, "round"),
    _cost("E1-core-epochs", "The DiLT core", _CORE, "epochs"),
    {"id": "E1-union-core", "text": "The union ticket is more accurate than the core ticket.",
     "where": {**_RT, "method": DILT, **_EXP}, "compare": {"a": {"ticket": "union"},
                                                             "b": {"ticket": "core"}},
     "same": ["partition"], "expect": "greater"},
    _vs_iid("E1-union-core-vs-iid", "The union's gain over the core is larger for class-disjoint "
            "experts than for iid siblings.", {**_RT, "method": DILT}, {"ticket": "union"},
            {"ticket": "core"}, same=["partition"]),
    {"id": "E1-union-colt", "text": "The union ticket is more accurate than the COLT mask.",
     "where": {**_RT, **_EXP}, "compare": {"a": {"method": DILT, "ticket": "union"},
                                           "b": {"method": COLT}},
     "same": ["partition"], "expect": "greater"},
    {"id": "E1-union-rigl", "text": "The union ticket is competitive with RigL, trained sparse "
     "from scratch by its own protocol (within 1 point).",
     "where": _RT, "compare": {"a": _UNION, "b": {"method": RIGL, "partition": "full", "protocol": "own"}},
     "expect": "competitive", "margin": 1.0},
    {"id": "E1-union-cap", "text": "The union ticket is competitive with CAP, pruned from the "
     "dense model and fine-tuned by its own protocol (within 1 point).",
     "where": _RT, "compare": {"a": _UNION, "b": {"method": CAP, "partition": "full", "protocol": "own"}},
     "expect": "competitive", "margin": 1.0},
    {"id": "E1-ticket-random", "text": "Each IMP ticket (LTH's, COLT's, and DiLT's core, "
     "specialists and union) is more accurate than a random mask with its per-layer densities.",
     "where": {**{k: v for k, v in _RT.items() if k != "control"}, "method": [LTH, COLT, DILT]},
     "compare": {"a": {"control": "ticket"}, "b": {"control": "random"}},
     "same": ["method", "ticket", "partition", "mode", "target_sparsity"],
     "by": ["model", "dataset", "source_dataset", "method", "ticket"], "expect": "greater"},
    {"id": "E3-spec-did", "text": "Specialists are specialised: (spec1 on T1 - spec1 on T2) - "
     "(spec2 on T1 - spec2 on T2) > 0, so the class sets' difficulty cancels.",
     "where": {"experiment": "retrain", "metric": "top1", "control": "ticket", "method": DILT,
               **_EXP},
     "compare": {"a": {"ticket": "spec1", "split": "part1"},
                 "b": {"ticket": "spec1", "split": "part2"},
                 "c": {"ticket": "spec2", "split": "part1"},
                 "d": {"ticket": "spec2", "split": "part2"}},
     "same": ["partition", "mode", "target_sparsity"], "expect": "greater"},
    # Experiment 3's other predictions: the union is the most accurate on T_full, and each
    # specialist "collapses to near-chance accuracy" on the other partition's classes (read
    # here as within 10 points of chance on T_k; retrained on the full data, that is a strong
    # prediction)
    *({"id": f"E3-union-spec{k}", "text": f"The union ticket is more accurate on T_full than "
       f"specialist {k}.", "where": {**_RT, "method": DILT, **_EXP},
       "compare": {"a": {"ticket": "union"}, "b": {"ticket": f"spec{k}"}},
       "same": ["partition"], "expect": "greater"} for k in (1, 2)),
    *({"id": f"E3-spec{k}-chance", "text": f"Specialist {k} is near chance (within 10 points) on "
       f"the other partition's classes T_{3 - k}.",
       "where": {"experiment": "retrain", "metric": "top1", "control": "ticket", "method": DILT,
                 **_EXP},
       "compare": {"a": {"ticket": f"spec{k}", "split": f"part{3 - k}"}, "b": CHANCE},
       "skilled_on": f"part{k}",  # and more than 10 points above it on its own classes T_k
       "same": ["partition"], "expect": "equivalent", "margin": 10.0} for k in (1, 2)),
    # Experiment 4 transfers the masks at the source-matched target only (the proposal's
    # protocol), so the core and the union, or the core and LTH's mask, are never at one
    # density there: these comparisons are descriptive (reported, not judged).
    {"id": "E4-core-union-sm", "text": "The core mask transfers better than the union mask, at "
     "the source-matched target (the proposal's protocol; the two masks differ in density).",
     "where": {**_TR, "method": DILT, "mode": "source-matched", **_EXP},
     "compare": {"a": {"ticket": "core"}, "b": {"ticket": "union"}},
     "same": ["partition"], "at": "target", "expect": "greater"},
    {"id": "E4-core-lth-sm", "text": "The core mask transfers better than the LTH mask, at the "
     "source-matched target (the proposal's protocol; the two masks differ in density).",
     "where": _TR, "compare": {"a": {**_CORE, "mode": "source-matched"}, "b": _LTH},
     "at": "target", "expect": "greater"},
    {"id": "E2-gw-depth", "kind": "correlation", "text": "G_ii grows with depth.",
     "x": "depth", "y": "gw_ii", "where": _EXP, "expect": "greater"},
    {"id": "E2-gw-depth-vs-iid", "kind": "correlation", "text": "G_ii grows with depth more "
     "for class-disjoint experts than for iid siblings.", "x": "depth", "y": "gw_ii",
     "compare": {"a": _EXP, "b": _SIB}, "expect": "greater"},
    {"id": "E2-gw-jaccard", "kind": "correlation", "text": "Layers with larger G_ii keep less "
     "mask overlap than chance predicts (Jaccard over d/(2-d)), at equal depth and density.",
     "x": "jaccard_ratio", "y": "gw_ii", "partial": ["depth", "density"], "where": _EXP,
     "expect": "less"},
    {"id": "E2-gw-jaccard-vs-iid", "kind": "correlation", "text": "That anti-correlation is "
     "stronger for class-disjoint experts than for iid siblings.", "x": "jaccard_ratio",
     "y": "gw_ii", "partial": ["depth", "density"], "compare": {"a": _EXP, "b": _SIB},
     "expect": "less"},
]
# Plain, unaliased data (yaml.safe_dump writes it without anchors): paste under a suite's
# ``claims:`` key in workflow_config.yaml.
DEFAULT_CLAIMS = json.loads(json.dumps(_DEFAULT))

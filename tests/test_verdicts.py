"""Verdicts: density matching, flags, paired statistics and declared claims on synthetic data."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dilt.report import verdicts as V

BASE = {"experiment": "retrain", "model": "mlp", "dataset": "digits", "source_dataset": "digits",
        "partition": "contiguous2", "method": "dilt", "ticket": "core", "mode": "source-matched",
        "control": "ticket", "target_sparsity": 0.9, "actual_sparsity": 0.9, "round": 3,
        "trainings": 6, "empty_layers": 0, "min_layer_kept": 10, "collapsed": False, "seed": 0,
        "split": "full", "metric": "top1", "value": 0.9, "best_epoch": 1, "val_top1": 0.9,
        "protocol": "retrain", "epochs": 36.0, "min_layer_density": 0.1,
        "bottleneck_layers": 0, "flags": ""}

UNION_CORE = {"id": "H1", "text": "union beats core.", "expect": "greater",
              "where": {"experiment": "retrain", "split": "full", "metric": "top1",
                        "control": "ticket", "method": "dilt", "partition": "experts"},
              "compare": {"a": {"ticket": "union"}, "b": {"ticket": "core"}},
              "same": ["partition"]}


def frame(*rows):
    return pd.DataFrame([{**BASE, **r} for r in rows])


def union_core(diffs, core=0.8, sparsity=(0.9, 0.9), **union_extra):
    """Union and core of seeds 0.. with union - core = diffs (fractions)."""
    rows = []
    for s, d in enumerate(diffs):
        rows.append({"ticket": "core", "seed": s, "value": core, "actual_sparsity": sparsity[1]})
        rows.append({"ticket": "union", "seed": s, "value": core + d,
                     "actual_sparsity": sparsity[0], **union_extra})
    return frame(*rows)


def one(df, claim=UNION_CORE, **kw):
    out = V.evaluate_claims(df, [claim], num_classes=10, **kw)
    assert len(out) == 1
    return out[0]


# ---------------------------------------------------------------- paired statistics

def test_t_interval_equals_scipy():
    d = np.array([1.0, 2.5, 0.7, 1.9])
    r = V.paired(d)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
    assert r["mean"] == pytest.approx(d.mean())
    assert (r["lo"], r["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["verdict"] == "supported" and r["n"] == 4


@pytest.mark.parametrize("diffs, expect, verdict", [
    ([-3.0, -2.0, -2.5], "greater", "refuted"),
    ([2.0, -1.0, 0.5], "greater", "inconclusive"),          # crosses 0
    ([5.0, 6.0], "greater", "inconclusive"),                 # two seeds only
    ([-3.0, -2.0, -2.5], "less", "supported"),
    ([-0.2, 0.1, -0.1], "competitive", "supported"),         # lower end above -1
    ([-3.0, -2.5, -2.8], "competitive", "refuted"),          # upper end below -1
])
def test_paired_verdicts(diffs, expect, verdict):
    margin = 1.0 if expect == "competitive" else 0.0
    assert V.paired(diffs, expect=expect, margin=margin)["verdict"] == verdict


def test_flagged_input_is_never_support():
    r = V.paired([5.0, 6.0, 7.0], flagged=1)
    assert r["verdict"] == "inconclusive" and "flagged" in r["reason"]


def test_bootstrap_interval_brackets_mean_within_range():
    d = np.array([1.0, 2.0, 1.5, 2.2, 0.9])
    r = V.paired(d, method="bootstrap")
    assert d.min() <= r["lo"] <= d.mean() <= r["hi"] <= d.max()


# ---------------------------------------------------------------- matching

def test_interpolation_reproduces_linear_in_log_curve():
    a0, b0 = 0.95, 0.04
    dens = [0.2, 0.1, 0.05]
    b = frame(*[{"seed": 0, "actual_sparsity": 1 - d, "value": a0 + b0 * math.log(d)}
                for d in dens])
    a = frame({"seed": 0, "actual_sparsity": 1 - 0.14, "value": 0.5})
    m = V.match(a, b)
    assert m.status.tolist() == ["interpolated"]
    assert m.value_b.iloc[0] == pytest.approx(a0 + b0 * math.log(0.14))


def test_match_tolerance_and_unbracketed():
    b = frame({"seed": 0, "actual_sparsity": 0.9, "value": 0.8})
    close = frame({"seed": 0, "actual_sparsity": 1 - 0.1 * 1.015})   # 1.5% denser
    far = frame({"seed": 0, "actual_sparsity": 1 - 0.1 * 1.05})      # 5% denser, no bracket
    other_seed = frame({"seed": 1})
    assert V.match(close, b).status.tolist() == ["matched"]
    assert V.match(far, b).status.tolist() == ["unmatched"]
    assert V.match(other_seed, b).status.tolist() == ["unmatched"]


# ---------------------------------------------------------------- claims: true/false/borderline

@pytest.mark.parametrize("diffs, verdict", [
    ([0.05, 0.06, 0.04], "supported"),
    ([-0.05, -0.06, -0.04], "refuted"),
    ([0.01, -0.01, 0.005], "inconclusive"),
])
def test_union_core_claim(diffs, verdict):
    v = one(union_core(diffs))
    assert v["verdict"] == verdict
    assert v["mean"] == pytest.approx(100 * np.mean(diffs))
    assert v["n"] == 3 and v["unmatched"] == 0 and v["group"]["model"] == "mlp"


def test_density_mismatch_is_not_counted():
    v = one(union_core([0.05, 0.06, 0.04], sparsity=(0.85, 0.9)))  # union 1.5x denser
    assert v["verdict"] == "inconclusive" and v["n_pairs"] == 0 and v["unmatched"] == 3
    df = union_core([0.05, 0.06, 0.04])
    df.loc[(df.seed == 2) & (df.ticket == "union"), "actual_sparsity"] = 1 - 0.1 * 1.05
    v = one(df)
    assert v["unmatched"] == 1 and v["n"] == 2 and v["verdict"] == "inconclusive"
    assert v["mean"] == pytest.approx(100 * np.mean([0.05, 0.06]))


def test_denser_union_matched_by_interpolating_the_core_curve():
    rows = []
    for s, gain in enumerate([0.03, 0.04, 0.05]):
        for d in (0.2, 0.1):    # core at two rounds bracketing the union's density 0.14
            rows.append({"ticket": "core", "seed": s, "actual_sparsity": 1 - d,
                         "target_sparsity": round(1 - d, 2), "value": 0.9 + 0.05 * math.log(d)})
        rows.append({"ticket": "union", "seed": s, "actual_sparsity": 0.86,
                     "value": 0.9 + 0.05 * math.log(0.14) + gain})
    v = one(frame(*rows))
    assert v["interpolated"] == 3 and v["verdict"] == "supported"
    assert v["mean"] == pytest.approx(100 * 0.04)


# ---------------------------------------------------------------- flags

def test_flag_reasons():
    df = frame({"collapsed": True, "empty_layers": 1},
               {"bottleneck_layers": 2, "seed": 1},
               {"value": 0.12, "seed": 2},                                   # 10 classes: chance
               {"seed": 3, "flags": "failed_source"},
               {"seed": 4, "ticket": "spec1", "value": 0.9},                 # fine on full ...
               {"seed": 4, "ticket": "spec1", "split": "part2", "value": 0.2},  # ... chance on T2
               {"seed": 5, "min_layer_density": 0.001})
    f = V.flag(df, margin=0.05, num_classes=10, density_floor=0.01).tolist()
    assert f == ["collapsed", "bottleneck", "chance", "failed_source", "", "", "bottleneck"]
    with pytest.raises(ValueError, match="'digits'"):
        V.flag(df, num_classes={"cifar10": 10})


@pytest.mark.parametrize("bad", [{"collapsed": True, "empty_layers": 1},
                                 {"bottleneck_layers": 1}, {"flags": "failed_source"}])
def test_flagged_union_is_never_support(bad):
    df = union_core([0.05, 0.06, 0.04])
    df.loc[(df.seed == 0) & (df.ticket == "union"), list(bad)] = list(bad.values())
    v = one(df)
    assert v["verdict"] == "inconclusive" and v["flagged"] == 1
    assert v["comparisons"][0]["verdict"] == "inconclusive"


def test_chance_core_is_never_support():
    v = one(union_core([0.7, 0.75, 0.72], core=0.11))      # union "wins" against a dead core
    assert v["verdict"] == "inconclusive" and "chance" in v["flag_reasons"]


def test_flagged_comparison_left_out_of_the_claim():
    clean = union_core([0.05, 0.06, 0.04])
    dirty = union_core([0.5, 0.5, 0.5], sparsity=(0.95, 0.95), bottleneck_layers=1)
    dirty["target_sparsity"] = 0.95
    v = one(pd.concat([clean, dirty], ignore_index=True))
    assert v["verdict"] == "supported" and v["flagged_comparisons"] == 1
    assert v["mean"] == pytest.approx(100 * np.mean([0.05, 0.06, 0.04]))
    assert sorted(c["verdict"] for c in v["comparisons"]) == ["inconclusive", "supported"]


def test_fewer_than_three_seeds_is_inconclusive():
    v = one(union_core([0.2, 0.3]))
    assert v["verdict"] == "inconclusive" and "n = 2" in v["reason"]


# ---------------------------------------------------------------- other claim kinds

DID = V.DEFAULT_CLAIMS[[c["id"] for c in V.DEFAULT_CLAIMS].index("E3-spec-did")]


@pytest.mark.parametrize("own", [0.03, 0.0])
def test_difference_in_differences_cancels_class_set_difficulty(own):
    offset, rng, rows = 0.2, np.random.default_rng(0), []
    truth = []
    for s in range(4):
        noise = rng.normal(0, 0.005, size=4)
        vals = {}
        for i, (k, j) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
            vals[k, j] = 0.6 + offset * (j == 1) + own * (j == k) + noise[i]
            rows.append({"ticket": f"spec{k}", "split": f"part{j}", "seed": s,
                         "actual_sparsity": 0.95 if k == 1 else 0.9505, "value": vals[k, j]})
            rows.append({"ticket": f"spec{k}", "split": "full", "seed": s,
                         "actual_sparsity": 0.95 if k == 1 else 0.9505, "value": 0.7})
        truth.append((vals[1, 1] - vals[1, 2]) - (vals[2, 1] - vals[2, 2]))
    v = one(frame(*rows), DID)
    assert v["mean"] == pytest.approx(100 * np.mean(truth))
    assert v["mean"] == pytest.approx(100 * 2 * own, abs=2.0)   # the +20-point offset cancels
    assert v["verdict"] == ("supported" if own else "inconclusive")


def test_difference_in_differences_needs_matched_anchors():
    """(a - b) - (c - d) compares ticket a with ticket c too: spec1 at 30% density against
    spec2 at 2% is never counted, however large the difference."""
    rows = []
    for s in range(3):
        for k, sparsity in ((1, 0.70), (2, 0.98)):
            for j in (1, 2):
                rows.append({"ticket": f"spec{k}", "split": f"part{j}", "seed": s,
                             "actual_sparsity": sparsity, "value": 0.9 if j == k else 0.5})
    v = one(frame(*rows), DID)
    assert v["verdict"] == "inconclusive" and v["n_pairs"] == 0 and v["unmatched"] == 3


@pytest.mark.parametrize("claim_id", ["E1-union-core-vs-iid"])
def test_difference_in_differences_reports_its_largest_density_gap(claim_id):
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == claim_id)
    rows = []
    for s, g in enumerate([0.04, 0.05, 0.06]):
        for part, sparsity, gain in (("contiguous2", 0.9, g), ("iid2", 0.9015, 0.0)):
            rows += [{"partition": part, "ticket": "union", "seed": s, "actual_sparsity": sparsity,
                      "value": 0.8 + gain + 0.001 * s},
                     {"partition": part, "ticket": "core", "seed": s, "actual_sparsity": sparsity,
                      "value": 0.8}]
    v = one(frame(*rows), claim)
    assert v["verdict"] == "supported" and v["n"] == 3
    assert v["density_gap"] == pytest.approx(0.0015 / 0.1)   # experts' union vs the siblings'


def test_rounds_at_same_target():
    claim = V.DEFAULT_CLAIMS[0]   # COLT reaches each target in fewer rounds than LTH
    rows = []
    for s in range(3):
        rows.append({"method": "colt", "ticket": "mask", "mode": "-", "seed": s, "round": 2})
        rows.append({"method": "lth", "ticket": "mask", "mode": "-", "partition": "-",
                     "seed": s, "round": 4, "actual_sparsity": 0.9})
    v = one(frame(*rows), claim)
    assert v["verdict"] == "supported" and v["mean"] == -2 and v["units"] == "rounds"


def test_a_cost_counts_only_rows_that_reached_the_target():
    """The core's density-matched row of round 2 is at 80% sparsity: it has not reached 90%, so
    the core's cost is its first row that has (round 3), not the mean of both rows."""
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E1-core-rounds")
    rows = []
    for s in range(3):
        rows += [{"ticket": "core", "mode": "source-matched", "seed": s, "round": 3,
                  "actual_sparsity": 0.96},
                 {"ticket": "core", "mode": "density-matched", "seed": s, "round": 2,
                  "actual_sparsity": 0.80},
                 {"method": "lth", "ticket": "mask", "mode": "-", "partition": "-", "seed": s,
                  "round": 3 + (s > 0), "actual_sparsity": 0.90}]
    v = one(frame(*rows), claim)
    assert [c["anchor_mode"] for c in v["comparisons"]] == ["first to reach"]
    assert v["mean"] == pytest.approx(-2 / 3) and v["verdict"] == "inconclusive"
    # a density-matched row that does reach the target and is cheaper is the cost
    cheaper = frame(*rows).assign(actual_sparsity=lambda d: np.where(
        d["mode"] == "density-matched", 0.905, d["actual_sparsity"]))
    w = one(cheaper, claim)
    assert w["mean"] == pytest.approx(-1 - 2 / 3) and w["n"] == 3


def test_a_side_that_never_reached_the_target_is_unmatched_not_dropped():
    """COLT's run stopped at 80% and never reached 90%: that comparison is counted as unmatched
    and said so, not left out as if it had never been made (LTH short of it likewise)."""
    claim = V.DEFAULT_CLAIMS[0]   # COLT reaches each target in fewer rounds than LTH
    rows = []
    for s in range(3):
        for t, colt_s in ((0.8, 0.8), (0.9, 0.8)):
            rows += [{"method": "colt", "ticket": "mask", "mode": "-", "seed": s, "round": 2,
                      "target_sparsity": t, "actual_sparsity": colt_s},
                     {"method": "lth", "ticket": "mask", "mode": "-", "partition": "-", "seed": s,
                      "round": 3 + (t > 0.85), "target_sparsity": t, "actual_sparsity": t}]
    v = one(frame(*rows), claim)
    assert v["unmatched"] == 3 and v["n"] == 3 and v["mean"] == -1
    assert "3 unmatched" in v["reason"]
    lth_short = frame(*rows).assign(actual_sparsity=lambda d: np.where(   # COLT reaches 90%
        (d.method == "lth") & (d.target_sparsity > 0.85), 0.8, d.target_sparsity))
    w = one(lth_short, claim)
    assert w["unmatched"] == 3 and w["n"] == 3


def test_accuracy_at_the_same_target_but_unequal_density_is_descriptive():
    """E4-core-lth-sm compares masks at one target whose densities differ (the proposal's
    source-matched protocol): its numbers are reported, never judged supported or refuted."""
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E4-core-lth-sm")
    tr = {"experiment": "transfer", "dataset": "digits_rot", "target_sparsity": 0.95}
    rows = []
    for s, g in enumerate([0.02, 0.03, 0.04]):
        rows += [{**tr, "ticket": "core", "mode": "source-matched", "seed": s,
                  "actual_sparsity": 0.99, "value": 0.6 + g},
                 {**tr, "method": "lth", "ticket": "mask", "mode": "-", "partition": "-",
                  "seed": s, "actual_sparsity": 0.95, "value": 0.6}]
    v = one(frame(*rows), claim)
    assert v["verdict"] == "descriptive" and v["mean"] == pytest.approx(3.0)
    assert "not judged" in v["reason"] and v["lo"] > 0
    # so is each of its comparisons (claims.json and the appendix list them one by one)
    assert [c["verdict"] for c in v["comparisons"]] == ["descriptive"]
    assert "not judged" in v["comparisons"][0]["reason"]
    same = one(frame(*rows).assign(actual_sparsity=0.95), claim)   # equal density: judged
    assert same["verdict"] == "supported"


def test_ticket_random_claim_is_judged_per_method_and_ticket():
    """E1-ticket-random claims every ticket beats its random control: one verdict per method and
    ticket (an average over tickets would hide a ticket that does not), and baselines without a
    random control are no unmatched pairs of it."""
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E1-ticket-random")
    rows = []
    for s, g in enumerate([0.05, 0.06, 0.04]):
        for method, ticket, part, gain in (("dilt", "core", "contiguous2", g),
                                           ("dilt", "union", "contiguous2", -g),
                                           ("lth", "mask", "-", g)):
            rows += [{"method": method, "ticket": ticket, "partition": part, "seed": s,
                      "control": "ticket", "value": 0.8 + gain},
                     {"method": method, "ticket": ticket, "partition": part, "seed": s,
                      "control": "random", "value": 0.8}]
        rows.append({"method": "snip", "ticket": "mask", "partition": "-", "seed": s,
                     "mode": "-", "value": 0.7})
    out = V.evaluate_claims(frame(*rows), [claim], num_classes=10)
    got = {(v["group"]["method"], v["group"]["ticket"]): v for v in out}
    assert set(got) == {("dilt", "core"), ("dilt", "union"), ("lth", "mask")}
    assert [got[k]["verdict"] for k in sorted(got)] == ["supported", "refuted", "supported"]
    assert all(v["unmatched"] == 0 for v in out)


def test_unequal_density_stays_descriptive_when_every_comparison_is_flagged():
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E4-core-lth-sm")
    tr = {"experiment": "transfer", "dataset": "digits_rot", "target_sparsity": 0.95}
    rows = []
    for s in range(3):
        rows += [{**tr, "ticket": "core", "mode": "source-matched", "seed": s,
                  "actual_sparsity": 0.99, "value": 0.6, "bottleneck_layers": 1},
                 {**tr, "method": "lth", "ticket": "mask", "mode": "-", "partition": "-",
                  "seed": s, "actual_sparsity": 0.95, "value": 0.6}]
    v = one(frame(*rows), claim)
    assert v["verdict"] == "descriptive" and "not judged" in v["reason"]


def test_claim_pairs_seeds_over_comparisons_every_seed_has():
    """Seeds 0 and 1 are matched only at 90%, seed 2 only at 95%: no comparison has three seeds,
    so the claim is not decided on three seeds from different targets."""
    rows = []
    for s, g in enumerate([0.05, 0.06, 0.04]):
        t, u = (0.9, 0.95) if s < 2 else (0.95, 0.9)
        rows += [{"ticket": "core", "seed": s, "target_sparsity": t, "actual_sparsity": t,
                  "value": 0.8},
                 {"ticket": "union", "seed": s, "target_sparsity": t, "actual_sparsity": t,
                  "value": 0.8 + g},
                 {"ticket": "union", "seed": s, "target_sparsity": u, "actual_sparsity": 0.5,
                  "value": 0.9}]
    v = one(frame(*rows))
    assert v["verdict"] == "inconclusive" and v["n"] == 0
    assert "no comparison has a clean pair for each of the 3 seeds" in v["reason"]
    # a third seed at 90% completes that comparison; the 95% one is left out and said so
    extra = frame({"ticket": "core", "seed": 2, "actual_sparsity": 0.9, "value": 0.8},
                  {"ticket": "union", "seed": 2, "actual_sparsity": 0.9, "value": 0.83})
    w = one(pd.concat([frame(*rows), extra], ignore_index=True))
    assert w["n"] == 3 and w["verdict"] == "supported"
    assert "1 comparison(s) without a clean pair for each of the 3 seeds" in w["reason"]


def test_missing_method_is_not_run():
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E1-union-rigl")
    v = one(union_core([0.05, 0.06, 0.04]), claim)
    # the first selector that empties a side is named: RigL's own protocol rows are missing
    assert v["verdict"] == "not run" and ("rigl" in v["reason"] or "protocol='own'" in v["reason"])


def test_ambiguous_side_raises_naming_key():
    claim = {**UNION_CORE, "where": {k: v for k, v in UNION_CORE["where"].items()
                                     if k != "control"}}
    df = union_core([0.05, 0.06, 0.04])
    rnd = df.copy()
    rnd["control"] = "random"
    with pytest.raises(ValueError, match="'control'"):
        one(pd.concat([df, rnd], ignore_index=True), claim)


def test_default_claims_evaluate_on_partial_results():
    out = V.evaluate_claims(union_core([0.05, 0.06, 0.04]), V.DEFAULT_CLAIMS, num_classes=10)
    by_id = {v["id"]: v for v in out}
    assert set(by_id) == {c["id"] for c in V.DEFAULT_CLAIMS}
    assert by_id["E1-union-core"]["verdict"] == "supported"
    assert by_id["E2-gw-depth"]["verdict"] == "not run"


# ---------------------------------------------------------------- correlations

def test_correlation_three_points_not_testable():
    assert V.correlation([1, 2, 3], [2, 1, 3])["testable"] is False
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    assert V.correlation(x, y)["rho"] == pytest.approx(stats.spearmanr(x, y).statistic)


def test_partial_correlation_removes_shared_depth():
    rng = np.random.default_rng(1)
    depth = np.arange(12.0)
    x, y = depth + rng.normal(0, 3, 12), depth + rng.normal(0, 3, 12)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, depth))
    res = [r - np.polyval(np.polyfit(rz, r, 1), rz) for r in (rx, ry)]
    got = V.correlation(x, y, [depth])
    assert got["rho"] == pytest.approx(stats.pearsonr(*res).statistic)
    assert abs(got["rho"]) < V.correlation(x, y)["rho"]


def _analysis(n_layers, slope):
    return {"layers": [{"layer": f"l{i}", "index": i, "gw_ii": 0.1 + slope * i, "jaccard": 0.3,
                        "density1": 0.1, "density2": 0.1} for i in range(n_layers)]}


def test_correlation_claims_from_analyses():
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E2-gw-depth")
    few = {("mlp", s, "contiguous2"): _analysis(3, 0.1) for s in range(3)}
    assert one(frame(), claim, analyses=few)["verdict"] == "not testable"
    many = {("mlp", s, "contiguous2"): _analysis(6, 0.1) for s in range(3)}
    v = one(frame(), claim, analyses=many)
    assert v["verdict"] == "supported" and v["mean"] == pytest.approx(1.0) and v["n"] == 3
    many[("mlp", 0, "contiguous2")]["flags"] = "failed_source"
    assert one(frame(), claim, analyses=many)["verdict"] == "inconclusive"
    vs = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E2-gw-depth-vs-iid")
    both = {**{("mlp", s, "contiguous2"): _analysis(6, 0.1) for s in range(3)},
            **{("mlp", s, "iid2"): _analysis(6, -0.1) for s in range(3)}}
    v = one(frame(), vs, analyses=both)
    assert v["verdict"] == "supported" and v["mean"] == pytest.approx(2.0)


def test_layer_frame_chance_ratio():
    lf = V.layer_frame({("mlp", 0, "contiguous2"): {"layers": [
        {"layer": "a", "index": 0, "gw_ii": 0.1, "jaccard": 0.2, "density1": 0.1,
         "density2": 0.3}]}})
    assert lf.jaccard_ratio.iloc[0] == pytest.approx(0.2 / (0.03 / (0.4 - 0.03)))


# ---------------------------------------------------------------- declarations and the table

@pytest.mark.parametrize("change, key", [
    ({"expect": "bigger"}, "expect"),
    ({"colour": 1}, "colour"),
    ({"compare": {"a": {"ticket": "union"}}}, "compare"),
    ({"compare": {"a": {"colour": "x"}, "b": {}}}, "compare.a.colour"),
    ({"expect": "competitive"}, "margin"),
    ({"at": "sometimes"}, "at"),
    ({"same": ["nope"]}, "same"),
    ({"kind": "correlation", "x": "depth", "y": "height", "compare": None}, "y"),
])
def test_check_claims_rejects_in_one_line(change, key):
    bad = {k: v for k, v in {**UNION_CORE, **change}.items() if v is not None}
    with pytest.raises(ValueError) as e:
        V.check_claims([V.DEFAULT_CLAIMS[0], bad])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("claims[1] (H1)") and f"'{key}'" in msg


def test_check_claims_duplicate_id():
    with pytest.raises(ValueError, match=r"claims\[1\].*'id'"):
        V.check_claims([UNION_CORE, UNION_CORE])


def test_claims_table_is_escaped_booktabs(tmp_path):
    claim = {**UNION_CORE, "id": "H1_a", "text": "union > core & 100% sure"}
    path = V.claims_table([one(union_core([0.05, 0.06, 0.04]), claim)], tmp_path / "c.tex")
    tex = path.read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "H1\\_a" in tex and "\\& 100\\% sure" in tex
    assert "+5.00 [" in tex and "supported" in tex


# ---------------------------------------------------------------- the claims table from results.csv

def _claims_csv(tmp_path):
    """Three model groups with union - core = +5 (true), -5 (false), +-1 around 0 (borderline)
    points; a fourth whose union is 50% denser than any core row (unmatched); a fifth whose
    core is collapsed in every seed."""
    rows = []
    cases = {"true": [0.05, 0.06, 0.04], "false": [-0.05, -0.06, -0.04],
             "border": [0.01, -0.01, 0.002], "mismatch": [0.05, 0.06, 0.04],
             "collapsed": [0.05, 0.06, 0.04]}
    for model, diffs in cases.items():
        for s, d in enumerate(diffs):
            core = {"model": model, "ticket": "core", "seed": s, "value": 0.8}
            union = {"model": model, "ticket": "union", "seed": s, "value": 0.8 + d}
            if model == "mismatch":
                union["actual_sparsity"] = 0.85          # density 0.15 vs the core's 0.10
            if model == "collapsed":
                core.update(collapsed=True, empty_layers=1)
            rows += [core, union]
    df = frame(*rows)
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    return path


def test_write_claims_table_verdicts(tmp_path):
    path = _claims_csv(tmp_path)
    out = tmp_path / "tables" / "claims.tex"
    got = V.write_claims(path, None, [UNION_CORE], out, {"digits": 10})
    by = {v["group"]["model"]: v for v in got}
    assert by["true"]["verdict"] == "supported"
    assert by["false"]["verdict"] == "refuted"
    assert by["border"]["verdict"] == "inconclusive"
    assert by["mismatch"]["verdict"] == "inconclusive" and by["mismatch"]["unmatched"] == 3
    assert by["mismatch"]["n_pairs"] == 0
    assert by["collapsed"]["verdict"] == "inconclusive"
    assert "collapsed" in by["collapsed"]["flag_reasons"]
    # the interval, computed here with scipy
    d = np.array([5.0, 6.0, 4.0])
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    tex = out.read_text()
    assert f"+5.00 [{lo:+.2f}, {hi:+.2f}] points" in tex
    assert "longtable" in tex and tex.count("& refuted \\\\") == 1 and tex.count("& supported \\\\") == 1
    assert (out.with_suffix(".json")).exists()


def test_write_claims_falls_back_to_default_claims(tmp_path):
    path = _claims_csv(tmp_path)
    got = V.write_claims(path, None, None, tmp_path / "c.tex")
    assert {v["id"] for v in got} == {c["id"] for c in V.DEFAULT_CLAIMS}


def test_same_mask_in_sm_and_dm_counted_once():
    rows = []
    for s in range(3):
        for mode, t in (("source-matched", 0.9), ("density-matched", 0.9),
                        ("density-matched", 0.95)):
            for control, v in (("ticket", 0.85), ("random", 0.80 - 0.01 * s)):
                rows.append({"seed": s, "mode": mode, "target_sparsity": t, "control": control,
                             "value": v, "round": 3, "actual_sparsity": 0.9})
    df = frame(*rows)
    dup = V.same_mask_duplicates(df)
    assert dup.sum() == 12 and not dup[df["mode"] == "source-matched"].any()
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E1-ticket-random")
    v = one(df, claim)
    assert len(v["comparisons"]) == 1 and v["comparisons"][0]["anchor_mode"] == "source-matched"


def test_difference_in_differences_counts_a_repeated_mask_pair_once():
    """E3-spec-did: the density-matched tickets at 90% are the source-matched ones (round 3);
    at 95% they are round 4's. Round 3's difference counts once, not twice."""
    rows = []
    for s in range(3):
        for mode, t, r, sparsity, own in (("source-matched", 0.9, 3, 0.93, 0.0),
                                          ("density-matched", 0.9, 3, 0.93, 0.0),
                                          ("density-matched", 0.95, 4, 0.96, 0.05)):
            for k in (1, 2):
                for j in (1, 2):
                    rows.append({"ticket": f"spec{k}", "split": f"part{j}", "seed": s,
                                 "mode": mode, "target_sparsity": t, "round": r,
                                 "actual_sparsity": sparsity,
                                 "value": 0.6 + (own + 0.001 * s) * (j == k)})
    v = one(frame(*rows), DID)
    assert sorted((c["anchor_target"], c["anchor_mode"]) for c in v["comparisons"]) == [
        (0.9, "source-matched"), (0.95, "density-matched")]
    assert v["mean"] == pytest.approx((0.2 + 10.2) / 2)


def test_correlation_compare_takes_one_rho_per_seed_and_side():
    """Two expert and two sibling partitions per seed: partitions are averaged within a seed,
    never counted as extra seeds (two seeds stay two: inconclusive)."""
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E2-gw-depth-vs-iid")
    an = {}
    for s in range(2):
        for part, slope in (("contiguous2", 0.1), ("random2", 0.1), ("iid2", -0.1),
                            ("iid3", -0.1)):
            an[("mlp", s, part)] = _analysis(6, slope)
    v = one(frame(), claim, analyses=an)
    assert v["n"] == 2 and v["verdict"] == "inconclusive" and v["mean"] == pytest.approx(2.0)
    an.update({("mlp", 2, p): _analysis(6, 0.1 if p in ("contiguous2", "random2") else -0.1)
               for p in ("contiguous2", "random2", "iid2", "iid3")})
    assert one(frame(), claim, analyses=an)["n"] == 3


def test_bootstrap_needs_enough_seeds_to_decide():
    """With three seeds the percentile bootstrap interval is about [min, max]: no verdict."""
    r = V.paired([0.1, 5.0, 10.0], method="bootstrap")
    assert r["verdict"] == "inconclusive" and "bootstrap" in r["reason"]
    assert V.paired([0.1, 5.0, 10.0])["verdict"] == "inconclusive"   # t: crosses 0 as well
    many = V.paired(np.linspace(1.0, 2.0, V.MIN_BOOTSTRAP_SEEDS), method="bootstrap")
    assert many["verdict"] == "supported"


def test_the_methods_the_claims_name_are_registered():
    """The report names methods only through verdicts' constants, and every default claim's
    selectors name registered methods (or the dense reference)."""
    from dilt.methods import method_names

    registered = set(method_names())
    assert set(V.HYPOTHESIS_METHODS) <= registered

    def named(obj):
        if isinstance(obj, dict):
            m = obj.get("method", [])
            return set(m if isinstance(m, list) else [m]) | set().union(*map(named, obj.values()))
        if isinstance(obj, list):
            return set().union(*map(named, obj))
        return set()

    used = named(V.DEFAULT_CLAIMS)
    assert used and used <= set(V.HYPOTHESIS_METHODS)


def test_per_target_list_escapes_each_part_once():
    """The appendix's per-target verdicts: a target reads '90\\%', never escaped twice."""
    from dilt.report.paper import comparisons_text

    lines = comparisons_text([one(union_core([0.05, 0.06, 0.04]))])
    items = [l for l in lines if l.startswith("\\item")]
    assert items and all("target 90\\%" in l and "textbackslash" not in l for l in items)


def test_a_specialist_near_chance_on_the_other_classes():
    """E3-spec1-chance: spec1's accuracy on T_2 against chance (1/10 on digits), within 10 points."""
    claim = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E3-spec1-chance")
    assert claim["compare"]["b"] == "chance" and claim["expect"] == "equivalent"

    def rows(values, own=0.9):   # the chance flag reads a ticket's T_full accuracy (90%), not T_k's
        return frame(*[{"ticket": "spec1", "split": split, "seed": s,
                        "value": v if split == "part2" else (own if split == "part1" else 0.9)}
                       for s, v in enumerate(values) for split in ("full", "part1", "part2")])

    near = one(rows([0.12, 0.14, 0.11]), claim)
    assert near["verdict"] == "supported"
    assert near["mean"] == pytest.approx(100 * (np.mean([0.12, 0.14, 0.11]) - 0.1))
    assert one(rows([0.85, 0.9, 0.88]), claim)["verdict"] == "refuted"
    assert one(rows([0.12, 0.35, 0.11]), claim)["verdict"] == "inconclusive"
    # a specialist flagged (here a bottleneck layer) is never support
    assert one(rows([0.12, 0.14, 0.11]).assign(bottleneck_layers=1), claim)["verdict"] == "inconclusive"
    # nor one that is not 10 points above chance on its own classes T_1 either (it learned
    # nothing to specialise in), or has no T_1 row
    assert claim["skilled_on"] == "part1"
    weak = one(rows([0.12, 0.14, 0.11], own=0.19), claim)
    assert weak["verdict"] == "inconclusive" and weak["flagged"] == 3
    assert one(rows([0.12, 0.14, 0.11], own=0.21), claim)["verdict"] == "supported"
    no_own = rows([0.12, 0.14, 0.11])
    assert one(no_own[no_own["split"] != "part1"], claim)["verdict"] == "inconclusive"
    # chance needs the number of classes
    got = V.evaluate_claims(rows([0.12, 0.14, 0.11]), [claim])
    assert got[0]["verdict"] == "not run" and "chance level" in got[0]["reason"]


@pytest.mark.parametrize("change", [{"quantity": "round"},
                                    {"compare": {"a": {"ticket": "spec1"}, "b": "chance",
                                                 "c": {"ticket": "spec2"}, "d": "chance"}}])
def test_chance_reference_is_for_accuracy_of_one_side(change):
    claim = {**next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E3-spec1-chance"), **change}
    with pytest.raises(ValueError, match=r"claims\[0\] \(E3-spec1-chance\): key 'compare\.b'"):
        V.check_claims([claim])


def test_skilled_on_belongs_to_a_comparison_with_chance():
    base = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E3-union-spec1")
    with pytest.raises(ValueError, match=r"claims\[0\] \(E3-union-spec1\): key 'skilled_on'"):
        V.check_claims([{**base, "skilled_on": "part1"}])
    chance = next(c for c in V.DEFAULT_CLAIMS if c["id"] == "E3-spec1-chance")
    with pytest.raises(ValueError, match=r"key 'skilled_on'"):
        V.check_claims([{**chance, "skilled_on": ["part1"]}])

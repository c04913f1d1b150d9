"""Experiment-2 tables: blocks aligned across seeds by layer membership, and correlations that
rest on too few points reported as not testable."""

import numpy as np
import pytest

from dilt.report import analysis_tables as A

LAYERS = [f"l{i}" for i in range(6)]
GROUPS = [["l0", "l1"], ["l2", "l3"], ["l4", "l5"]]


def run(seed, labels, params_per_layer=10, jacc=(0.1, 0.2, 0.3), corr_n=6):
    """One analysis whose block ``labels[g]`` holds layer group g."""
    blocks = [{"block": labels[g], "layers": GROUPS[g], "params": params_per_layer * (g + 1) * 2,
               "gw_ii_mean": 0.01 * (g + 1), "jaccard": jacc[g], "chance_jaccard": 0.05,
               "ratio": jacc[g] / 0.05} for g in range(3)]
    blocks.sort(key=lambda b: b["block"])
    c = {"rho": 1.0, "p": 0.5, "n": corr_n}
    return {"meta": {"seed": seed}, "layer_names": LAYERS, "blocks": blocks, "ari": 1.0, "k": 3,
            "correlations": {k: c for k, _ in A.CORRELATIONS}}


def test_alignment_recovers_permuted_labels():
    runs = [run(0, [0, 1, 2]), run(1, [2, 0, 1]), run(2, [1, 2, 0])]
    aligned = A.align_blocks(runs)
    assert [b["layers"] for b in aligned] == GROUPS
    for g, blk in enumerate(aligned):
        assert set(blk["members"]) == {0, 1, 2}
        for b in blk["members"].values():
            assert b["layers"] == GROUPS[g]          # same layers, whatever the label
        assert all(a == 1.0 for a in blk["agreement"].values())


def test_alignment_opens_a_row_for_a_new_block():
    odd = run(1, [0, 1, 2])
    odd["blocks"] = [{"block": 0, "layers": LAYERS[:3], "params": 30, "gw_ii_mean": 0.1,
                      "jaccard": 0.1, "chance_jaccard": 0.05, "ratio": 2.0},
                     {"block": 1, "layers": LAYERS[3:], "params": 30, "gw_ii_mean": 0.2,
                      "jaccard": 0.2, "chance_jaccard": 0.05, "ratio": 4.0}]
    aligned = A.align_blocks([run(0, [0, 1, 2]), odd])
    # seed 1's two blocks take the two reference blocks they overlap most (Jaccard 2/3 each)
    assert sum(1 in b["members"] for b in aligned) == 2
    assert len(aligned) == 3
    shared = [b for b in aligned if 1 in b["members"]]
    assert all(b["agreement"][1] == pytest.approx(2 / 3) for b in shared)


def test_block_table_pools_aligned_blocks_with_each_seeds_counts(tmp_path):
    runs = [run(0, [0, 1, 2], jacc=(0.1, 0.2, 0.3)), run(1, [2, 0, 1], jacc=(0.3, 0.4, 0.5))]
    text = A.write_exp2_blocks({"cnn / digits / contiguous2": runs}, tmp_path / "t.tex")
    rows = [l for l in text.splitlines() if l.startswith("cnn")]
    first_block = next(l for l in rows if "l0 .. l1" in l)
    v = np.array([0.1, 0.3]) * 100      # the first layer group's Jaccard in the two seeds
    assert f"{v.mean():.1f} $\\pm$ {v.std(ddof=1):.1f}" in first_block
    assert "& 2/2 & 20/20 &" in first_block   # layers per seed, params per seed


def test_correlation_over_few_points_is_not_testable(tmp_path):
    runs = [run(s, [0, 1, 2], corr_n=2) for s in range(3)]
    text = A.write_exp2_blocks({"cnn / digits / iid2": runs}, tmp_path / "t.tex")
    corr = [l for l in text.split("tab:exp2-correlations")[1].splitlines() if " vs " in l and "ARI" not in l]
    assert len(corr) == 4
    assert all("not testable" in l and "1.00" not in l for l in corr)
    ok = [run(s, [0, 1, 2], corr_n=6) for s in range(3)]
    text = A.write_exp2_blocks({"cnn / digits / iid2": ok}, tmp_path / "t.tex")
    assert "1.00 $\\pm$ 0.00" in text.split("tab:exp2-correlations")[1]

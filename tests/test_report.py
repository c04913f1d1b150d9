"""Tests of the reporting layer on synthetic records: results.csv, tables, figures, findings,
and the paper build."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dilt.report import aggregate, figures, paper, tables
from dilt.report import verdicts as V

MODELS = ["mlp", "vit_tiny"]
SEEDS = [0, 1, 2]
TARGETS = [0.9, 0.95]
SM, DM = "source-matched", "density-matched"


def _row(**kw) -> dict:
    row = {"experiment": "retrain", "model": "mlp", "dataset": "digits", "source_dataset": "digits",
           "partition": "-", "method": "dense", "ticket": "dense", "mode": "-",
           "control": "ticket", "target_sparsity": 0.0, "actual_sparsity": 0.0, "round": 0,
           "trainings": 1, "empty_layers": 0, "min_layer_kept": 5, "collapsed": False, "seed": 0, "split": "full",
           "metric": "top1", "value": 0.9, "best_epoch": 5, "val_top1": 0.9, "protocol": "retrain",
           "epochs": 0.0, "min_layer_density": 0.5, "bottleneck_layers": 0, "flags": "",
           "flops_ratio": 1.0}
    row.update(kw)
    return row


def synthetic_records(union_minus_core: float = -0.05) -> list[dict]:
    """Records of 2 models x 3 seeds; DiLT union is ``union_minus_core`` above core."""
    rng = np.random.default_rng(0)
    recs = []

    def add(value, **kw):
        recs.append(_row(value=float(np.clip(value + rng.normal(0, 0.005), 0, 1)), **kw))

    for model in MODELS:
        for seed in SEEDS:
            base = dict(model=model, seed=seed)
            add(0.95, **base)
            for t in TARGETS:
                r = int(np.ceil(np.log(1 - t) / np.log(0.8)))
                ts = dict(base, target_sparsity=t, actual_sparsity=t, round=r)
                for control, drop in (("ticket", 0.0), ("random", 0.2)):
                    add(0.90 - drop, method="lth", ticket="mask", control=control, trainings=r, **ts)
                    for part in ("contiguous2", "iid2"):
                        p = dict(ts, partition=part, control=control, method="colt",
                                 ticket="mask", trainings=2 * (r - 1), round=r - 1)
                        add(0.88 - drop, **p)
                        for mode in (SM, DM):
                            d = dict(ts, partition=part, control=control, method="dilt", mode=mode,
                                     trainings=2 * r)
                            splits = ["full", "part1", "part2"] if part == "contiguous2" else ["full"]
                            for split in splits:
                                add(0.85 - drop, ticket="core", split=split,
                                    **{**d, "actual_sparsity": t + 0.02})
                                add(0.85 + union_minus_core - drop, ticket="union", split=split,
                                    **{**d, "actual_sparsity": t - 0.02})
                                for k in (1, 2):
                                    on_own = split == f"part{k}"
                                    coll = dict(empty_layers=1, collapsed=True) if (
                                        k == 2 and t == 0.95) else {}
                                    add((0.6 if on_own else 0.3) - drop, ticket=f"spec{k}",
                                        split=split, **{**d, "actual_sparsity": 0.99, **coll})
                    # transfer (exp 4)
                    tr = dict(ts, experiment="transfer", dataset="stanford_cars",
                              source_dataset="digits", control=control)
                    add(0.5 - drop, method="lth", ticket="mask", trainings=r, **tr)
                    for ticket, v in (("core", 0.55), ("union", 0.5), ("spec1", 0.4)):
                        add(v - drop, method="dilt", ticket=ticket, partition="contiguous2",
                            mode=SM, trainings=2 * r, **tr)
            add(0.6, experiment="transfer", dataset="stanford_cars", source_dataset="digits",
                **base)
    return recs


def synthetic_imp(model: str, method: str, seed: int, part) -> dict:
    rounds = [{"round": r, "sparsity": 1 - 0.8 ** r, "val_top1": 0.95 - 0.01 * r,
               "test_top1": 0.94 - 0.01 * r, "epochs": 5} for r in range(15)]
    return {"method": method, "model": model, "dataset": "digits",
            "partition": "-" if method == "lth" else "contiguous2", "seed": seed, "part": part,
            "rounds": rounds}


def write_suite(root: Path, union_minus_core: float = -0.05, suite: str = "toy_suite") -> Path:
    """Write the records in a few records.json files (and IMP summaries) under root/results."""
    res = root / "results" / suite
    recs = synthetic_records(union_minus_core)
    for i in range(0, len(recs), 100):
        f = res / f"job{i // 100:03d}" / "records.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"records": recs[i:i + 100]}))
    for model in MODELS:
        for seed in SEEDS:
            for method, parts in (("lth", [None]), ("colt", [None]), ("dilt", [1, 2])):
                for part in parts:
                    f = res / "imp" / f"{model}-{method}-{seed}-{part}" / "imp_summary.json"
                    f.parent.mkdir(parents=True)
                    f.write_text(json.dumps(synthetic_imp(model, method, seed, part)))
    return res


@pytest.fixture
def suite_dir(tmp_path):
    res = write_suite(tmp_path)
    aggregate.write_results_csv(res, res / "results.csv")
    return res


def test_results_csv_one_row_per_record(suite_dir):
    df = pd.read_csv(suite_dir / "results.csv")
    assert len(df) == len(synthetic_records())
    assert list(df.columns) == aggregate.COLUMNS
    assert not df.duplicated(subset=aggregate.KEY).any()


def test_malformed_row_names_file_and_key(tmp_path):
    bad = _row()
    del bad["value"]
    f = tmp_path / "results" / "s" / "job" / "records.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"records": [_row(), bad]}))
    with pytest.raises(ValueError, match=r"records\.json: record 1.*'value'") as e:
        aggregate.collect(tmp_path / "results")
    assert str(f) in str(e.value)


def test_table_cell_is_numpy_mean_std(suite_dir, tmp_path):
    out = tmp_path / "tables"
    paths = tables.write_tables(suite_dir / "results.csv", suite_dir, out, "toy_suite")
    assert {p.name for p in paths} == {"exp1_sparsity.tex", "exp1_rounds.tex",
                                       "exp3_specialists.tex", "exp4_transfer.tex"}
    df = pd.read_csv(suite_dir / "results.csv")
    sel = df[(df.model == "mlp") & (df.method == "lth") & (df.control == "ticket")
             & (df.experiment == "retrain") & (df.target_sparsity == 0.9)]
    v = sel.value.to_numpy() * 100
    assert len(v) == 3
    cell = f"{v.mean():.1f} $\\pm$ {v.std(ddof=1):.1f}"
    assert cell in (out / "exp1_sparsity.tex").read_text()
    for p in paths:
        text = p.read_text()
        assert "vit\\_tiny" in text and "vit_tiny" not in text.replace("vit\\_tiny", "")
    assert "contiguous2" in (out / "exp3_specialists.tex").read_text()
    assert "stanford\\_cars" in (out / "exp4_transfer.tex").read_text()
    assert "yes, 3/3 seeds" in (out / "exp3_specialists.tex").read_text()


def test_empty_results_give_empty_tables(tmp_path):
    csv = tmp_path / "results.csv"
    aggregate.write_results_csv(tmp_path / "nothing", csv)
    paths = tables.write_tables(csv, tmp_path / "nothing", tmp_path / "t", "empty")
    for p in paths:
        assert "\\emph{This suite has no" in p.read_text()


def test_figures_pdf_and_png(suite_dir, tmp_path):
    paths = figures.write_figures(suite_dir / "results.csv", suite_dir, tmp_path / "fig")
    names = {p.name for p in paths}
    for stem in ("acc_vs_sparsity", "acc_vs_rounds"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
        assert (tmp_path / "fig" / f"{stem}.pdf").stat().st_size > 1000


def test_acc_vs_sparsity_leaves_out_structured_methods():
    """SAViT's rows sit on a FLOPs axis: the accuracy-sparsity figure never plots them."""
    base = {"experiment": "retrain", "model": "vit_tiny", "dataset": "digits", "partition": "-",
            "split": "full", "metric": "top1", "mode": "-", "control": "ticket", "seed": 0,
            "target_sparsity": 0.9}
    df = pd.DataFrame([{**base, "method": "lth", "ticket": "mask", "actual_sparsity": 0.9,
                        "value": 0.9},
                       {**base, "method": "savit", "ticket": "mask", "actual_sparsity": 0.51,
                        "value": 0.8}])
    fig = figures.acc_vs_sparsity(df)
    xs = [float(x) for ax in fig.axes for line in ax.get_lines() for x in line.get_xdata()]
    assert xs and min(xs) == 0.9
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels and not any("SAViT" in t for t in labels)


def _listing(text: str, tag: str) -> str:
    return text.split(f"%% {tag}")[1].split("%%")[0]


def test_appendix_lists_mark_unmatched_and_flagged(tmp_path):
    """The union (s = t - 0.02) and core (s = t + 0.02) differ in density by far more than the
    tolerance: every union/core item is marked unmatched, and no list says 'holds'. The
    collapsed spec2 rows are marked flagged."""
    res = write_suite(tmp_path, union_minus_core=0.05)
    aggregate.write_results_csv(res, res / "results.csv")
    out = tmp_path / "findings.tex"
    paper.write_findings(res / "results.csv", out)
    text = out.read_text()
    items = [l for l in _listing(text, "L2").splitlines() if l.startswith("\\item")]
    assert items and all("\\textsc{unmatched}" in l for l in items)
    # density gap of the first item, computed here: d_core = 0.08, d_union = 0.12 at target 0.9
    assert "differ by 50\\%" in items[0] or "differ by 33\\%" in items[0]
    assert "holds" not in text
    spec = _listing(text, "L4")
    assert "target 95\\%" in spec and "\\textsc{flagged} (collapsed" in spec


def test_exp1_never_prints_delta_across_mismatched_densities(tmp_path):
    recs = []
    for seed in SEEDS:
        for control, s_, v in (("ticket", 0.90, 0.80), ("random", 0.80, 0.70)):
            recs.append(_row(method="lth", ticket="mask", target_sparsity=0.9, control=control,
                             actual_sparsity=s_, value=v + 0.01 * seed, seed=seed, round=4))
        for control, v in (("ticket", 0.85), ("random", 0.75)):
            recs.append(_row(method="colt", ticket="mask", partition="contiguous2",
                             target_sparsity=0.9, control=control, actual_sparsity=0.905,
                             value=v + 0.02 * seed, seed=seed, round=3))
        recs.append(_row(method="savit", ticket="mask", target_sparsity=0.5, protocol="own",
                         actual_sparsity=0.3, flops_ratio=0.5, value=0.9, seed=seed))
        recs.append(_row(method="rigl", ticket="mask", target_sparsity=0.9, protocol="own",
                         actual_sparsity=0.9, value=0.88, seed=seed, epochs=30.0))
    df = pd.DataFrame(recs)
    tex = tables.exp1_sparsity(df, "toy")
    lth = next(l for l in tex.splitlines() if "& LTH &" in l)
    colt = next(l for l in tex.splitlines() if "& COLT &" in l)
    assert "unmatched" in lth and "$+" not in lth.split("&")[-2]
    # COLT's ticket and control share density: Delta = mean paired difference, computed here
    assert f"${100 * 0.10:+.1f}$" in colt
    savit = next(l for l in tex.splitlines() if "SAViT" in l)
    cells = [c.strip() for c in savit.split("&")]
    assert cells[3] == "--" and cells[4] == "0.50"      # no sparsity; FLOPs ratio
    rigl = next(l for l in tex.splitlines() if "RigL" in l)
    assert "own" in rigl and "& 30 &" in rigl


def test_exp1_flags_say_whether_the_ticket_or_its_control_is_flagged():
    recs = []
    for seed in SEEDS:
        for control, flags in (("ticket", "bottleneck" if seed == 2 else ""),
                               ("random", "chance" if seed < 2 else "")):
            recs.append(_row(method="lth", ticket="mask", target_sparsity=0.9, control=control,
                             actual_sparsity=0.9, flags=flags, seed=seed, round=4))
    tex = tables.exp1_sparsity(pd.DataFrame(recs), "toy")
    lth = next(l for l in tex.splitlines() if "& LTH &" in l)
    assert lth.split("&")[-1].strip().removesuffix("\\\\").strip() == "b1 r: ch2"  # seeds 0, 1, 2


def test_exp1_marks_flagged_rows(suite_dir, tmp_path):
    df = aggregate.read_results(suite_dir / "results.csv")
    df.loc[(df.method == "lth") & (df.seed == 1), "bottleneck_layers"] = 2
    df["flags"] = V.flag(df, num_classes=10)
    tex = tables.exp1_sparsity(df, "toy")
    lth = [l for l in tex.splitlines() if "& LTH &" in l]
    assert lth and all("$^\\dagger$" in l and "b1" in l for l in lth)
    dense = next(l for l in tex.splitlines() if "& Dense &" in l)
    assert "dagger" not in dense
    # the rounds table marks the same rows
    rounds = tables.exp1_rounds(df, aggregate.collect_imp(suite_dir), "toy")
    lth = [l for l in rounds.splitlines() if "& LTH &" in l]
    assert lth and all("$^\\dagger$" in l for l in lth)
    assert not any("$^\\dagger$" in l for l in rounds.splitlines() if "& COLT" in l)


def _fake_inputs(root: Path, suite: str) -> None:
    """Placeholders for the parts written by other stages (exp2 table, figures 1-3)."""
    tdir, fdir = root / "tables" / suite, root / "figures" / suite
    (tdir / "exp2_blocks.tex").write_text("\\begin{table}[t]\\centering\\caption{placeholder}"
                                          "\\end{table}\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name in ("fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.text(0.5, 0.5, name, ha="center")
        fig.savefig(fdir / f"{name}.pdf")
        fig.savefig(fdir / f"{name}.png")
        plt.close(fig)


def _build_inputs(root: Path, suite: str) -> None:
    res = write_suite(root, suite=suite)
    aggregate.write_results_csv(res, res / "results.csv")
    tables.write_tables(res / "results.csv", res, root / "tables" / suite, suite)
    V.write_claims(res / "results.csv", None, None, root / "tables" / suite / "claims.tex",
                   {"digits": 10})
    figures.write_figures(res / "results.csv", res, root / "figures" / suite)
    _fake_inputs(root, suite)
    shutil.copytree(Path(__file__).resolve().parents[1] / "paper", root / "paper",
                    ignore=shutil.ignore_patterns("*.pdf", "*.aux", "*.log"),
                    dirs_exist_ok=True)


def test_missing_input_is_named(tmp_path):
    _build_inputs(tmp_path, "toy_suite")
    (tmp_path / "figures" / "toy_suite" / "fig2_layer_clusters.pdf").unlink()
    with pytest.raises(FileNotFoundError, match="fig2_layer_clusters.pdf"):
        paper.build_paper("toy_suite", root=tmp_path)


def test_no_latexmk_skips_pdf(tmp_path, monkeypatch, capsys):
    _build_inputs(tmp_path, "toy_suite")
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert paper.build_paper("toy_suite", root=tmp_path) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "latexmk" in out[0] and "apt-get install" in out[0]


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed")
def test_paper_compiles_with_short_main_text(tmp_path):
    import subprocess

    _build_inputs(tmp_path, "toy_suite")
    pdf = paper.build_paper("toy_suite", root=tmp_path)
    assert pdf is not None and pdf.exists() and pdf.stat().st_size > 10000
    assert pdf == tmp_path / "paper" / "toy_suite" / "main.pdf"
    pages = paper.main_text_pages(pdf.parent)
    assert pages is not None and 4 <= pages <= paper.MAX_MAIN_PAGES
    if shutil.which("pdftotext"):
        # independent check: the page where the appendix heading is printed
        txt = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                             text=True).stdout.split("\f")
        first = next(i for i, pg in enumerate(txt) if "Detailed results" in pg
                     and "A Detailed results" in " ".join(pg.split()))
        assert first == pages
        assert "Table" in " ".join(txt[:pages]) and "E1-union-core" in " ".join(txt[:pages])


def test_results_sentences_match_the_verdicts(suite_dir):
    verdicts = V.suite_verdicts(suite_dir / "results.csv", None, None, {"digits": 10})
    text = paper.results_text(verdicts)
    paras = {p.split("}")[0].replace("\\textbf{", "").replace("\\_", "_"): p
             for p in text.split("\n\n") if p.startswith("\\textbf{")}
    assert set(paras) == {c["id"] for c in V.DEFAULT_CLAIMS}
    tally = {k: sum(v["verdict"] == k for v in verdicts) for k in paper.VERDICT_ORDER}
    for k, n in tally.items():
        if n:
            assert f"{n} {k}" in text
    for v in verdicts:
        para = paras[v["id"]]
        start = para.index("On " + paper.escape(paper._group_text(v["group"])))
        sentence = para[start:].split(". On ")[0]
        assert f"\\emph{{{v['verdict']}}}" in sentence
        if not math.isnan(v["mean"]):
            assert f"{v['mean']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}]" in sentence
            assert f"over {v['n']} seeds" in sentence
        if v["unmatched"]:
            assert f"{v['unmatched']} unmatched pair(s)" in sentence
        if v["flagged_comparisons"]:
            assert f"{v['flagged_comparisons']} comparison(s) with flagged inputs" in sentence
        if v["verdict"] == "descriptive":
            assert "reported, not judged" in sentence


def test_exp2_findings_report_per_seed_and_not_testable():
    from dilt.report.analysis_tables import exp2_findings

    def run(seed, rho, p, n):
        c = {"rho": rho, "p": p, "n": n}
        return {"meta": {"seed": seed},
                "correlations": {"layer_gw_vs_jaccard": c, "layer_gw_vs_jaccard_partial_depth": c}}

    text = exp2_findings({"cnn / digits / contiguous2": [run(0, -0.9, 0.01, 8), run(1, 1.0, 0.3, 2)]})
    item = next(l for l in text.splitlines() if l.startswith(r"\item"))
    assert "seed 0: $\\rho = -0.90$, $p = 0.01$, $n = 8$" in item
    assert "seed 1: not testable ($n = 2$)" in item and "1.00" not in item
    assert "holds" not in text


def test_findings_list_a_density_matched_pair_that_is_a_source_matched_one_once():
    from dilt.report import paper

    recs = []
    for seed in SEEDS:
        for mode, t, cs in ((SM, 0.9, 0.95), (DM, 0.9, 0.95), (DM, 0.95, 0.97)):
            for ticket, s_ in (("union", 0.85), ("core", cs)):
                recs.append(_row(method="dilt", ticket=ticket, partition="contiguous2", mode=mode,
                                 target_sparsity=t, actual_sparsity=s_, round=3 + (cs > 0.96),
                                 seed=seed, value=0.9))
    items = paper.union_vs_core(pd.DataFrame(recs))
    assert len(items) == 2                      # DM at 90% compares SM at 90%'s masks
    assert sum("SM" in i for i in items) == 1 and sum("DM, target 95" in i for i in items) == 1

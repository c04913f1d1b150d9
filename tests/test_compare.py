"""Expected results and `dilt compare`, on synthetic results.csv files (and one real slice of the
smoke suite when expected/smoke.csv is in the repository)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dilt import cli
from dilt import compare as C
from dilt.report import aggregate

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [0, 1, 2]


def _row(**kw) -> dict:
    row = {"experiment": "retrain", "model": "mlp", "dataset": "digits", "source_dataset": "digits",
           "partition": "-", "method": "dense", "ticket": "dense", "mode": "-", "control": "ticket",
           "target_sparsity": 0.0, "actual_sparsity": 0.0, "round": 0, "trainings": 1,
           "empty_layers": 0, "min_layer_kept": 5, "collapsed": False, "seed": 0, "split": "full",
           "metric": "top1", "value": 0.9, "best_epoch": 5, "val_top1": 0.9, "protocol": "retrain",
           "epochs": 0.0, "min_layer_density": 0.5, "bottleneck_layers": 0, "flags": "",
           "flops_ratio": 1.0}
    row.update(kw)
    return row


def synthetic_rows() -> list[dict]:
    """Two models x (dense + lth/dilt tickets at two targets) x 3 seeds, with seed noise; values
    with long binary expansions so that exactness is not trivial."""
    rng = np.random.default_rng(1)
    rows = []
    for model in ("mlp", "cnn"):
        for seed in SEEDS:
            rows.append(_row(model=model, seed=seed, value=float(0.95 + rng.normal(0, 0.006))))
            for t in (0.9, 0.95):
                rows.append(_row(model=model, seed=seed, method="lth", ticket="mask",
                                 target_sparsity=t, actual_sparsity=t,
                                 value=float(0.9 + rng.normal(0, 0.006))))
                for ticket in ("core", "union"):
                    for split in ("full", "part1"):
                        rows.append(_row(model=model, seed=seed, method="dilt", ticket=ticket,
                                         partition="contiguous2", mode="source-matched", split=split,
                                         target_sparsity=t, actual_sparsity=t,
                                         value=float(0.85 + rng.normal(0, 0.006))))
    return rows


def write_results(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=aggregate.COLUMNS).to_csv(path, index=False)  # as write_results_csv
    return path


@pytest.fixture
def base(tmp_path):
    rows = synthetic_rows()
    res = write_results(tmp_path / "results" / "toy" / "results.csv", rows)
    exp = tmp_path / "expected" / "toy.csv"
    C.write_expected(res, exp)
    return rows, res, exp


def _check(exp: Path, rows: list[dict], tmp_path: Path, **kw) -> list[str]:
    got = write_results(tmp_path / "rerun" / "results.csv", rows)
    return C.compare(C.read_expected(exp), C.read_results_exact(got), **kw)


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in C.GROUP)


def test_expected_file_keeps_every_seed_bit_for_bit_and_states_its_rule(base):
    rows, res, exp = base
    text = exp.read_text()
    assert "tol = max(z * sigma * sqrt(2/n), floor)" in text and "z = 4.0" in text and "floor = 0.005" in text
    e = C.read_expected(exp)
    assert (e.z, e.floor) == (4.0, 0.005)
    assert len(e.table) == len({_key(r) for r in rows}) and set(e.table["n"]) == {3}
    stored = {(tuple(r[C.GROUP].astype(str)), s): v for _, r in e.table.iterrows()
              for s, v in r["per_seed"].items()}
    for r in rows:
        k = tuple(str(r[c]) if c != "target_sparsity" else repr(float(r[c])) for c in C.GROUP)
        assert stored[(k, r["seed"])] == r["value"]  # exact float equality, no rounding
    before = exp.read_bytes()  # regenerating from the same results changes nothing (no date)
    C.write_expected(res, exp)
    assert exp.read_bytes() == before


def test_tolerance_rule_uses_the_key_spread_pooled_with_its_model(tmp_path):
    rows = [_row(seed=s, value=v) for s, v in zip(SEEDS, (0.90, 0.91, 0.92))]  # std 0.01
    rows += [_row(seed=s, method="lth", ticket="mask", target_sparsity=0.9, value=0.95)
             for s in SEEDS]  # std 0: sigma is the model's median std, 0.005
    rows += [_row(model="cnn", seed=s, value=0.97) for s in SEEDS]  # alone in its pool: the floor
    tab = C.expected_table(C.read_results_exact(write_results(tmp_path / "r.csv", rows)))
    tol = {(r["model"], r["method"]): r["tol"] for _, r in tab.iterrows()}
    assert tol[("mlp", "dense")] == pytest.approx(4 * 0.01 * math.sqrt(2 / 3), abs=1e-6)
    assert tol[("mlp", "lth")] == pytest.approx(4 * 0.005 * math.sqrt(2 / 3), abs=1e-6)
    assert tol[("cnn", "dense")] == 0.005
    assert C.tolerance(0.01, 1) == pytest.approx(4 * 0.01 * math.sqrt(2))  # fewer seeds: wider


def test_identical_rerun_passes_exactly(base, tmp_path, capsys):
    _, res, exp = base
    assert cli.main(["compare", str(res), "--expected", str(exp), "--exact"]) == 0
    assert "compare: OK" in capsys.readouterr().out


def test_rerun_within_tolerance_passes(base, tmp_path):
    rows, _, exp = base
    tol = C.read_expected(exp).table["tol"].min()
    shifted = [dict(r, value=r["value"] + (0.4 if r["seed"] % 2 else -0.3) * tol) for r in rows]
    assert _check(exp, shifted, tmp_path) == []
    exact = _check(exp, shifted, tmp_path, exact=True)
    assert len(exact) == len(rows) and all(p.startswith("EXACT ") for p in exact)


def test_one_number_pushed_out_fails_naming_it(base, tmp_path, capsys):
    rows, _, exp = base
    e = C.read_expected(exp).table
    victim = next(r for r in rows if r["model"] == "cnn" and r["ticket"] == "union"
                  and r["split"] == "part1" and r["target_sparsity"] == 0.95 and r["seed"] == 1)
    tol = float(e[(e["model"] == "cnn") & (e["ticket"] == "union") & (e["split"] == "part1")
                  & (e["target_sparsity"] == "0.95")]["tol"].iloc[0])
    # one seed of three moves by 3.15 tol: the mean moves by 1.05 tol
    bad = [dict(r, value=r["value"] - 3 * tol * 1.05) if r is victim else r for r in rows]
    problems = _check(exp, bad, tmp_path)
    assert len(problems) == 1
    p = problems[0]
    assert p.startswith("OUT ") and "model=cnn" in p and "ticket=union" in p and "split=part1" in p
    assert "target_sparsity=0.95" in p and f"tolerance {tol:.6f}" in p
    want = np.mean([r["value"] for r in rows if _key(r) == _key(victim)])
    assert f"expected {want:.6f}" in p
    rc = cli.main(["compare", str(tmp_path / "rerun" / "results.csv"), "--expected", str(exp)])
    out = capsys.readouterr().out
    assert rc == 1 and p in out and "compare: FAIL: 1 problem(s) (1 out)" in out


def _far_off(rows: list[dict], **where) -> tuple[list[dict], dict]:
    """``rows`` with one key's seed 1 moved 0.3 (far beyond any tolerance here); that row."""
    victim = next(r for r in rows if all(r[k] == v for k, v in where.items()) and r["seed"] == 1)
    return [dict(r, value=r["value"] - 0.3) if r is victim else r for r in rows], victim


@pytest.mark.parametrize("side", ["expected", "rerun"])
def test_a_flagged_key_is_not_held_to_the_tolerance_but_still_checked_exactly(tmp_path, side, capsys):
    """A key with a flagged row (here a bottleneck layer) in the expected run or in the rerun
    may land anywhere on another machine: reported as not held, never a failure, unless
    --check-flagged; --exact still checks its bits."""
    rows = synthetic_rows()
    where = dict(model="cnn", ticket="core", split="part1", target_sparsity=0.95)
    flag = lambda rs: [dict(r, flags="bottleneck", bottleneck_layers=1)  # noqa: E731
                       if all(r[k] == v for k, v in where.items()) and r["seed"] == 2 else r for r in rs]
    res = write_results(tmp_path / "results" / "toy" / "results.csv", flag(rows) if side == "expected" else rows)
    exp = tmp_path / "expected.csv"
    C.write_expected(res, exp)
    e = C.read_expected(exp)
    assert [sorted(f) for f in e.table["flagged"] if f] == ([[2]] if side == "expected" else [])
    moved, victim = _far_off(rows, **where)
    rerun = flag(moved) if side == "rerun" else moved
    not_held: list[str] = []
    assert _check(exp, rerun, tmp_path, not_held=not_held) == []
    assert len(not_held) == 1 and "ticket=core" in not_held[0] and "split=part1" in not_held[0]
    held = _check(exp, rerun, tmp_path, check_flagged=True)
    assert len(held) == 1 and held[0].startswith("OUT ") and "split=part1" in held[0]
    exact = _check(exp, rerun, tmp_path, exact=True)
    assert any(p.startswith("EXACT ") and "split=part1" in p and "seed=1" in p for p in exact)
    got = write_results(tmp_path / "rerun2" / "results.csv", rerun)
    assert cli.main(["compare", str(got), "--expected", str(exp)]) == 0
    assert "1 key(s) not held to their tolerance: 1 with a flagged row" in capsys.readouterr().out
    assert cli.main(["compare", str(got), "--expected", str(exp), "--check-flagged"]) == 1
    capsys.readouterr()
    assert cli.main(["compare", str(got), "--expected", str(exp), "--show-not-held"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("NOT HELD ")]
    assert len(listed) == 1 and "split=part1" in listed[0] and listed[0].endswith("(flagged)")


def test_a_key_whose_mask_came_from_another_round_is_not_held(base, tmp_path):
    """A density-matched ticket whose rerun picked a neighbouring IMP round measures another
    density: not a failure (unless --check-flagged); the same round far off is one."""
    rows, _, exp = base
    where = dict(model="mlp", ticket="union", split="full", target_sparsity=0.9)
    moved, victim = _far_off(rows, **where)
    assert len(_check(exp, moved, tmp_path)) == 1  # same round (0): held, and out
    other = [dict(r, round=3) if _key(r) == _key(victim) and r["seed"] == 1 else r for r in moved]
    not_held: list[str] = []
    assert _check(exp, other, tmp_path, not_held=not_held) == [] and len(not_held) == 1
    assert not_held[0].endswith("(another round)") and "ticket=union" in not_held[0]
    assert len(_check(exp, other, tmp_path, check_flagged=True)) == 1
    assert C.read_expected(exp).table["rounds"].iloc[0] == {0: "0", 1: "0", 2: "0"}


def test_an_expected_file_without_flag_and_round_columns_still_reads(base, tmp_path):
    """Files written before the flagged / rounds columns existed: no seed flagged, no rounds."""
    rows, res, exp = base
    lines = exp.read_text().splitlines()
    head = [ln for ln in lines if ln.startswith("#")]
    body = pd.read_csv(exp, comment="#", dtype=str, keep_default_na=False).drop(columns=["flagged", "rounds"])
    old = tmp_path / "old.csv"
    old.write_text("\n".join(head) + "\n" + body.to_csv(index=False))
    e = C.read_expected(old)
    assert all(f == set() for f in e.table["flagged"]) and all(r == {} for r in e.table["rounds"])
    assert _check(old, rows, tmp_path, exact=True) == []


def test_missing_and_extra_rows_fail(base, tmp_path):
    rows, _, exp = base
    gone = rows[7]
    problems = _check(exp, [r for r in rows if r is not gone], tmp_path)
    assert [p.split(":")[0].split()[0] for p in problems] == ["MISSING"]
    assert f"method={gone['method']}" in problems[0] and f"seed={gone['seed']}" in problems[0]
    extra = rows + [_row(model="vit_tiny", seed=0, value=0.5), dict(rows[0], seed=7)]
    problems = _check(exp, extra, tmp_path)
    assert sorted(p.split()[0] for p in problems) == ["EXTRA", "EXTRA"]
    assert any("model=vit_tiny" in p for p in problems) and any("seed=7" in p for p in problems)


def test_exact_catches_a_change_in_the_sixth_decimal(base, tmp_path):
    rows, _, exp = base
    nudged = [dict(r, value=r["value"] + 1e-6) if i == 11 else r for i, r in enumerate(rows)]
    assert _check(exp, nudged, tmp_path) == []  # far inside the tolerance
    problems = _check(exp, nudged, tmp_path, exact=True)
    assert len(problems) == 1 and problems[0].startswith("EXACT ")
    assert f"seed={rows[11]['seed']}" in problems[0] and repr(rows[11]["value"]) in problems[0]


def test_partial_rerun_checks_only_its_slice(base, tmp_path):
    rows, _, exp = base
    slice_ = [r for r in rows if r["model"] == "mlp" and r["seed"] == 0]
    assert _check(exp, slice_, tmp_path, exact=True, partial=True) == []
    assert all(p.startswith("MISSING ") for p in _check(exp, slice_, tmp_path))
    off = [dict(r, value=r["value"] + 0.05) if r["method"] == "dense" else r for r in slice_]
    problems = _check(exp, off, tmp_path, partial=True)
    assert len(problems) == 1 and "(seeds 0)" in problems[0] and "method=dense" in problems[0]


def test_default_expected_path_and_loud_errors(base, tmp_path, monkeypatch, capsys):
    rows, _, exp = base
    monkeypatch.chdir(tmp_path)  # expected/toy.csv is found from results/toy/results.csv
    assert cli.main(["compare", "results/toy/results.csv"]) == 0
    assert cli.main(["compare", "results/toy/results.csv", "--expected", "nope.csv"]) == 2
    assert "nope.csv: no expected-results file" in capsys.readouterr().err
    dup = write_results(tmp_path / "dup.csv", rows + [rows[0]])
    assert cli.main(["compare", str(dup), "--expected", str(exp)]) == 2
    assert "repeat a key" in capsys.readouterr().err


SMOKE_EXPECTED = ROOT / "expected" / "smoke.csv"


@pytest.mark.skipif(not SMOKE_EXPECTED.exists(),
                    reason="expected/smoke.csv is written after a smoke run (python -m dilt expected)")
def test_rerun_of_a_smoke_slice_matches_the_stored_numbers(tmp_path):
    """Train the smoke suite's dense MLP of seed 0 again (seconds) and compare its record with
    the stored number (tolerance; a same-machine CPU rerun is in fact bit-identical)."""
    run = tmp_path / "seed0"
    base = [sys.executable, "-m", "dilt"]
    common = ["--config", str(ROOT / "workflow_config.yaml"), "--suite", "smoke",
              "--model", "mlp", "--dataset", "digits", "--seed", "0"]
    subprocess.run(base + ["init", *common, "--out", str(run / "theta0.safetensors")],
                   check=True, cwd=tmp_path, capture_output=True)
    records = run / "full" / "dense" / "records.json"
    subprocess.run(base + ["dense", *common, "--theta0", str(run / "theta0.safetensors"),
                           "--out", str(records)], check=True, cwd=tmp_path, capture_output=True)
    got = tmp_path / "results.csv"
    aggregate.write_results_csv([records], got)
    exp = C.read_expected(SMOKE_EXPECTED)
    assert ((exp.table["model"] == "mlp") & (exp.table["method"] == "dense")).any()
    assert C.compare(exp, C.read_results_exact(got), partial=True) == []

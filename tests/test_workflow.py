"""The workflow end to end on a tiny suite (N=2 contiguous and N=3 random partitions): every
table, figure and (with TeX) the PDF; `snakemake figures` then retrains nothing."""

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, planned_jobs, tiny_config, workflow_failure

pytestmark = pytest.mark.slow


def snakemake(workdir, *args, timeout=900):
    # targets first: --configfile takes several values
    cmd = [sys.executable, "-m", "snakemake", *args, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, workflow_failure(proc, workdir)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("workflow")
    raw = tiny_config(partitions=[{"n": 2, "scheme": "contiguous"}, {"n": 3, "scheme": "random"}])
    (wd / "config.yaml").write_text(yaml.safe_dump(raw))
    (wd / "paper").mkdir()
    os.symlink(ROOT / "paper" / "main.tex", wd / "paper" / "main.tex")
    snakemake(wd, "--cores", "2")
    return wd


def test_every_output_exists(finished_run):
    wd = finished_run
    for t in ("exp1_sparsity", "exp1_rounds", "exp2_blocks", "exp3_specialists", "exp4_transfer"):
        assert (wd / "tables" / "tiny" / f"{t}.tex").stat().st_size > 200
    for f in ("fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis", "acc_vs_sparsity", "acc_vs_rounds"):
        for ext in ("pdf", "png"):
            assert (wd / "figures" / "tiny" / f"{f}.{ext}").stat().st_size > 1000
    if shutil.which("latexmk"):
        assert (wd / "paper" / "tiny" / "main.pdf").read_bytes()[:4] == b"%PDF"


def test_results_cover_the_grid(finished_run):
    df = pd.read_csv(finished_run / "results" / "tiny" / "results.csv")
    retrain = df[df.experiment == "retrain"]
    assert set(retrain.method) == {"dense", "lth", "colt", "dilt"}
    dilt = retrain[retrain.method == "dilt"]
    # N=3: core, three specialists and the union, each with its random control, in both modes
    r3 = dilt[dilt.partition == "random3"]
    assert set(r3.ticket) == {"core", "spec1", "spec2", "spec3", "union"}
    assert set(r3.split) == {"full", "part1", "part2", "part3"}
    assert set(dilt.control) == {"ticket", "random"}
    assert set(dilt["mode"]) == {"source-matched", "density-matched"}
    # source-matched: core sparser and union denser than the target
    sm = dilt[(dilt["mode"] == "source-matched") & (dilt.control == "ticket")]
    assert (sm[sm.ticket == "core"].actual_sparsity >= sm[sm.ticket == "core"].target_sparsity).all()
    assert (sm[sm.ticket == "union"].actual_sparsity <= sm[sm.ticket == "union"].target_sparsity).all()
    # LTH and COLT masks sit exactly on the targets (within one weight)
    for m in ("lth", "colt"):
        sub = retrain[(retrain.method == m) & (retrain.control == "ticket")]
        assert ((sub.actual_sparsity - sub.target_sparsity).abs() < 1e-4).all()
    assert set(df[df.experiment == "transfer"].dataset) == {"digits_rot"}
    assert df.value.between(0, 1).all()


def test_figures_target_retrains_nothing(finished_run):
    wd = finished_run
    shutil.rmtree(wd / "figures")
    out = snakemake(wd, "figures")   # no --cores: the default profile supplies it
    assert "rule figures" in out or "localrule figures" in out
    for rule in ("init", "dense", "find", "dilt_partition", "tickets", "retrain", "transfer", "analyze"):
        assert f"rule {rule}:" not in out and f"localrule {rule}:" not in out
    assert (wd / "figures" / "tiny" / "fig1_gw_heatmap.pdf").exists()


def test_without_tex_everything_but_the_pdf_is_planned(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    # PATH with every program of the machine except latexmk
    nolatex = tmp_path / "bin"
    nolatex.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name != "latexmk" and not (nolatex / name).exists():
                    os.symlink(os.path.join(d, name), nolatex / name)
    env = {**os.environ, "PATH": str(nolatex)}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    notes = [l for l in out.splitlines() if "latexmk not found" in l]
    assert len(notes) == 1 and "snakemake paper" in notes[0]
    assert "rule tables" in out and "rule figures" in out
    assert "rule paper" not in out and "main.pdf" not in out.replace(notes[0], "")


def _planned(workdir, config_path) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` plans for ``config_path`` on ``workdir``."""
    return planned_jobs("-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
                        "--configfile", str(config_path))


def _snapshot(workdir) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in workdir.rglob("*")
            if p.is_file() and ".snakemake" not in p.parts}


def test_config_edits_rerun_exactly_the_affected_jobs(finished_run, tmp_path):
    wd = finished_run
    snakemake(wd, "--cores", "2")  # an earlier test rebuilt the figures: bring the paper up to date
    raw = yaml.safe_load((wd / "config.yaml").read_text())
    before = _snapshot(wd)
    assert _planned(wd, wd / "config.yaml") == {}  # up to date

    # the analysis settings: only the analyses and the report
    edited = yaml.safe_load(yaml.safe_dump(raw))
    edited["suites"]["tiny"]["analysis"]["permutations"] = 300
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(edited))
    plan = _planned(wd, tmp_path / "a.yaml")
    assert plan.pop("analyze") == 2 and set(plan) <= {"resolved_config", "tables", "figures", "paper",
                                                       "versions", "all"}

    # the recipe of the transfer target: only the transfer jobs (and the report)
    edited = yaml.safe_load(yaml.safe_dump(raw))
    edited["suites"]["tiny"]["recipes"]["mlp/digits_rot"] = {"epochs": 3}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(edited))
    plan = _planned(wd, tmp_path / "b.yaml")
    assert plan.pop("transfer") == 3 and set(plan) <= {"resolved_config", "results", "tables", "figures",
                                                        "paper", "versions", "all"}

    # the training recipe: everything that trains, nothing that does not depend on it (theta_0)
    edited = yaml.safe_load(yaml.safe_dump(raw))
    edited["suites"]["tiny"]["recipes"]["default"]["epochs"] = 3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(edited))
    plan = _planned(wd, tmp_path / "c.yaml")
    assert "init" not in plan and plan["find"] >= 3 and plan["dilt_partition"] == 5 and plan["retrain"] >= 4

    # dry runs with other configs changed nothing on disk
    assert _snapshot(wd) == before


def test_shell_and_path_injection_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for root in (f"$(touch {marker})", "../outside", f"results; touch {marker}"):
        raw = tiny_config()
        raw["results_root"] = root
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s",
                               str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                               "--configfile", str(tmp_path / "config.yaml")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "results_root" in proc.stderr
        assert not marker.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) in (["config.yaml"], [".snakemake", "config.yaml"])
    assert not (tmp_path.parent / "outside").exists()

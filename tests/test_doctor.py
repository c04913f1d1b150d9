"""`python -m dilt doctor`: names the missing data files of a suite and exits 1; a digits-only
suite is ready (exit 0) and the devices line says what is there; every problem has a fix line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, tiny_config

from dilt import doctor

CIFAR = "data/cifar100/cifar-100-python"


def _write(tmp: Path, raw: dict) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cifar_config(tmp: Path) -> Path:
    raw = tiny_config(datasets=["cifar100"], dataset_options={"cifar100": {"image_size": 32}},
                      transfer={"enabled": False, "sparsity": 0.8, "targets": []})
    return _write(tmp, raw)


def _doctor(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dilt", "doctor", "--config", "config.yaml", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_missing_data_files_are_named_and_exit_1(tmp_path):
    _cifar_config(tmp_path)
    (tmp_path / CIFAR).mkdir(parents=True)
    (tmp_path / CIFAR / "meta").write_bytes(b"x")      # one of the three files is there
    proc = _doctor(tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"FAIL  cifar100: {CIFAR}/train missing" in out
    assert f"FAIL  cifar100: {CIFAR}/test missing" in out
    assert f"ok    cifar100: {CIFAR}/meta present" in out
    fixes = [l for l in out.splitlines() if l.strip().startswith("fix:") and "cifar-100-python.tar.gz" in l]
    assert len(fixes) == 1, out
    assert "cannot run here" in out.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_digits_suite_is_ready_and_reports_the_devices(tmp_path):
    _write(tmp_path, tiny_config())
    proc = _doctor(tmp_path, "--suite", "tiny")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.splitlines()[-1].startswith("ready: suite tiny can run here")
    import torch

    if torch.cuda.is_available():
        assert "cuda:0" in out and "GiB" in out
    else:
        assert "CPU only" in out
    assert "digits: built in" in out and "digits_rot: built in" in out
    for section in ("Versions:", "Devices:", "TeX (paper/main.tex):", "SLURM:", "Data:", "Disk:"):
        assert section in out, section
    assert "FAIL" not in out


def test_every_problem_has_a_fix(tmp_path):
    cfg = _cifar_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["data_root"] = str(tmp_path / "nowhere")  # outside the repository: the config itself fails
    bad = _write(tmp_path, raw)
    checks = doctor.run_checks(bad)
    fails = [c for c in checks if c.status == doctor.FAIL]
    assert [c.area for c in fails] == ["config"]
    assert "data_root" in fails[0].detail and fails[0].fix
    assert {"versions", "devices", "tex", "slurm"} <= {c.area for c in checks}   # the rest still ran

    checks = doctor.run_checks(_cifar_config(tmp_path))
    by_set: dict[str, list] = {}
    for c in checks:
        if c.status == doctor.FAIL:
            by_set.setdefault((c.area, c.name), []).append(c)
    assert by_set
    for key, group in by_set.items():
        assert any(c.fix for c in group), key


def test_too_little_disk_fails(tmp_path):
    from dilt import config

    suite = config.load(_write(tmp_path, tiny_config()))
    need = doctor.estimate_bytes(suite)
    assert need > 0

    class Usage:
        def __init__(self, free):
            self.free = free

    (c,) = doctor.check_disk(suite, disk_usage=lambda p: Usage(need // 2))
    assert c.status == doctor.FAIL and "results_root" in c.fix
    (c,) = doctor.check_disk(suite, disk_usage=lambda p: Usage(need * 10))
    assert c.status == doctor.OK


def test_disk_estimate_grows_with_the_grid(tmp_path):
    from dilt import config

    small = config.load(_write(tmp_path, tiny_config()))
    big = config.load(_write(tmp_path, tiny_config(seeds=[0, 1, 2], sparsities=[0.5, 0.8, 0.95])))
    assert doctor.estimate_bytes(big) > 3 * (doctor.estimate_bytes(small) - 50 * 2**20)


def test_missing_package_and_missing_latexmk(monkeypatch):
    real = doctor.md.version

    def version(dist):
        if dist == "timm":
            raise doctor.md.PackageNotFoundError(dist)
        if dist == "torch":
            return "2.0.0"
        return real(dist)

    monkeypatch.setattr(doctor.md, "version", version)
    checks = {c.name: c for c in doctor.check_versions()}
    assert checks["timm"].status == doctor.FAIL and "pip install" in checks["timm"].fix
    assert checks["torch"].status == doctor.FAIL and "==2.14.1" in checks["torch"].detail

    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    (c,) = doctor.check_tex()
    assert c.status == doctor.WARN and "latexmk" in c.fix      # everything but the PDF builds
    checks, cluster = doctor.check_slurm()
    assert not cluster and all(c.status != doctor.FAIL for c in checks)


def test_paper_packages_come_from_the_manuscript():
    files = doctor.paper_packages()
    assert "article.cls" in files
    for sty in ("booktabs.sty", "multirow.sty", "makecell.sty", "amsmath.sty", "amssymb.sty"):
        assert sty in files

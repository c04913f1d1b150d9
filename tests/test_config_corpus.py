"""A corpus of malformed configs (tests/configs/bad/*.yaml), each merged onto workflow_config.yaml
the way `snakemake --configfile` merges it: every one is refused in ONE line naming the key its
first-line comment (`# expect: <key>  -- why`) announces; the repository's own config passes."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT

from dilt import config

BASE = ROOT / "workflow_config.yaml"
BAD = sorted((ROOT / "tests" / "configs" / "bad").glob("*.yaml"))
HEADER = re.compile(r"^# expect: (\S.*?)  -- (\S.*)$")
# a few run through the real command line, the rest in-process
VIA_CLI = ["iid5000", "duplicate_seeds", "results_parent", "use_yte_top", "device_tpu9"]


def expected_key(path) -> str:
    m = HEADER.match(path.read_text().splitlines()[0])
    assert m, f"{path.name}: first line must be '# expect: <key>  -- <what is wrong>'"
    return m.group(1)


def test_corpus_is_large_and_annotated():
    assert len(BAD) >= 60
    for path in BAD:
        expected_key(path)
    for name in VIA_CLI:
        assert (ROOT / "tests" / "configs" / "bad" / f"{name}.yaml") in BAD


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_is_refused_in_one_line_naming_the_key(path):
    key = expected_key(path)
    with pytest.raises(config.ConfigError) as e:
        config.validate(config.merged(BASE, [path]))
    msg = str(e.value)
    assert "\n" not in msg
    assert key in msg, f"{path.name}: {msg!r} does not name {key!r}"


@pytest.fixture(scope="module")
def cli_runs():
    """`python -m dilt validate --configfile <file>` for every VIA_CLI file, run concurrently."""
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "dilt", "validate", "--configfile",
         str(ROOT / "tests" / "configs" / "bad" / f"{name}.yaml")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in VIA_CLI}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=180)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("name", VIA_CLI)
def test_cli_refuses_bad_configfile(name, cli_runs):
    path = ROOT / "tests" / "configs" / "bad" / f"{name}.yaml"
    proc = cli_runs[name]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected_key(path) in lines[0]
    assert proc.stdout == ""


def test_repository_config_and_every_suite_validate():
    raw = config.merged(BASE)
    cfg = config.validate(raw)
    assert set(cfg["suites"]) == set(raw["suites"])
    for name in raw["suites"]:
        suite = config.load(BASE, suite=name)
        assert suite.name == name
        for model in suite.spec["models"]:
            for data in suite.spec["datasets"]:
                assert suite.recipe(model, data).epochs > suite.spec["prune"]["rewind_epoch"]

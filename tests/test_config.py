"""Config validation: defaults, and one-line errors that name the key, before any job runs."""

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, tiny_config
from dilt import config


def test_repo_config_is_valid_and_fills_defaults():
    raw = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    cfg = config.validate(raw)
    assert cfg["suite"] == "smoke"
    smoke = cfg["suites"]["smoke"]
    assert smoke["analysis"]["reduce"] == "gap"          # a default filled in
    assert {p["scheme"] for p in smoke["partitions"]} == {"contiguous", "iid"}
    assert len(smoke["seeds"]) == 3


@pytest.mark.parametrize("mutate, key", [
    (lambda s: s["sparsities"].__setitem__(1, 1.5), "suites.tiny.sparsities[1]"),
    (lambda s: s["prune"].__setitem__("rte", 0.3), "suites.tiny.prune"),
    (lambda s: s["recipes"]["default"].__setitem__("lr", "fast"), "suites.tiny.recipes.default.lr"),
    (lambda s: s["partitions"][0].__setitem__("scheme", "semantic"), "suites.tiny.partitions[0].scheme"),
    (lambda s: s.__setitem__("models", {"resnet7": {}}), "suites.tiny.models"),
    (lambda s: s.__setitem__("datasets", ["mnist"]), "suites.tiny.datasets[0]"),
    (lambda s: s["analysis"].__setitem__("sparsity", 0.6), "suites.tiny.analysis.sparsity"),
])
def test_bad_values_name_the_key(mutate, key):
    raw = tiny_config()
    mutate(raw["suites"]["tiny"])
    with pytest.raises(config.ConfigError) as e:
        config.validate(raw)
    msg = str(e.value)
    assert key in msg and "\n" not in msg


def test_unknown_suite_is_named():
    raw = tiny_config()
    raw["suite"] = "papr"
    with pytest.raises(config.ConfigError, match="'papr'"):
        config.validate(raw)


def test_recipe_merge_order(tmp_path):
    raw = tiny_config(recipes={"default": {"epochs": 3, "lr": 0.1}, "mlp": {"lr": 0.2},
                               "mlp/digits": {"batch_size": 32}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = config.load(path).recipe("mlp", "digits")
    assert (r.epochs, r.lr, r.batch_size) == (3, 0.2, 32)


def test_snakemake_refuses_a_malformed_config_before_any_job(tmp_path):
    raw = tiny_config()
    raw["suites"]["tiny"]["seeds"] = [0, -1]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml"), "--cores", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "suites.tiny.seeds[1]" in l]
    assert len(lines) == 1 and "-1" in lines[0]
    assert not (tmp_path / "results").exists()   # nothing ran, nothing was written


def test_cli_reports_config_errors_in_one_line(tmp_path):
    raw = tiny_config()
    raw["suites"]["tiny"]["prune"]["rate"] = 2
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "dilt", "validate", "--config", str(tmp_path / "bad.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "suites.tiny.prune.rate" in proc.stderr

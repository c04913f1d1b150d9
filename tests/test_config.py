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


# --- strict loading and Snakemake's merge ------------------------------------------------------

def test_merged_is_snakemakes_recursive_update(tmp_path):
    from snakemake.utils import update_config as snakemake_update

    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": [1], "g": 1}
    overrides = [{"a": {"c": [3], "d": {"x": 2}}, "f": {"y": 1}},
                 {"a": {"b": 5, "d": 7}, "g": {}, "h": {"i": {}}}]
    paths = []
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    for i, o in enumerate(overrides):
        paths.append(tmp_path / f"o{i}.yaml")
        paths[-1].write_text(yaml.safe_dump(o))
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    expect = yaml.safe_load(yaml.safe_dump(base))
    for o in overrides:
        snakemake_update(expect, o)
    assert config.merged(tmp_path / "base.yaml", [*paths, tmp_path / "empty.yaml"]) == expect
    assert expect["a"] == {"b": 5, "c": [3], "d": 7} and expect["f"] == {"y": 1}


def test_duplicated_keys_are_refused_at_any_depth(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("suite: tiny\nsuites:\n  tiny:\n    prune: {rate: 0.2, rate: 0.5}\n")
    with pytest.raises(config.ConfigError, match=r"duplicated key 'rate'.*line 4") as e:
        config.load_yaml(p)
    assert "\n" not in str(e.value)
    p.write_text("a: {b: 1}\nc: 2\n")
    assert config.load_yaml(p) == {"a": {"b": 1}, "c": 2}


def test_cli_configfile_is_merged_onto_config_and_repeatable(tmp_path, capsys):
    from dilt import cli

    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("suites:\n  smoke:\n    seeds: [7]\n    recipes: {mlp: {epochs: 5}}\n")
    b.write_text("suites:\n  smoke:\n    seeds: [8, 9]\n")
    rc = cli.main(["validate", "--config", str(ROOT / "workflow_config.yaml"),
                   "--configfile", str(a), "--configfile", str(b)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "seeds [8, 9]" in out and "models ['mlp', 'cnn'" in out   # b wins; the base keeps the rest
    assert "recipe mlp/digits: epochs=5," in out and "recipe cnn/digits: epochs=8, batch_size=64," in out


# --- new keys, registries and semantic checks ---------------------------------------------------

def test_new_suite_keys_get_defaults():
    s = config.validate(tiny_config())["suites"]["tiny"]
    assert s["batch_trainings"] is True
    assert s["method_options"] == {} and s["claims"] == [] and s["flags"] == {}
    assert s["val_fraction"] == 0.2


def test_every_registered_method_is_in_the_schema_enum():
    from dilt.methods import method_names

    schema = yaml.safe_load(config.SCHEMA.read_text())
    enum = schema["$defs"]["suite"]["properties"]["methods"]["items"]["enum"]
    assert set(enum) >= {"lth", "dilt", "colt", "snip", "grasp", "random_uniform", "random_erk",
                         "rigl", "cap", "savit"}
    assert set(method_names()) <= set(enum)


def test_the_tickets_come_from_the_one_per_partition_method(monkeypatch):
    """Paths, provenance, entry names and the budget find the tickets' source method through
    ``ticket_method()`` (DiLT): it is the one method registered per partition, and a second one
    is refused rather than silently picked."""
    import dilt.methods as m
    from dilt import workflow as W
    from dilt.methods.iterative import DILT

    assert m.ticket_method() is DILT and [x.name for x in m.methods() if x.per_partition] == ["dilt"]
    spec = config.validate(tiny_config(methods=["lth", "dilt"]))["suites"]["tiny"]
    names = W.entries(spec, "tickets", W.tags(spec)[0])
    assert names and all(n.startswith("dilt_") and W.source_of(n) == "tickets" for n in names)
    assert W.source_of("lth_mask_s0.5") == "lth"
    twin = m.Method(name="dilt_twin", kind="iterative", display="twin", find=None,
                    per_partition=True, on_partitions=True)
    monkeypatch.setitem(m._REGISTRY, "dilt_twin", twin)
    with pytest.raises(RuntimeError, match=r"exactly one method may run per partition.*dilt_twin"):
        m.ticket_method()


def test_val_fraction_per_data_set():
    """A mapping gives each data set its own validation share ('default' for the rest); a plain
    number keeps the provenance hash it had before mappings existed."""
    from dilt import provenance as prov

    spec = config.validate(tiny_config(val_fraction={"default": 0.1, "digits_rot": 0.3}))["suites"]["tiny"]
    assert config.val_fraction(spec, "digits") == 0.1 and config.val_fraction(spec, "digits_rot") == 0.3
    assert config.val_fraction({"val_fraction": {"digits": 0.3}}, "digits_rot") == config.VAL_FRACTION
    plain = config.validate(tiny_config(val_fraction=0.1))["suites"]["tiny"]
    assert prov._data(plain, "digits", 0)["val_fraction"] == 0.1
    assert prov._data(spec, "digits", 0) == prov._data(plain, "digits", 0)
    assert prov._data(spec, "digits_rot", 0)["val_fraction"] == 0.3
    # the pre-flight check uses each data set's share: 0.01 of digits leaves iid halves too few
    with pytest.raises(config.ConfigError, match=r"partitions\[0\]\.n: 2 iid parts .* val_fraction 0\.01"):
        config.validate(tiny_config(partitions=[{"n": 2, "scheme": "iid"}],
                                    val_fraction={"default": 0.2, "digits": 0.01}))


def test_method_in_enum_but_not_registered_is_refused(monkeypatch):
    import dilt.methods as m

    real = m.method_names
    monkeypatch.setattr(m, "method_names", lambda: [n for n in real() if n != "grasp"])
    with pytest.raises(config.ConfigError) as e:
        config.validate(tiny_config(methods=["lth", "grasp"]))
    assert "suites.tiny.methods[1]" in str(e.value) and "'grasp' is not registered" in str(e.value)


def test_every_merged_recipe_goes_through_recipe_from_dict(monkeypatch):
    from dilt.train import Recipe, RecipeError

    seen = []
    real = Recipe.from_dict.__func__

    def spy(cls, d):
        seen.append(dict(d))
        return real(cls, d)

    monkeypatch.setattr(Recipe, "from_dict", classmethod(spy))
    config.validate(tiny_config(recipes={"default": {"epochs": 3, "lr": 0.1}, "mlp": {"lr": 0.2},
                                         "mlp/digits_rot": {"batch_size": 32}}))
    assert {"epochs": 3, "lr": 0.2} in seen and {"epochs": 3, "lr": 0.2, "batch_size": 32} in seen

    def refuse(cls, d):
        raise RecipeError("recipe.lr: 0.2 is refused by the loop")

    monkeypatch.setattr(Recipe, "from_dict", classmethod(refuse))
    with pytest.raises(config.ConfigError, match=r"suites\.tiny\.recipes \(merged for mlp/digits\): recipe\.lr"):
        config.validate(tiny_config())


def test_claims_are_checked_by_the_verdicts_module_when_present(monkeypatch):
    import types

    calls = []

    def check_claims(claims):
        calls.append(claims)
        if claims[0].get("metric") != "top1":
            raise ValueError(f"claims[0].metric: {claims[0].get('metric')!r} is not a metric")

    fake = types.ModuleType("dilt.report.verdicts")
    fake.check_claims = check_claims
    monkeypatch.setitem(sys.modules, "dilt.report.verdicts", fake)
    config.validate(tiny_config(claims=[{"metric": "top1"}]))
    with pytest.raises(config.ConfigError) as e:
        config.validate(tiny_config(claims=[{"metric": "acc"}]))
    assert "suites.tiny.claims" in str(e.value) and "'acc'" in str(e.value)
    assert len(calls) == 2


def test_iid_limit_follows_the_data():
    classes, tr, va = config.data_facts("digits", 0.2, {})
    assert classes == 10 and tr > va > 0
    n_max = min(tr, va) // config.MIN_PER_CLASS
    config.validate(tiny_config(partitions=[{"n": n_max, "scheme": "iid"}]))
    with pytest.raises(config.ConfigError, match=rf"suites\.tiny\.partitions\[0\]\.n: {n_max + 1} iid"):
        config.validate(tiny_config(partitions=[{"n": n_max + 1, "scheme": "iid"}]))
    config.validate(tiny_config(partitions=[{"n": 10, "scheme": "contiguous"}]))


def test_analysis_k_is_bounded_by_each_models_layers():
    assert config.layer_count("mlp", 10, (1, 8, 8)) == 3
    config.validate(tiny_config(analysis={"sparsity": 0.5, "k": 3}))
    with pytest.raises(config.ConfigError, match=r"suites\.tiny\.analysis\.k: 4 .* 3 weight layers of mlp"):
        config.validate(tiny_config(analysis={"sparsity": 0.5, "k": 4}))


@pytest.mark.parametrize("value, ok", [
    ("results", True), ("out/run_1", True), (str(ROOT / "results"), True), ("./r", True),
    ("../results", False), ("/tmp/results", False), ("r/../../x", False), ("$(id)", False),
    ("a;b", False), ("-x", False), ("r`id`", False), ("", False),
])
def test_results_root_is_confined(value, ok):
    raw = tiny_config()
    raw["results_root"] = value
    if ok:
        assert config.validate(raw)["results_root"] == value
    else:
        with pytest.raises(config.ConfigError, match="results_root"):
            config.validate(raw)


def test_adamw_recipe_keys_are_accepted():
    r = tiny_config(recipes={"default": {"epochs": 2, "optimizer": "adamw", "betas": [0.9, 0.98],
                                         "grad_clip": 1.0, "device": "cuda:1"}})
    config.validate(r)

"""The declarative experiment config: strict loading, validation and typed access to one suite.

``workflow_config.yaml`` (merged with any ``--configfile`` the way Snakemake merges them, see
:func:`merged`) is checked in three passes, each reporting its first problem as ONE line that
names the offending key and value, before any job starts:

1. the raw tree: non-finite numbers anywhere, ``__use_yte__`` anywhere (Snakemake would run
   the file as a YTE template, i.e. as code); duplicated mapping keys are caught earlier, by
   :func:`load_yaml`;
2. ``schemas/config.schema.yaml`` (JSON Schema; integers must be real integers, not ``1e30``
   floats; defaults are then filled in);
3. what the code knows: model, dataset and method registries, paths confined to the
   repository, partition sizes against the data (digits is loaded, it is cheap; for the real
   data sets only what is known without their files is checked: class counts, and the official
   per-class training-set sizes of ImageNet and CIFAR-100), every merged recipe through
   :meth:`dilt.train.Recipe.from_dict`, late rewinding and warm-up against the epochs, the
   analysis ``k`` against each model's layer count (built on the meta device), loader and
   method options against what the loader and the method accept.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
PREFIX = "workflow config: "

# run by `dilt imp` itself, so accepted even before dilt/methods registers them
# loaded at validation time to count samples per class (embedded, milliseconds)
EMBEDDED_DATA = ("digits", "digits_rot")
# what is known of the real data sets without their files: (classes, fewest official training
# images of one class, or None where that is not known exactly)
# (classes, fewest training images of one class in the official split)
KNOWN_DATA = {"imagenet": (1000, 732), "cifar100": (100, 500),
              "stanford_cars": (196, 24), "cub200": (200, 29)}
VAL_FRACTION = 0.2  # the schema's default


def val_fraction(spec: dict, dataset: str) -> float:
    """The suite's validation share for ``dataset``: its ``val_fraction`` number, or from a
    mapping the data set's entry, else its ``default``, else 0.2."""
    v = spec.get("val_fraction", VAL_FRACTION)
    if isinstance(v, dict):
        return float(v.get(dataset, v.get("default", VAL_FRACTION)))
    return float(v)
# every part of an iid partition keeps at least this many samples of every class (train and val)
MIN_PER_CLASS = 3
# parameters every loader gets from the suite itself, never from dataset_options
LOADER_RESERVED = ("root", "seed", "val_fraction")
PATH_CHARS = re.compile(r"^[A-Za-z0-9_./-]+$")


ENV_CONFIG = "DILT_CONFIG"  # `--config env:DILT_CONFIG`: the workflow hands its jobs the config


class ConfigError(ValueError):
    """A config value is invalid; the message is one line naming the key."""


def _fail(key: str, msg: str) -> ConfigError:
    return ConfigError(f"{PREFIX}{key}: {msg}".replace("\n", " "))


# --- loading -----------------------------------------------------------------------------------

class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable key {key!r}", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicated key {key!r} (first on line {seen[key] + 1}, "
                    f"again on line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """Parse one YAML file strictly; every problem is one ConfigError line naming the file."""
    path = Path(path)
    try:
        text = os.environ[ENV_CONFIG] if str(path) == f"env:{ENV_CONFIG}" else path.read_text()
    except KeyError:
        raise ConfigError(f"{path}: the environment variable {ENV_CONFIG} is not set "
                          "(jobs started by snakemake get it; otherwise pass --config FILE)") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    try:
        loader = StrictLoader(text)  # a SafeLoader that also refuses duplicated keys
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{line}: {what}".replace("\n", " ")) from None


def update_config(base: dict, override: dict) -> dict:
    """Snakemake's merge of a ``--configfile`` into the config: recursive dict update in place
    (a mapping merges into a mapping; anything else, lists included, replaces). Mirrors
    ``snakemake.utils.update_config`` case for case, returning the updated ``base``."""
    for key, value in override.items():
        if not isinstance(base, dict):
            base = {}
        if isinstance(value, dict):
            base[key] = update_config(base.get(key, {}), value)
        else:
            base[key] = value
    return base


def merged(base_path: str | Path, overrides: Iterable[str | Path] = ()) -> dict:
    """The config Snakemake runs for ``configfile: base_path`` and ``--configfile`` overrides:
    the base updated recursively by each override file in order."""
    cfg = load_yaml(base_path)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{base_path}: the top level is not a mapping")
    for path in overrides:
        extra = load_yaml(path)
        if extra is None:
            continue
        if not isinstance(extra, dict):
            raise ConfigError(f"{path}: the top level is not a mapping")
        cfg = update_config(cfg, extra)
    return cfg


# --- pass 1: the raw tree ----------------------------------------------------------------------

def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def check_tree(node: Any, parts: tuple = ()) -> None:
    """Non-finite numbers and ``__use_yte__`` anywhere in the tree are errors."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "__use_yte__":
                raise _fail(_path(parts + (k,)), "YTE templates are refused (Snakemake would "
                            "evaluate this file as code); remove the key")
            if not isinstance(k, str):
                raise _fail(_path(parts + (str(k),)), f"key {k!r} is not a string")
            check_tree(v, parts + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_tree(v, parts + (i,))
    elif isinstance(node, float) and not math.isfinite(node):
        raise _fail(_path(parts), f"{node!r} is not a finite number")


# --- pass 2: the schema ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _schema(schema_path: str) -> dict:
    return yaml.safe_load(Path(schema_path).read_text())


def _validator_class():
    """Draft 2020-12 where ``integer`` means a Python int (not 1e30 or 3.0, not a bool)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    return jsonschema.validators.extend(base, type_checker=checker)


def schema_errors(config: dict, schema_path: str | Path = SCHEMA) -> list[str]:
    """One line per schema violation (``key.path: message``), most relevant first."""
    import jsonschema

    validator = _validator_class()(_schema(str(schema_path)))
    errors = sorted(validator.iter_errors(config), key=jsonschema.exceptions.relevance)
    lines = []
    for e in errors:
        best = jsonschema.exceptions.best_match([e])
        msg = best.message
        if best.validator == "additionalProperties":
            msg = msg.replace("Additional properties are not allowed", "unknown key")
        lines.append(f"{_path(best.absolute_path)}: {msg}".replace("\n", " "))
    return lines


def _fill_defaults(node: Any, schema: dict, defs: dict) -> Any:
    """Fill JSON-schema ``default`` values into ``node`` (objects only), recursively."""
    if "$ref" in schema:
        schema = {**defs[schema["$ref"].split("/")[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    if not isinstance(node, dict) or schema.get("type") != "object":
        return node
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            node[key] = _fill_defaults(node[key], sub, defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in node:
            if key not in schema.get("properties", {}):
                node[key] = _fill_defaults(node[key], extra, defs)
    return node


# --- pass 3: what the code knows ---------------------------------------------------------------

def validate(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Validate ``config`` (tree, schema, semantics); return a copy with defaults filled in.
    Raises :class:`ConfigError` with one line naming the first offending key."""
    if not isinstance(config, dict):
        raise ConfigError(f"{PREFIX}(top level): the config is not a mapping")
    check_tree(config)
    errors = schema_errors(config, schema_path)
    if errors:
        raise ConfigError(f"{PREFIX}{errors[0]}")
    schema = _schema(str(schema_path))
    config = _fill_defaults(copy.deepcopy(config), schema, schema.get("$defs", {}))
    if config["suite"] not in config["suites"]:
        raise _fail("suite", f"{config['suite']!r} is not one of the suites "
                    f"({', '.join(config['suites'])})")
    for key in ("results_root", "data_root"):
        check_path(key, config[key])
    for name, suite in config["suites"].items():
        _check_suite(name, suite)
    return config


def check_path(key: str, value: str) -> None:
    """A path that may reach a shell or the file system: plain characters, no ``..``, no
    leading ``-``, absolute only inside the repository."""
    if not isinstance(value, str) or not value or not PATH_CHARS.match(value):
        raise _fail(key, f"{value!r} may hold only letters, digits and _ . / -")
    if value.startswith("-"):
        raise _fail(key, f"{value!r} must not start with '-'")
    if ".." in Path(value).parts:
        raise _fail(key, f"{value!r} must not contain '..'")
    if os.path.isabs(value):
        norm = Path(os.path.normpath(value))
        if norm != ROOT and ROOT not in norm.parents:
            raise _fail(key, f"{value!r} is an absolute path outside the repository ({ROOT}); "
                        "use a relative path or a symbolic link inside it")


def _check_suite(name: str, s: dict) -> None:
    key = f"suites.{name}"
    _check_names(key, s)
    _check_methods(key, s)
    _check_dataset_options(key, s)
    _check_model_options(key, s)
    _check_recipes(key, s)
    _check_partitions(key, s)
    _check_analysis(key, s)
    _check_targets_keep_weights(key, s)
    _check_seeds(key, s)
    _check_claims(key, s)
    _check_ddp(key, s)
    _check_resources(key, s)


# the stages the rules ask resources for (rules/common.smk: res(stage)); 'default' is the base
RESOURCE_STAGES = ("default", "init", "imp", "retrain", "transfer", "tickets", "analyze", "report")


def _check_resources(key: str, s: dict) -> None:
    for stage in s.get("resources") or {}:
        if stage not in RESOURCE_STAGES:
            raise _fail(f"{key}.resources.{stage}", f"is not a stage of the workflow "
                        f"({', '.join(RESOURCE_STAGES)})")


def _check_ddp(key: str, s: dict) -> None:
    """Each key names a model (or model/dataset) of the suite, and every global batch it
    covers splits evenly over its GPUs (the loop keeps ``batch_size`` the global batch)."""
    from dilt.train import Recipe
    from dilt.workflow import gpus, stage_resources

    data = list(dict.fromkeys(s["datasets"] + s["transfer"]["targets"]))
    ddp = s.get("ddp") or {}
    for k in ddp:
        model, _, dataset = k.partition("/")
        if model not in s["models"] or (dataset and dataset not in data):
            raise _fail(f"{key}.ddp.{k}", f"names no model (or model/dataset) of the suite "
                        f"(models: {', '.join(s['models'])}; data sets: {', '.join(data)})")
    # the GPUs of a training job, as the rules ask them (dilt.workflow.gpus): the ddp key, else
    # the stage's resources (named in an error by the key that set them)
    res = s.get("resources") or {}
    stage_gpus = {}
    for stage in ("imp", "retrain", "transfer"):
        src = stage if "gpu" in (res.get(stage) or {}) else "default"
        stage_gpus[f"resources.{src}.gpu"] = int(stage_resources(s, stage)["gpu"])
    for model in s["models"]:
        for d in data:
            merged = merged_recipe(s, model, d)
            batch, device = merged.get("batch_size", Recipe.batch_size), str(merged.get("device", "auto"))
            key_of = next((f"ddp.{k}" for k in (f"{model}/{d}", model) if k in ddp), None)
            for src, default in stage_gpus.items():
                n = gpus(s, model, d, default)
                if n > 1 and batch % n:
                    raise _fail(f"{key}.{key_of or src}", f"{n} GPUs do not split the {model}/{d} "
                                f"recipe's batch_size {batch} evenly")
                if n > 1 and device.startswith("cuda:"):
                    raise _fail(f"{key}.{key_of or src}", f"{n} GPUs (DDP) with the {model}/{d} recipe's "
                                f"device {device!r}: every rank would train on that one GPU; use "
                                "'cuda' or 'auto'")


PRUNE_OPTIONS = ("prune_first", "prune_head")


def _check_model_options(key: str, s: dict) -> None:
    """Every model builds with its options (on the meta device: no memory)."""
    for m, opts in s["models"].items():
        build = {k: v for k, v in (opts or {}).items() if k not in PRUNE_OPTIONS}
        if not build:
            continue
        for d in s["datasets"]:
            error = _build_error(m, *_input_facts(s, d), json.dumps(build, sort_keys=True))
            if error:
                raise _fail(f"{key}.models.{m}", f"{m} does not take the options {build} "
                            f"({error})")


@functools.cache
def _build_error(model: str, classes: int, shape: tuple[int, ...], options: str) -> str | None:
    """The first line of the error building ``model`` with ``options`` (JSON) raises, or None.
    Cached: a timm ViT takes ~0.3 s even on the meta device, and every job validates its config
    (the fork server warms this cache once for all the jobs of a local run)."""
    import torch

    from dilt.models import build_model

    try:
        with torch.device("meta"):
            build_model(model, classes, shape, **json.loads(options))
    except (TypeError, ValueError) as e:
        return str(e).splitlines()[0]
    return None


def _check_names(key: str, s: dict) -> None:
    from dilt.data import dataset_names
    from dilt.models import model_names

    for m in s["models"]:
        if m not in model_names():
            raise _fail(f"{key}.models", f"unknown model {m!r} (known: {', '.join(model_names())})")
    for i, d in enumerate(s["datasets"]):
        if d not in dataset_names():
            raise _fail(f"{key}.datasets[{i}]", f"unknown dataset {d!r} (known: {', '.join(dataset_names())})")
    for i, d in enumerate(s["transfer"]["targets"]):
        if d not in dataset_names():
            raise _fail(f"{key}.transfer.targets[{i}]", f"unknown dataset {d!r} (known: {', '.join(dataset_names())})")
    sp = sorted(s["sparsities"])
    for sub in ("analysis", "transfer"):
        t = s[sub].get("sparsity")
        if t is not None and t not in sp:
            raise _fail(f"{key}.{sub}.sparsity", f"{t} is not one of the suite's sparsities {sp}")


def _registry() -> dict:
    """Registered methods by name (importing dilt/methods registers them)."""
    try:
        from dilt.methods import get_method, method_names

        return {n: get_method(n) for n in method_names()}
    except Exception as e:  # a method module that fails to import must still give one line
        raise _fail("methods", f"the method registry failed to load ({type(e).__name__}: {e})") from None


def _check_methods(key: str, s: dict) -> None:
    reg = _registry()
    available = set(reg)
    for i, m in enumerate(s["methods"]):
        if m not in available:
            raise _fail(f"{key}.methods[{i}]", f"{m!r} is not registered in dilt.methods "
                        f"(registered: {', '.join(sorted(available))})")
    for m, opts in s["method_options"].items():
        k = f"{key}.method_options.{m}"
        if m not in reg:
            raise _fail(k, f"{m!r} is not a registered method (registered: {', '.join(sorted(reg))})")
        _check_options(k, opts, reg[m].options, f"the options of {m}")
        if reg[m].check is not None:
            try:
                reg[m].check({**reg[m].options, **opts})
            except ValueError as e:
                raise _fail(k, str(e)) from None


def _check_options(key: str, given: dict, accepted: dict, what: str) -> None:
    """Every key of ``given`` is one of ``accepted`` (name -> default), with the default's type
    (bool for a bool, an int for an int, a number for a float) where the default has one."""
    for opt, value in given.items():
        if opt not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise _fail(f"{key}.{opt}", f"unknown option {opt!r} ({what}: {known})")
        default = accepted[opt]
        ok = True
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        if not ok:
            raise _fail(f"{key}.{opt}", f"{value!r} is not of type {type(default).__name__} "
                        f"(the default is {default!r})")


def merged_recipe(s: dict, model: str, dataset: str) -> dict:
    """'default', then '<model>', then '<model>/<dataset>' (what :meth:`Suite.recipe` uses)."""
    r = s["recipes"]
    return {**r.get("default", {}), **r.get(model, {}), **r.get(f"{model}/{dataset}", {})}


def _recipe_source(s: dict, model: str, dataset: str, field: str) -> str:
    """The recipe entry that sets ``field`` for (model, dataset) after the merge."""
    for name in (f"{model}/{dataset}", model, "default"):
        if field in s["recipes"].get(name, {}):
            return name
    return "default"


def _iterative(s: dict) -> bool:
    reg = _registry()
    return any(reg[m].kind == "iterative" for m in s["methods"] if m in reg)


def _check_recipes(key: str, s: dict) -> None:
    from dilt.train import Recipe, RecipeError

    targets = s["transfer"]["targets"]
    for r in s["recipes"]:
        model, _, data = r.partition("/")
        if r != "default" and (model not in s["models"] or (data and data not in s["datasets"] + targets)):
            raise _fail(f"{key}.recipes.{r}", "names no model (or model/dataset) of the suite")
    rewind = s["prune"]["rewind_epoch"]
    if s["prune"].get("rewind_start", "own") != "own" and rewind == 0:
        raise _fail(f"{key}.prune.rewind_start", f"{s['prune']['rewind_start']!r} needs late "
                    "rewinding (rewind_epoch > 0); with rewind_epoch 0 every mask starts from theta_0")
    imp = _iterative(s)
    for model in s["models"]:
        for data in list(dict.fromkeys(s["datasets"] + targets)):
            rec = merged_recipe(s, model, data)
            epochs = rec.get("epochs", Recipe.epochs)
            warm = rec.get("warmup_epochs", 0)
            if warm and warm >= epochs:
                src = _recipe_source(s, model, data, "warmup_epochs")
                raise _fail(f"{key}.recipes.{src}.warmup_epochs",
                            f"{warm} is not below epochs ({epochs}) of {model}/{data}")
            if imp and data in s["datasets"] and rewind >= epochs:
                raise _fail(f"{key}.prune.rewind_epoch",
                            f"{rewind} is not below epochs ({epochs}) of the {model}/{data} recipe used for IMP")
            try:
                Recipe.from_dict(rec)
            except (RecipeError, TypeError, ValueError) as e:
                raise _fail(f"{key}.recipes (merged for {model}/{data})", str(e)) from None


@functools.lru_cache(maxsize=32)
def _digits_counts(name: str, fraction: float, options: tuple) -> tuple[int, int, int]:
    """(classes, fewest train samples of a class, fewest validation samples of a class)."""
    import numpy as np

    from dilt.data import load_dataset

    b = load_dataset(name, seed=0, val_fraction=fraction, **dict(options))
    tr = np.bincount(b.train_targets, minlength=b.num_classes)
    va = np.bincount(b.val_targets, minlength=b.num_classes)
    return b.num_classes, int(tr.min()), int(va.min())


def data_facts(name: str, fraction: float, options: dict) -> tuple[int | None, int | None, int | None]:
    """(classes, fewest train and validation samples of one class) as far as known without
    reading a real data set's files; None where unknown."""
    if name in EMBEDDED_DATA:
        return _digits_counts(name, fraction, tuple(sorted(options.items())))
    classes, per_class = KNOWN_DATA.get(name, (None, None))
    if per_class is None:
        return classes, None, None
    val = int(round(fraction * per_class))   # dilt.data.stratified_split, per class
    return classes, per_class - val, val


def _check_partitions(key: str, s: dict) -> None:
    tags = [f"{p['scheme']}{p['n']}" for p in s["partitions"]]
    if len(set(tags)) != len(tags):
        raise _fail(f"{key}.partitions", "the same scheme and n appear twice")
    for i, p in enumerate(s["partitions"]):
        n, scheme = p["n"], p["scheme"]
        for d in s["datasets"]:
            from dilt.data.partition import scheme_problem

            problem = scheme_problem(scheme, n, d)
            if problem:
                raise _fail(f"{key}.partitions[{i}].scheme", problem)
            opts = (s.get("dataset_options") or {}).get(d, {})
            try:
                classes, tr, va = data_facts(d, val_fraction(s, d), opts)
            except Exception as e:  # the embedded loader refusing an option value
                raise _fail(f"{key}.dataset_options.{d}", f"the loader refused {opts} "
                            f"({type(e).__name__}: {e})") from None
            k = f"{key}.partitions[{i}].n"
            if scheme != "iid" and classes is not None and n > classes:
                raise _fail(k, f"{n} {scheme} partitions of the {classes} classes of {d}: "
                            "every part needs at least one class")
            if scheme == "iid" and tr is not None:
                for split, fewest in (("train", tr), ("validation", va)):
                    if fewest // n < MIN_PER_CLASS:
                        raise _fail(k, f"{n} iid parts leave {fewest // n} {split} samples of some "
                                    f"class of {d} in a part (fewest per class: {fewest}; at least "
                                    f"{MIN_PER_CLASS} needed; val_fraction {val_fraction(s, d)})")


def _loader_check(name: str):
    """The ``check_options(options)`` of a data set loader's module, if it has one."""
    import sys

    from dilt.data import get_loader

    return getattr(sys.modules.get(get_loader(name).__module__), "check_options", None)


def _loader_options(name: str) -> dict:
    """Options a data set's loader accepts (name -> default): its keyword parameters, or, when
    it forwards ``**options``, those of its module's ``_bundle`` (the image-folder loaders)."""
    import sys

    from dilt.data import get_loader

    fn = get_loader(name)
    params = dict(inspect.signature(fn).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        inner = getattr(sys.modules.get(fn.__module__), "_bundle", None)
        params = {k: v for k, v in params.items() if v.kind is not v.VAR_KEYWORD}
        if inner is not None:
            params.update({k: v for k, v in inspect.signature(inner).parameters.items()
                           if v.kind is v.KEYWORD_ONLY})
    return {k: (None if p.default is p.empty else p.default) for k, p in params.items()
            if k not in LOADER_RESERVED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _check_dataset_options(key: str, s: dict) -> None:
    used = s["datasets"] + s["transfer"]["targets"]
    if isinstance(s.get("val_fraction"), dict):
        for d in s["val_fraction"]:
            if d != "default" and d not in used:
                raise _fail(f"{key}.val_fraction.{d}", f"{d!r} is not a data set of the suite "
                            f"({', '.join(used)}) nor 'default'")
    for d, opts in (s.get("dataset_options") or {}).items():
        if d not in used:
            raise _fail(f"{key}.dataset_options.{d}", f"{d!r} is not a data set of the suite ({', '.join(used)})")
        _check_options(f"{key}.dataset_options.{d}", opts, _loader_options(d), f"the loader of {d} accepts")
        check = _loader_check(d)
        if check is not None:
            try:
                check(opts)
            except ValueError as e:
                raise _fail(f"{key}.dataset_options.{d}", str(e)) from None


@functools.lru_cache(maxsize=64)
def layer_count(model: str, num_classes: int, input_shape: tuple[int, ...]) -> int:
    """Number of conv / linear layers of ``model`` (built on the meta device: no memory)."""
    import torch

    from dilt.models import build_model, weight_layers

    with torch.device("meta"):
        return len(weight_layers(build_model(model, num_classes, input_shape)))


def _input_facts(s: dict, dataset: str) -> tuple[int, tuple[int, ...]]:
    if dataset in EMBEDDED_DATA:
        return 10, (1, 8, 8)
    size = (s.get("dataset_options") or {}).get(dataset, {}).get("image_size", 224)
    return KNOWN_DATA.get(dataset, (10, None))[0] or 10, (3, size, size)


def _check_analysis(key: str, s: dict) -> None:
    k = s["analysis"]["k"]
    if k == "auto":
        return
    for model in s["models"]:
        for d in s["datasets"]:
            n = layer_count(model, *_input_facts(s, d))
            if k > n:
                raise _fail(f"{key}.analysis.k", f"{k} clusters exceed the {n} weight layers of {model}")


def _check_targets_keep_weights(key: str, s: dict) -> None:
    """The highest target sparsity keeps at least one prunable weight of every model (a target
    like 0.9999999 would otherwise ask IMP for an empty mask after hours of training)."""
    from dilt.prune.magnitude import keep_count

    i, top = max(enumerate(s["sparsities"]), key=lambda e: e[1])
    for m, opts in s["models"].items():
        for d in s["datasets"]:
            n = _prunable_count(m, *_input_facts(s, d), json.dumps(opts or {}, sort_keys=True))
            if keep_count(n, top) < 1:
                raise _fail(f"{key}.sparsities[{i}]", f"{top} keeps no weight of the {n} "
                            f"prunable weights of {m} on {d}")


@functools.cache
def _prunable_count(model: str, classes: int, shape: tuple[int, ...], options: str) -> int:
    """How many weights of ``model`` (built with ``options``, JSON) are prunable (meta device)."""
    import torch

    from dilt.models import build_model, prunable_names

    opts = json.loads(options)
    prune = {k: opts.pop(k) for k in PRUNE_OPTIONS if k in opts}
    with torch.device("meta"):
        net = build_model(model, classes, shape, **opts)
    params = dict(net.named_parameters())
    return sum(params[n].numel() for n in prunable_names(net, **prune))


def _check_seeds(key: str, s: dict) -> None:
    top = max(s["seeds"]) + s["transfer"]["init_seed_offset"]
    if top >= 2**31:
        raise _fail(f"{key}.transfer.init_seed_offset",
                    f"{s['transfer']['init_seed_offset']} plus seed {max(s['seeds'])} reaches 2**31")


def _check_claims(key: str, s: dict) -> None:
    if not s["claims"]:
        return
    try:
        from dilt.report.verdicts import check_claims
    except ImportError:
        return
    try:
        check_claims(s["claims"])
    except ValueError as e:
        raise _fail(f"{key}.claims", str(e)) from None


# --- typed access ------------------------------------------------------------------------------

def load(path: str | Path = "workflow_config.yaml", suite: str | None = None,
         overrides: Iterable[str | Path] = ()) -> Suite:
    """The validated suite of ``path`` merged with ``overrides`` (Snakemake's ``--configfile``)."""
    raw = merged(path, overrides)
    if suite is not None:
        raw["suite"] = suite
    cfg = validate(raw)
    return Suite(cfg["suite"], cfg["suites"][cfg["suite"]], cfg)


def describe(suite: Suite) -> str:
    """The grid a validated suite runs, for ``dilt validate``: one header line, one recipe line
    per (model, dataset) pair, the output folder."""
    s = suite.spec
    lines = [f"suite {suite.name}: models {list(s['models'])}, datasets {s['datasets']}, "
             f"partitions {suite.partition_tags()}, sparsities {s['sparsities']}, "
             f"methods {s['methods']}, seeds {s['seeds']}"]
    targets = s["transfer"]["targets"] if s["transfer"]["enabled"] else []
    for model in s["models"]:
        for data in dict.fromkeys(s["datasets"] + targets):
            r = asdict(suite.recipe(model, data))
            lines.append(f"  recipe {model}/{data}: " + ", ".join(f"{k}={v}" for k, v in r.items()))
    lines.append(f"  prune {s['prune']}; transfer targets {targets}; results in {suite.results_dir}")
    return "\n".join(lines)


@dataclass
class Suite:
    """One validated suite, with helpers for what the jobs need."""

    name: str
    spec: dict
    config: dict

    def __getitem__(self, key: str) -> Any:
        return self.spec[key]

    @property
    def results_dir(self) -> Path:
        return Path(self.config.get("results_root", "results")) / self.name

    @property
    def data_root(self) -> Path:
        return Path(self.config.get("data_root", "data"))

    def recipe(self, model: str, dataset: str):
        from dilt.train import Recipe

        return Recipe.from_dict(merged_recipe(self.spec, model, dataset))

    def model_options(self, model: str) -> dict:
        return dict(self.spec["models"][model] or {})

    def build_options(self, model: str) -> dict:
        """The model's options that build it (the others choose its prunable weights)."""
        return {k: v for k, v in self.model_options(model).items() if k not in PRUNE_OPTIONS}

    def prune_options(self, model: str) -> dict:
        """The model's options that choose its prunable weights."""
        return {k: v for k, v in self.model_options(model).items() if k in PRUNE_OPTIONS}

    def partition_tags(self) -> list[str]:
        return [f"{p['scheme']}{p['n']}" for p in self.spec["partitions"]]

    def partition(self, tag: str) -> tuple[int, str]:
        for p in self.spec["partitions"]:
            if f"{p['scheme']}{p['n']}" == tag:
                return p["n"], p["scheme"]
        raise KeyError(f"partition {tag!r} is not in suite {self.name!r}")

    @property
    def analysis_sparsity(self) -> float:
        return self.spec.get("analysis", {}).get("sparsity") or sorted(self.spec["sparsities"])[0]

    @property
    def transfer_sparsity(self) -> float:
        return self.spec.get("transfer", {}).get("sparsity") or sorted(self.spec["sparsities"])[0]


def validated_or_exit(config: dict, basedir: str, configfiles=()) -> dict:
    """The Snakefile's check: ``config`` as Snakemake merged it, and the files again through the
    strict loader (duplicated keys, templates), merged the same way; one line and exit on error."""
    import os
    import sys

    try:
        validate(merged(os.path.join(basedir, "workflow_config.yaml"), [str(f) for f in configfiles]))
        return validate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

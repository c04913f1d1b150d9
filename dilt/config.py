"""The declarative experiment config: validation and typed access to one suite.

``workflow_config.yaml`` is checked against ``schemas/config.schema.yaml`` (JSON Schema, with
defaults filled in) and then against what the code knows (model and dataset names, the
partition sizes, the analysis and transfer sparsities). Every problem is reported as one line
that names the offending key, before any job starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is invalid; the message is one line naming the key."""


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def schema_errors(config: dict, schema_path: str | Path = SCHEMA) -> list[str]:
    """One line per schema violation (``key.path: message``), most relevant first."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=jsonschema.exceptions.relevance)
    lines = []
    for e in errors:
        best = jsonschema.exceptions.best_match([e])
        msg = best.message
        if best.validator == "additionalProperties":
            msg = msg.replace("Additional properties are not allowed", "unknown key")
        lines.append(f"{_path(best.absolute_path)}: {msg}")
    return lines


def _fill_defaults(node: Any, schema: dict, defs: dict) -> Any:
    """Fill JSON-schema ``default`` values into ``node`` (objects only), recursively."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
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


def validate(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Validate ``config`` (schema + semantics); return a copy with defaults filled in.
    Raises :class:`ConfigError` with one line naming the first offending key."""
    errors = schema_errors(config, schema_path)
    if errors:
        raise ConfigError(f"workflow config: {errors[0]}")
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = _fill_defaults(copy.deepcopy(config), schema, schema.get("$defs", {}))
    if config["suite"] not in config["suites"]:
        raise ConfigError(f"workflow config: suite: {config['suite']!r} is not one of the suites "
                          f"({', '.join(config['suites'])})")
    for name, suite in config["suites"].items():
        _check_suite(name, suite)
    return config


def _check_suite(name: str, s: dict) -> None:
    from dilt.data import dataset_names
    from dilt.models import model_names

    key = f"suites.{name}"
    for m in s["models"]:
        if m not in model_names():
            raise ConfigError(f"workflow config: {key}.models: unknown model {m!r} (known: {', '.join(model_names())})")
    for i, d in enumerate(s["datasets"]):
        if d not in dataset_names():
            raise ConfigError(f"workflow config: {key}.datasets[{i}]: unknown dataset {d!r} (known: {', '.join(dataset_names())})")
    for i, d in enumerate(s.get("transfer", {}).get("targets", [])):
        if d not in dataset_names():
            raise ConfigError(f"workflow config: {key}.transfer.targets[{i}]: unknown dataset {d!r}")
    for r in s["recipes"]:
        model, _, data = r.partition("/")
        if r != "default" and (model not in s["models"] or (data and data not in s["datasets"] + s.get("transfer", {}).get("targets", []))):
            raise ConfigError(f"workflow config: {key}.recipes.{r}: names no model (or model/dataset) of the suite")
    tags = [f"{p['scheme']}{p['n']}" for p in s["partitions"]]
    if len(set(tags)) != len(tags):
        raise ConfigError(f"workflow config: {key}.partitions: the same scheme and n appear twice")
    sp = sorted(s["sparsities"])
    for sub in ("analysis", "transfer"):
        t = s.get(sub, {}).get("sparsity")
        if t is not None and t not in sp:
            raise ConfigError(f"workflow config: {key}.{sub}.sparsity: {t} is not one of the suite's sparsities {sp}")


def load(path: str | Path = "workflow_config.yaml", suite: str | None = None) -> "Suite":
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if suite is not None:
        raw["suite"] = suite
    cfg = validate(raw)
    return Suite(cfg["suite"], cfg["suites"][cfg["suite"]], cfg)


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

        r = self.spec["recipes"]
        merged = {**r.get("default", {}), **r.get(model, {}), **r.get(f"{model}/{dataset}", {})}
        return Recipe.from_dict(merged)

    def model_options(self, model: str) -> dict:
        return dict(self.spec["models"][model] or {})

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

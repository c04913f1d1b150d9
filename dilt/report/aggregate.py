"""Collect every job's ``records.json`` into one tidy results table (``results.csv``).

Each row is one evaluation: a model, dataset, method, ticket, mode, control, target and actual
sparsity, seed, evaluation split and metric. The IMP-internal curves (``imp_summary.json``) are
collected separately by :func:`collect_imp`.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pandas as pd

from dilt.io import atomic_path

# The documented record keys, in the column order of results.csv. ``min_layer_kept`` is the
# smallest number of weights any layer of the mask keeps (-1 for the dense model): a layer with
# a handful of weights is a bottleneck even when it is not empty.
COLUMNS = ["experiment", "model", "dataset", "source_dataset", "partition", "method", "ticket",
           "mode", "control", "target_sparsity", "actual_sparsity", "round", "trainings",
           "empty_layers", "min_layer_kept", "collapsed", "seed", "split", "metric", "value", "best_epoch",
           "val_top1", "protocol", "epochs", "min_layer_density", "bottleneck_layers", "flags",
           "flops_ratio"]

# Columns that identify one evaluation; two rows sharing them would be double-counted seeds.
KEY = ["experiment", "model", "dataset", "source_dataset", "partition", "method", "ticket",
       "mode", "control", "target_sparsity", "protocol", "seed", "split", "metric"]

_STR = ["experiment", "model", "dataset", "source_dataset", "partition", "method", "ticket",
        "mode", "control", "split", "metric", "protocol"]
_INT = ["round", "trainings", "empty_layers", "min_layer_kept", "seed", "best_epoch", "bottleneck_layers"]
_FLOAT = ["target_sparsity", "actual_sparsity", "value", "val_top1", "epochs", "min_layer_density",
          "flops_ratio"]

IMP_COLUMNS = ["method", "model", "dataset", "partition", "seed", "part", "round", "sparsity",
               "val_top1", "test_top1", "epochs"]


def _check_row(row: object, path: Path, i: int) -> None:
    """Raise ValueError naming ``path``, the row index and the offending key if ``row`` is bad."""
    where = f"{path}: record {i}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
    missing = [k for k in COLUMNS if k not in row]
    extra = sorted(set(row) - set(COLUMNS))
    if missing or extra:
        raise ValueError(f"{where}: missing key(s) {missing}, unexpected key(s) {extra}")
    for k in _STR:
        if not isinstance(row[k], str) or not row[k]:
            raise ValueError(f"{where}: key {k!r} must be a non-empty string, got {row[k]!r}")
    for k in _INT:
        if isinstance(row[k], bool) or not isinstance(row[k], numbers.Integral):
            raise ValueError(f"{where}: key {k!r} must be an integer, got {row[k]!r}")
    for k in _FLOAT:
        if isinstance(row[k], bool) or not isinstance(row[k], numbers.Real):
            raise ValueError(f"{where}: key {k!r} must be a number, got {row[k]!r}")
    if not isinstance(row["flags"], str):
        raise ValueError(f"{where}: key 'flags' must be a string, got {row['flags']!r}")
    if not isinstance(row["collapsed"], bool):
        raise ValueError(f"{where}: key 'collapsed' must be true/false, got {row['collapsed']!r}")
    if not 0.0 <= row["value"] <= 1.0:
        raise ValueError(f"{where}: key 'value' must lie in [0, 1], got {row['value']!r}")
    if row["collapsed"] != (row["empty_layers"] > 0):
        raise ValueError(f"{where}: key 'collapsed' disagrees with empty_layers="
                         f"{row['empty_layers']}")


def _records(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path}: expected an object with a 'records' list")
    return data["records"]


def collect(record_files) -> pd.DataFrame:
    """All rows of the given ``records.json`` files (the ones the config declares; a directory
    means every file under it), validated, as one DataFrame.

    Rows that repeat another row exactly (the same job output found twice) are kept once; two
    rows with the same key but different values raise ValueError naming both files.
    """
    rows, origin = [], []
    for path in _files(record_files, "records.json"):
        for i, row in enumerate(_records(path)):
            _check_row(row, path, i)
            rows.append(row)
            origin.append(str(path))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["_file"] = origin
    df = df.drop_duplicates(subset=COLUMNS)
    dup = df[df.duplicated(subset=KEY, keep=False)]
    if not dup.empty:
        first = dup.sort_values(KEY).head(2)
        key = dict(zip(KEY, first.iloc[0][KEY]))
        raise ValueError(f"conflicting records for the same evaluation {key} in files "
                         f"{sorted(set(first['_file']))}")
    df = df.drop(columns="_file")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def _files(given, name: str) -> list[Path]:
    if isinstance(given, (str, Path)):
        return sorted(Path(given).rglob(name))
    return [Path(p) for p in given]


def write_results_csv(record_files, out_csv: str | Path) -> Path:
    """Write :func:`collect` of ``record_files`` to ``out_csv`` atomically; return the path."""
    df = collect(record_files)
    if df.empty:
        print("warning: no records rows; writing an empty table")
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out_csv)


def read_results(results_csv: str | Path) -> pd.DataFrame:
    """Read ``results.csv`` back with the documented dtypes (``-`` stays a string)."""
    df = pd.read_csv(results_csv, keep_default_na=False, na_values={"value": [""]},
                     dtype={k: str for k in _STR})
    df["collapsed"] = df["collapsed"].astype(str).str.lower().eq("true")
    if "flags" in df:
        df["flags"] = df["flags"].astype(str).replace("nan", "")
    return df


def collect_imp(summaries) -> pd.DataFrame:
    """One row per IMP round of the given ``imp_summary.json`` files (a directory: all under it;
    a CSV written by :func:`write_imp_csv`: read back)."""
    if isinstance(summaries, (str, Path)) and str(summaries).endswith(".csv"):
        df = pd.read_csv(summaries, keep_default_na=False, na_values={"part": [""]})
        df["partition"] = df["partition"].astype(str)
        return df
    rows = []
    for path in _files(summaries, "imp_summary.json"):
        data = json.loads(path.read_text())
        try:
            head = {k: data[k] for k in ("method", "model", "dataset", "partition", "seed")}
            head["part"] = data.get("part")
            for r in data["rounds"]:
                rows.append({**head, **{k: r[k] for k in ("round", "sparsity", "val_top1",
                                                          "test_top1", "epochs")}})
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed imp_summary ({e!r})") from e
    df = pd.DataFrame(rows, columns=IMP_COLUMNS)
    df["partition"] = df["partition"].fillna("-").astype(str)
    return df


def write_imp_csv(summaries, out_csv: str | Path) -> Path:
    """The IMP rounds of the declared runs as a CSV beside results.csv (tables and figures read
    it instead of searching the results tree)."""
    df = collect_imp(summaries)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return Path(out_csv)

"""Run identity: the settings each stage's outputs depend on, and their hash.

Every file a stage writes carries ``provenance``, the hash of exactly the settings it depends on
(recipe, prune settings, data and model options, the upstream stages' settings, ...). The
Snakefile passes the same hash to each job as a rule parameter, so editing the config reruns
exactly the jobs whose settings changed (Snakemake's ``params`` rerun trigger), and a job refuses
to reuse a file on disk whose hash differs: it says in one line what changed and recomputes.
Upstream settings are nested into downstream ones, so a change propagates down the graph.

Seeds derived from the run seed live here too (one definition per name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dilt.io import settings_hash

FULL = "full"  # partition tag of jobs on the whole training set (dense, LTH, one-shot methods)


# -- seed derivations -----------------------------------------------------------------------
def head_seed(seed: int, k: int) -> int:
    """Initialisation seed of partition k's head (|Y_k| outputs; the body is theta_0)."""
    return seed * 1000 + k + 1


def control_seed(seed: int, round_: int, salt: int) -> int:
    """Seed of a random control mask (same per-layer counts as the ticket it controls)."""
    return seed * 1009 + round_ * 31 + salt


def transfer_init_seed(suite, seed: int) -> int:
    return seed + suite.spec.get("transfer", {}).get("init_seed_offset", 1000)


# -- settings per stage ---------------------------------------------------------------------
def _data(spec: dict, dataset: str, seed: int) -> dict:
    from dilt.config import val_fraction

    return {"dataset": dataset, "options": (spec.get("dataset_options") or {}).get(dataset, {}),
            "val_fraction": val_fraction(spec, dataset), "seed": seed}


def _recipe(suite, model: str, dataset: str) -> dict:
    from dilt.train import recipe_dict

    d = recipe_dict(suite.recipe(model, dataset))
    d.pop("checkpoint_interval")  # when checkpoints are written changes no result
    if d["decay_norms_and_biases"]:  # the default, and the only behaviour before the key
        d.pop("decay_norms_and_biases")  # existed: such recipes keep their hash
    return d


def init_settings(suite, model: str, dataset: str, seed: int) -> dict:
    """theta_0: the model, built with its options (absent when it has none, so such runs keep
    the hash they had before options were part of it), and the data."""
    s = {"stage": "init", "model": model, "data": _data(suite.spec, dataset, seed)}
    build = suite.build_options(model)
    if build:
        s["model_options"] = build
    return s


def dense_settings(suite, model: str, dataset: str, seed: int) -> dict:
    from dilt.workflow import dense_rewind

    s = {"stage": "dense", "init": init_settings(suite, model, dataset, seed),
         "recipe": _recipe(suite, model, dataset)}
    if dense_rewind(suite.spec):  # it also keeps its rewind point
        s["rewind_epoch"] = dense_rewind(suite.spec)
    return s


IMP_RULES = 2
# version 3 changes late rewinding only: rounds after the first, and the tickets retrained from
# a rewind point, continue the schedule from the rewind epoch instead of running it again from
# epoch 0; runs that rewind to theta_0 keep version 2's hash
LATE_REWIND_RULES = 3


def find_settings(suite, method: str, model: str, dataset: str, seed: int, tag: str = FULL,
                  part: int | None = None) -> dict:
    """A mask-finding job: IMP (lth, colt, one DiLT partition) or any registered method."""
    from dilt.methods import get_method

    m = get_method(method)
    spec = suite.spec
    s = {"stage": "find", "method": method, "init": init_settings(suite, model, dataset, seed),
         "recipe": _recipe(suite, model, dataset), "sparsities": sorted(spec["sparsities"]),
         "model_options": suite.model_options(model),
         "options": (spec.get("method_options") or {}).get(method, {})}
    if m.kind == "iterative":
        s["prune"] = {k: spec["prune"][k] for k in ("rate", "rewind_epoch")}
        # the version of IMP's own rules: 2 records epochs in full-data passes and stops a round
        # on a target its step reaches before rounding, so runs of version 1 are recomputed
        # (their masks and epochs differ), never reused or refused on resume
        s["imp_rules"] = LATE_REWIND_RULES if spec["prune"]["rewind_epoch"] > 0 else IMP_RULES
        s.update(_failed_fraction(spec))
    if tag != FULL:
        n, scheme = suite.partition(tag)
        s["partition"] = {"n": n, "scheme": scheme, "part": part}
    if "dense" in m.needs:
        s["dense"] = dense_settings(suite, model, dataset, seed)
    return s


def tickets_settings(suite, model: str, dataset: str, seed: int, tag: str) -> dict:
    from dilt.methods import ticket_method

    n, _ = suite.partition(tag)
    source = ticket_method().name
    return {"stage": "tickets", "random_controls": suite.spec["prune"]["random_controls"],
            "parts": [find_settings(suite, source, model, dataset, seed, tag, k) for k in range(1, n + 1)],
            **_failed_fraction(suite.spec)}


def _failed_fraction(spec: dict) -> dict:
    """``flags.failed_run_fraction`` (which masks are flagged failed_source), when the suite sets
    one other than the default: runs made before it was part of the hash keep their hash."""
    from dilt.tickets import FAILED_RUN_FRACTION

    x = (spec.get("flags") or {}).get("failed_run_fraction", FAILED_RUN_FRACTION)
    return {} if x == FAILED_RUN_FRACTION else {"failed_run_fraction": x}


def source_settings(suite, source: str, model: str, dataset: str, seed: int, tag: str) -> dict:
    """Settings of a retrain / transfer source: dense, tickets or a method's mask run."""
    if source == "dense":
        return {"stage": "dense-source", "init": init_settings(suite, model, dataset, seed)}
    if source == "tickets":
        return tickets_settings(suite, model, dataset, seed, tag)
    return find_settings(suite, source, model, dataset, seed, tag)


def retrain_settings(suite, source: str, model: str, dataset: str, seed: int, tag: str) -> dict:
    from dilt.workflow import rewind_point

    s = {"stage": "retrain", "source": source_settings(suite, source, model, dataset, seed, tag),
         "recipe": _recipe(suite, model, dataset),
         "random_controls": suite.spec["prune"]["random_controls"]}
    if rewind_point(suite.spec, source) == "dense":  # ("own" is in the source's settings)
        s["rewind_start"] = {"dense": dense_settings(suite, model, dataset, seed)}
    return s


def transfer_settings(suite, sources: list[str], model: str, dataset: str, seed: int, tag: str,
                      target: str) -> dict:
    spec = suite.spec
    return {"stage": "transfer", "target": _data(spec, target, seed),
            "sources": [source_settings(suite, s, model, dataset, seed, tag) for s in sources],
            "recipe": _recipe(suite, model, target), "transfer": spec.get("transfer", {}),
            "sparsity": suite.transfer_sparsity,
            "random_controls": spec["prune"]["random_controls"]}


# 2: a layer followed by a BatchNorm is represented by the BatchNorm's output (before, its own)
# 3: the probe's classes of equal remainder share its leftover examples in a seeded random order
#    (before, by class number)
FEATURE_RULES = 3


def analysis_settings(suite, model: str, dataset: str, seed: int, tag: str) -> dict:
    return {"stage": "analyze", "tickets": tickets_settings(suite, model, dataset, seed, tag),
            "analysis": suite.spec.get("analysis", {}), "sparsity": suite.analysis_sparsity,
            "feature_rules": FEATURE_RULES}


def digest(settings: dict) -> str:
    return settings_hash(settings)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings dicts (for the one-line message)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix or '(all)'}: {old!r} -> {new!r}"]


def claim_dir(out_dir, settings: dict, *, log=None) -> str:
    """Make ``out_dir`` the home of a run with ``settings``; return their hash.

    A directory left by a run with other settings is emptied, with one line saying what changed
    (nothing stale is ever resumed or reused); temporary files of a killed writer are removed.
    Under DDP rank 0 does this while the other ranks wait.
    """
    from dilt import platform

    h = digest(settings)
    if platform.is_main():
        _claim(Path(out_dir), settings, h, log)
    platform.barrier()
    return h


def _claim(out: Path, settings: dict, h: str, log) -> None:
    import json
    import shutil
    import sys

    from dilt.io import clean_orphans, write_json

    meta = out / "settings.json"
    if meta.exists():
        try:
            old = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {"provenance": None, "settings": {}}
        if old.get("provenance") != h:
            what = "; ".join(changed_keys(old.get("settings", {}), settings)[:3]) or "unknown"
            print(f"dilt: {out}: settings changed ({what}); recomputing", file=log or sys.stderr)
            for p in out.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif out.is_dir() and any(out.iterdir()):
        # files from before provenance existed (or of unknown settings): never reuse them
        for p in out.iterdir():
            if p.name != "logs":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    clean_orphans(out)
    if not meta.exists():
        write_json(meta, {"provenance": h, "settings": settings})

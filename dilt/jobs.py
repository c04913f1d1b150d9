"""The work of each workflow job. Each function reads the files of earlier stages, does one
stage for one (model, dataset, seed, partition) and writes its own files atomically; a
restarted job reuses whatever the interrupted one finished."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dilt.config import Suite
from dilt.data import DataBundle, load_dataset
from dilt.data.partition import Partition, make_partitions
from dilt.io import read_json, write_json
from dilt.masks import Mask, random_like
from dilt.models import build_model, prunable_names, weight_layers
from dilt.models.state import load_state, model_from_theta0, save_state
from dilt.prune.imp import Part, mask_at_sparsity, run_imp
from dilt.tickets import write_tickets
from dilt.train import Split, evaluate, train

FULL = "full"  # partition tag of jobs on the whole training set (dense, LTH)


def load_data(suite: Suite, dataset: str, seed: int) -> DataBundle:
    opts = suite.spec.get("dataset_options", {}).get(dataset, {})
    return load_dataset(dataset, root=suite.data_root, seed=seed,
                        val_fraction=suite.spec.get("val_fraction", 0.2), **opts)


def partitions(suite: Suite, bundle: DataBundle, tag: str, seed: int) -> list[Partition]:
    n, scheme = suite.partition(tag)
    return make_partitions(bundle.train_targets, bundle.val_targets, bundle.num_classes, n, scheme, seed)


def prunable(suite: Suite, model_name: str, bundle: DataBundle) -> list[str]:
    model = build_model(model_name, bundle.num_classes, bundle.input_shape)
    return prunable_names(model, **suite.model_options(model_name))


def full_splits(bundle: DataBundle) -> tuple[Split, Split, Split]:
    return Split(bundle.train), Split(bundle.val), Split(bundle.test)


def test_splits(bundle: DataBundle, parts: list[Partition] | None) -> dict[str, Split]:
    """T_full, and T_k (test images of partition k's classes) for class-disjoint partitions."""
    out = {"full": Split(bundle.test)}
    for p in parts or []:
        if p.class_disjoint:
            out[f"part{p.index + 1}"] = Split(bundle.test, np.flatnonzero(np.isin(bundle.test_targets, p.classes)))
    return out


def head_seed(seed: int, k: int) -> int:
    return seed * 1000 + k + 1


# -- init -----------------------------------------------------------------------------------
def init(suite: Suite, model: str, dataset: str, seed: int, out: str) -> None:
    """theta_0 for (model, dataset, seed)."""
    bundle = load_data(suite, dataset, seed)
    torch.manual_seed(seed)
    m = build_model(model, bundle.num_classes, bundle.input_shape)
    save_state(out, m, model=model, dataset=dataset, seed=seed)


# -- IMP: lth / dilt (one partition) / colt -------------------------------------------------
def imp(suite: Suite, model: str, dataset: str, seed: int, method: str, tag: str, part: int | None,
        theta0: str, out_dir: str, log: str | None = None) -> dict:
    bundle = load_data(suite, dataset, seed)
    names = prunable(suite, model, bundle)
    if method == "lth":
        make = partial(model_from_theta0, model, theta0, bundle.num_classes, bundle.input_shape, 0)
        tr, va, te = full_splits(bundle)
        runs = [Part(lambda: make()[0], tr, va, te)]
    else:
        parts = partitions(suite, bundle, tag, seed)
        chosen = parts if method == "colt" else [parts[part - 1]]
        runs = [_partition_part(model, theta0, bundle, p, seed) for p in chosen]
    theta_hash = load_state(theta0)[1].get("hash")
    meta = {"method": method, "model": model, "dataset": dataset, "partition": tag if method != "lth" else "-",
            "seed": seed, "part": part, "theta0": theta_hash}
    return run_imp(runs, names, suite["sparsities"], suite["prune"]["rate"], suite.recipe(model, dataset),
                   out_dir, seed=seed, rewind_epoch=suite["prune"]["rewind_epoch"], meta=meta,
                   log_path=log, desc=f"{method} {model}/{dataset} s{seed} {tag}" + (f" p{part}" if part else ""))


def _partition_part(model: str, theta0: str, bundle: DataBundle, p: Partition, seed: int) -> Part:
    lmap = p.label_map if p.class_disjoint else None
    classes = p.num_classes if p.class_disjoint else bundle.num_classes
    test_idx = np.flatnonzero(np.isin(bundle.test_targets, p.classes))
    return Part(lambda: model_from_theta0(model, theta0, classes, bundle.input_shape, head_seed(seed, p.index))[0],
                Split(bundle.train, p.train_idx, lmap), Split(bundle.val, p.val_idx, lmap),
                Split(bundle.test, test_idx, lmap))


# -- tickets --------------------------------------------------------------------------------
def tickets(suite: Suite, model: str, dataset: str, seed: int, tag: str, run_dirs: list[str],
            out_dir: str) -> dict:
    meta = {"model": model, "dataset": dataset, "seed": seed, "partition": tag}
    return write_tickets(run_dirs, suite["sparsities"], out_dir, seed=seed, meta=meta)


# -- retraining (experiments 1 and 3) and transfer (experiment 4) ---------------------------
@dataclass
class Entry:
    """One row group of the results: a mask (or None = dense) and how it was obtained."""

    method: str
    ticket: str
    mode: str
    control: str
    target_sparsity: float
    round: int
    trainings: int
    key: str                  # identical keys are trained once
    mask: Mask | None


def method_entries(run_dir: str, method: str, targets, n_parallel: int, seed: int,
                   random_controls: bool) -> list[Entry]:
    """The masks of an IMP run (lth, colt) at each target sparsity, with random controls."""
    out = []
    for t in sorted(targets):
        r, mask = mask_at_sparsity(run_dir, t)
        out.append(Entry(method, "mask", "-", "ticket", t, r, n_parallel * r, f"{method}_r{r}", mask))
        if random_controls:
            g = torch.Generator().manual_seed(seed * 1009 + r * 31 + 977)
            out.append(Entry(method, "mask", "-", "random", t, r, n_parallel * r,
                             f"{method}_r{r}_random", random_like(mask, g)))
    return out


def ticket_entries(tickets_dir: str, random_controls: bool, only_mode: str | None = None,
                   only_target: float | None = None) -> list[Entry]:
    manifest = read_json(Path(tickets_dir) / "manifest.json")
    n = manifest["n_partitions"]
    cache: dict[str, Mask] = {}
    out = []
    for e in manifest["tickets"]:
        if (e["control"] == "random" and not random_controls) or (only_mode and e["mode"] != only_mode) \
                or (only_target is not None and abs(e["target_sparsity"] - only_target) > 1e-9):
            continue
        key = e["file"].removesuffix(".safetensors")
        if key not in cache:
            cache[key] = Mask.load(Path(tickets_dir) / e["file"])
        out.append(Entry("dilt", e["ticket"], e["mode"], e["control"], e["target_sparsity"], e["round"],
                         n * e["round"], f"dilt_{key}", cache[key]))
    return out


def dense_entry() -> Entry:
    return Entry("dense", "dense", "-", "ticket", 0.0, 0, 0, "dense", None)


def train_entries(entries: list[Entry], *, model: str, make_model, bundle: DataBundle, eval_splits: dict[str, Split],
                  recipe, seed: int, work_dir: str, log: str | None, experiment: str, partition: str,
                  source_dataset: str) -> list[dict]:
    """Train every distinct mask once (resumable per mask), evaluate it on ``eval_splits`` and
    return one record per entry and split."""
    work = Path(work_dir)
    tr, va, _ = full_splits(bundle)
    records = []
    for e in entries:
        done = work / f"{e.key}.json"
        if not done.exists():
            net = make_model()
            res = train(net, tr, va, recipe, mask=e.mask, seed=seed, checkpoint=work / f"{e.key}.ckpt",
                        log_path=log, desc=f"{experiment} {e.key}")
            scores = {name: evaluate(net, split, recipe) for name, split in eval_splits.items()}
            write_json(done, {"best_epoch": res.best_epoch, "val_top1": res.best_val_top1, "test": scores})
            (work / f"{e.key}.ckpt").unlink(missing_ok=True)
        result = read_json(done)
        empty = e.mask.empty_layers() if e.mask is not None else []
        for split, value in result["test"].items():
            records.append({
                "experiment": experiment, "model": model, "dataset": bundle.name,
                "source_dataset": source_dataset, "partition": partition, "method": e.method,
                "ticket": e.ticket, "mode": e.mode, "control": e.control,
                "target_sparsity": e.target_sparsity,
                "actual_sparsity": e.mask.sparsity if e.mask is not None else 0.0,
                "round": e.round, "trainings": e.trainings, "empty_layers": len(empty),
                "min_layer_kept": min(int(t.sum()) for t in e.mask.values()) if e.mask is not None else -1,
                "collapsed": bool(empty), "seed": seed, "split": split, "metric": "top1",
                "value": value, "best_epoch": result["best_epoch"], "val_top1": result["val_top1"]})
    return records


def retrain(suite: Suite, model: str, dataset: str, seed: int, tag: str, source: str, theta0: str,
            out: str, log: str | None = None) -> None:
    """Retrain from theta_0 on the full training set: the dense reference (source ``dense``), an
    IMP run's masks (``lth``/``colt``: a run directory) or DiLT tickets (a tickets directory)."""
    bundle = load_data(suite, dataset, seed)
    randoms = suite["prune"]["random_controls"]
    parts = partitions(suite, bundle, tag, seed) if tag != FULL else None
    if source == "dense":
        entries = [dense_entry()]
    elif (Path(source) / "manifest.json").exists():
        entries = ticket_entries(source, randoms)
    else:
        method = read_json(Path(source) / "imp_summary.json")["method"]
        n_parallel = len(parts) if method == "colt" else 1
        entries = method_entries(source, method, suite["sparsities"], n_parallel, seed, randoms)
    make = lambda: model_from_theta0(model, theta0, bundle.num_classes, bundle.input_shape, 0)[0]  # noqa: E731
    records = train_entries(entries, model=model, make_model=make, bundle=bundle,
                            eval_splits=test_splits(bundle, parts), recipe=suite.recipe(model, dataset),
                            seed=seed, work_dir=Path(out).parent / "runs", log=log, experiment="retrain",
                            partition=tag if tag != FULL else "-", source_dataset=dataset)
    write_json(out, {"records": records})


def transfer(suite: Suite, model: str, dataset: str, seed: int, tag: str, target: str, sources: list[str],
             out: str, log: str | None = None) -> None:
    """Experiment 4: masks found on ``dataset`` applied to a new initialisation theta'_0 and
    trained on ``target``."""
    t = suite.transfer_sparsity
    randoms = suite["prune"]["random_controls"]
    src = load_data(suite, dataset, seed)
    bundle = load_data(suite, target, seed)
    entries = []
    for s in sources:
        if s == "dense":
            entries.append(dense_entry())
        elif (Path(s) / "manifest.json").exists():
            entries += ticket_entries(s, randoms, only_mode="source-matched", only_target=t)
        else:
            summary = read_json(Path(s) / "imp_summary.json")
            n = sum(1 for r in summary["rounds"] if r["round"] == 0)  # models per round
            entries += method_entries(s, summary["method"], [t], n, seed, randoms)
    init_seed = seed + suite.spec.get("transfer", {}).get("init_seed_offset", 1000)

    def make():
        torch.manual_seed(init_seed)
        return build_model(model, bundle.num_classes, bundle.input_shape)

    # masks cover the body only (the head is never pruned by default), so they fit the new head
    shapes = Mask.ones(make(), prunable(suite, model, src)).shapes
    for e in entries:
        if e.mask is not None and e.mask.shapes != shapes:
            raise ValueError(f"transfer {dataset}->{target}: mask {e.key} does not fit {model} on {target}")
    records = train_entries(entries, model=model, make_model=make, bundle=bundle,
                            eval_splits={"full": Split(bundle.test)}, recipe=suite.recipe(model, target),
                            seed=seed, work_dir=Path(out).parent / "runs", log=log, experiment="transfer",
                            partition=tag if tag != FULL else "-", source_dataset=dataset)
    write_json(out, {"records": records})


# -- functional analysis (experiment 2) -----------------------------------------------------
def analyze(suite: Suite, model: str, dataset: str, seed: int, tag: str, run_dirs: list[str],
            theta0: str, out: str) -> None:
    from dilt.analysis import run_analysis
    from dilt.analysis.features import probe_indices

    cfg = dict(suite.spec.get("analysis", {}))
    bundle = load_data(suite, dataset, seed)
    parts = partitions(suite, bundle, tag, seed)
    sparsity = suite.analysis_sparsity
    ds, targets = bundle.split(cfg.get("probe_split", "test"))
    idx = probe_indices(targets, cfg.get("probe_size", 1024), seed=0)  # the same probe for every seed
    models, masks, caches = [], [], []
    for p, d in zip(parts, run_dirs):
        r, mask = mask_at_sparsity(d, sparsity)
        classes = p.num_classes if p.class_disjoint else bundle.num_classes
        net = model_from_theta0(model, theta0, classes, bundle.input_shape, head_seed(seed, p.index))[0]
        state, meta = load_state(Path(d) / f"weights_r{r}.safetensors")
        net.load_state_dict(state)
        models.append(net)
        masks.append(mask)
        # features are cached beside the weights, keyed by everything they depend on
        key = f"{meta.get('hash')}_{cfg.get('probe_split', 'test')}{len(idx)}_{cfg.get('reduce', 'gap')}{cfg.get('proj_dim', 256)}"
        caches.append(str(Path(d) / f"features_r{r}_{key}.npz"))
    from dilt.data.loader import batches

    probe_x = torch.cat([x for x, _ in batches(ds, idx, 512)])
    result = run_analysis(models, masks, probe_x, weight_layers(models[0]), {**cfg, "seed": seed},
                          feature_cache=caches)
    result["meta"] = {"model": model, "dataset": dataset, "seed": seed, "partition": tag,
                      "sparsity": sparsity, "round": r, "probe_size": int(len(idx))}
    write_json(out, result)

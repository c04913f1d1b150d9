"""The work of each workflow job. Each function reads the files of earlier stages (checking
that they belong to this run: model, seed, theta_0, settings hash), does one stage for one
(model, dataset, seed, partition) and writes its own files atomically; a restarted job reuses
what the interrupted one finished, and only when its settings are unchanged."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dilt import platform
from dilt import provenance as prov
from dilt.config import Suite, val_fraction
from dilt.data import DataBundle, load_dataset
from dilt.data.partition import Partition, make_partitions
from dilt.io import FileCheckError, read_json, write_json
from dilt.masks import Mask, random_like
from dilt.methods import get_method
from dilt.methods.iterative import DILT
from dilt.methods.job import MANIFEST, MaskJob
from dilt.models import build_model, head_parameters, prunable_names, weight_layers
from dilt.models.state import load_state, model_from_theta0, save_state
from dilt.provenance import FULL, head_seed
from dilt.train import Split, evaluate, train


def load_data(suite: Suite, dataset: str, seed: int) -> DataBundle:
    opts = suite.spec.get("dataset_options", {}).get(dataset, {})
    return load_dataset(dataset, root=suite.data_root, seed=seed,
                        val_fraction=val_fraction(suite.spec, dataset), **opts)


def partitions(suite: Suite, bundle: DataBundle, tag: str, seed: int) -> list[Partition]:
    n, scheme = suite.partition(tag)
    return make_partitions(bundle.train_targets, bundle.val_targets, bundle.num_classes, n, scheme,
                           seed, superclasses=bundle.superclasses)


def new_model(suite: Suite, model: str, bundle: DataBundle):
    """A fresh (randomly initialised) model with the suite's options for ``bundle``'s data."""
    return build_model(model, bundle.num_classes, bundle.input_shape, **suite.build_options(model))


def theta0_model(suite: Suite, model: str, theta0, bundle: DataBundle, num_classes: int | None = None,
                 head_seed_: int = 0):
    """A model holding theta_0 (a new head when ``num_classes`` differs from theta_0's)."""
    return model_from_theta0(model, theta0, num_classes or bundle.num_classes, bundle.input_shape,
                             head_seed_, options=suite.build_options(model))[0]


def prunable(suite: Suite, model_name: str, bundle: DataBundle) -> list[str]:
    return prunable_names(new_model(suite, model_name, bundle), **suite.prune_options(model_name))


def full_splits(bundle: DataBundle) -> tuple[Split, Split, Split]:
    return Split(bundle.train), Split(bundle.val), Split(bundle.test)


def test_splits(bundle: DataBundle, parts: list[Partition] | None) -> dict[str, Split]:
    """T_full, and T_k (test images of partition k's classes) for class-disjoint partitions."""
    out = {"full": Split(bundle.test)}
    for p in parts or []:
        if p.class_disjoint:
            out[f"part{p.index + 1}"] = Split(bundle.test, np.flatnonzero(np.isin(bundle.test_targets, p.classes)))
    return out


def _check_theta0(path: str, model: str, seed: int, suite: Suite, dataset: str) -> str:
    """theta_0's hash, after checking the file is the one this run's settings make."""
    want = prov.digest(prov.init_settings(suite, model, dataset, seed))
    _, meta = load_state(path, expect={"model": model, "seed": seed})
    if meta.get("provenance") != want:
        raise FileCheckError(f"{path}: theta_0 was made with other settings; rerun its init job")
    return meta["hash"]


def _source_manifest(run_dir: str | Path, expect: dict) -> dict:
    """A mask run's manifest, refused unless complete and matching ``expect`` (provenance, ...)."""
    path = Path(run_dir) / MANIFEST
    manifest = read_json(path)
    for key, want in expect.items():
        if manifest.get(key) != want:
            raise FileCheckError(f"{path}: {key} is {manifest.get(key)!r}, expected {want!r} "
                                 "(stale or from another run); rerun the job that writes it")
    return manifest


# -- init -----------------------------------------------------------------------------------
def init(suite: Suite, model: str, dataset: str, seed: int, out: str) -> None:
    """theta_0 for (model, dataset, seed)."""
    bundle = load_data(suite, dataset, seed)
    torch.manual_seed(seed)
    m = new_model(suite, model, bundle)
    save_state(out, m, model=model, dataset=dataset, seed=seed,
               provenance=prov.digest(prov.init_settings(suite, model, dataset, seed)))


# -- mask finding: any registered method ----------------------------------------------------
def find(suite: Suite, method: str, model: str, dataset: str, seed: int, tag: str, part: int | None,
         theta0: str, out_dir: str, dense: str | None = None, log: str | None = None) -> dict:
    """Run ``method`` and write its mask-run layout (masks per target, manifest last)."""
    m = get_method(method)
    if m.find is None:
        raise ValueError(f"method {method!r} has no mask-finding job")
    if m.per_partition and part is None:
        raise ValueError(f"method {method!r} runs one job per partition: give --part")
    _check_theta0(theta0, model, seed, suite, dataset)
    settings = prov.find_settings(suite, method, model, dataset, seed, tag, part)
    h = prov.claim_dir(out_dir, settings)
    job = MaskJob(suite=suite, method=method, model=model, dataset=dataset, seed=seed,
                  out_dir=Path(out_dir), theta0=Path(theta0), partition=tag, part=part,
                  dense=Path(dense) if dense else None, log=log, provenance=h)
    m.find(job)
    platform.barrier()  # the manifest is rank 0's
    manifest = read_json(Path(out_dir) / MANIFEST)
    if own_protocol(method):
        rows = own_records(out_dir, manifest, model=model, dataset=dataset, seed=seed,
                           partition=tag if tag != FULL else "-", source_dataset=dataset)
        write_json(Path(out_dir) / "own_records.json", {"records": rows, "provenance": h})
    return manifest


def own_protocol(method: str) -> bool:
    """Methods that train their own sparse network (RigL, CAP, SAViT) report it as rows too."""
    return get_method(method).kind in ("dynamic", "post-training", "structured")


# kept for callers of the IMP stage by name
def imp(suite: Suite, model: str, dataset: str, seed: int, method: str, tag: str, part: int | None,
        theta0: str, out_dir: str, log: str | None = None) -> dict:
    on_parts = get_method(method).on_partitions
    return find(suite, method, model, dataset, seed, tag if on_parts else FULL, part, theta0,
                out_dir, log=log)


# -- tickets --------------------------------------------------------------------------------
def tickets(suite: Suite, model: str, dataset: str, seed: int, tag: str, run_dirs: list[str],
            out_dir: str) -> dict:
    from dilt.tickets import failed_run_fraction, write_tickets

    n, _ = suite.partition(tag)
    if len(run_dirs) != n:
        raise ValueError(f"tickets {tag}: need the {n} partition runs, got {len(run_dirs)}")
    theta = None
    for k, d in enumerate(run_dirs, start=1):
        want = prov.digest(prov.find_settings(suite, DILT.name, model, dataset, seed, tag, k))
        mf = _source_manifest(d, {"method": DILT.name, "model": model, "seed": seed, "partition": tag,
                                  "provenance": want})
        if theta is not None and mf["theta0"] != theta:
            raise FileCheckError(f"{d}: trained from another theta_0 than partition 1")
        theta = mf["theta0"]
    h = prov.claim_dir(out_dir, prov.tickets_settings(suite, model, dataset, seed, tag))
    meta = {"model": model, "dataset": dataset, "seed": seed, "partition": tag, "theta0": theta,
            "provenance": h, "method": "tickets"}
    return write_tickets(run_dirs, suite["sparsities"], out_dir, seed=seed, meta=meta,
                         random_controls=suite["prune"]["random_controls"],
                         failed_floor=failed_run_fraction(suite))


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
    epochs: float
    key: str                  # the entry's name (one per row group; a per-training job's name)
    mask: Mask | None
    flags: tuple[str, ...] = ()


def manifest_entries(run_dir: str | Path, manifest: dict, seed: int, random_controls: bool,
                     only_mode: str | None = None, only_target: float | None = None) -> list[Entry]:
    """Retrainable entries of a mask run (a method's manifest or the DiLT tickets), with random
    controls for iterative methods (the tickets list their own)."""
    method = manifest["method"]
    if method != "tickets" and not get_method(method).retrain:
        return []
    cache: dict[str, Mask] = {}
    out = []
    for e in manifest["masks"]:
        mode = e.get("mode", "-")
        if e.get("structured") or (only_mode and mode not in (only_mode, "-")) \
                or (only_target is not None and abs(e["target_sparsity"] - only_target) > 1e-9) \
                or (e["control"] == "random" and not random_controls):
            continue
        if e["file"] not in cache:
            cache[e["file"]] = Mask.load(Path(run_dir) / e["file"], expect={"seed": seed})
        name = DILT.name if method == "tickets" else method
        flags = tuple(e.get("flags", ()))
        out.append(Entry(name, e["ticket"], mode, e["control"], e["target_sparsity"], e["round"],
                         e.get("trainings", 0), e["epochs"], f"{name}_{e['key']}", cache[e["file"]], flags))
        if method != "tickets" and random_controls and get_method(method).kind == "iterative":
            g = torch.Generator().manual_seed(prov.control_seed(seed, e["round"], 977))
            out.append(Entry(name, e["ticket"], mode, "random", e["target_sparsity"], e["round"],
                             e.get("trainings", 0), e["epochs"], f"{name}_{e['key']}_random",
                             random_like(cache[e["file"]], g), flags))
    return out


def own_records(run_dir: str | Path, manifest: dict, *, model: str, dataset: str, seed: int,
                partition: str, source_dataset: str, eval_prefix: str = "") -> list[dict]:
    """Rows for a method's own protocol (RigL's sparse training, CAP's fine-tuning, SAViT)."""
    rows = []
    for e in manifest["masks"]:
        if "own_result" not in e:
            continue
        res = read_json(Path(run_dir) / e["own_result"])
        for split, value in res["test"].items():
            rows.append(_row("retrain", model, dataset, source_dataset, partition, manifest["method"],
                             e["ticket"], "-", "ticket", e["target_sparsity"], e["actual_sparsity"],
                             e["round"], 0, e["epochs"], None, seed, split, value,
                             res.get("best_epoch", -1), res.get("val_top1", float("nan")), "own",
                             tuple(e.get("flags", ())), flops_ratio=res.get("flops_ratio")))
    return rows


def dense_entry() -> Entry:
    return Entry("dense", "dense", "-", "ticket", 0.0, 0, 0, 0.0, "dense", None)


def mask_flags(mask: Mask | None, model: torch.nn.Module | None = None) -> tuple[int, float, int, list[str]]:
    """(min weights kept by a layer, min layer density, bottleneck layers, flags) of a mask. A
    layer is a bottleneck when it keeps fewer weights than it has output units."""
    if mask is None:
        return -1, 1.0, 0, []
    kept = {n: int(t.sum()) for n, t in mask.items()}
    bottleneck = sum(1 for n, t in mask.items() if kept[n] < t.shape[0])
    flags = (["collapsed"] if mask.empty_layers() else []) + (["bottleneck"] if bottleneck else [])
    return min(kept.values()), min(mask.layer_density().values()), bottleneck, flags


def _row(experiment, model, dataset, source_dataset, partition, method, ticket, mode, control,
         target, actual, round_, trainings, epochs, mask, seed, split, value, best_epoch, val_top1,
         protocol, extra_flags=(), flops_ratio=None) -> dict:
    min_kept, min_density, bottleneck, flags = mask_flags(mask)
    flags = sorted(set(flags) | set(extra_flags))
    return {"experiment": experiment, "model": model, "dataset": dataset,
            "source_dataset": source_dataset, "partition": partition, "method": method,
            "ticket": ticket, "mode": mode, "control": control, "target_sparsity": target,
            "actual_sparsity": actual, "round": round_, "trainings": trainings,
            "empty_layers": len(mask.empty_layers()) if mask is not None else 0,
            "min_layer_kept": min_kept, "collapsed": "collapsed" in flags, "seed": seed,
            "split": split, "metric": "top1", "value": value, "best_epoch": best_epoch,
            "val_top1": val_top1, "protocol": protocol, "epochs": float(epochs),
            "min_layer_density": min_density, "bottleneck_layers": bottleneck,
            "flags": ";".join(flags), "flops_ratio": 1.0 if flops_ratio is None else float(flops_ratio)}


def entry_stem(e: Entry, tag: str = "theta0") -> str:
    """The name of an entry's training in a work directory (``<stem>.json`` its result,
    ``<stem>.ckpt`` its checkpoint): method, mask content hash and starting point."""
    return f"{e.method}_{e.mask.content_hash() if e.mask is not None else 'dense'}_{tag}"


def train_entries(entries: list[Entry], *, model: str, make_model, bundle: DataBundle,
                  eval_splits: dict[str, Split], recipe, seed: int, work_dir: str | Path,
                  log: str | None, experiment: str, partition: str, source_dataset: str,
                  provenance: str, start=None, save_weights: bool = False,
                  on_epoch_end=None) -> list[dict]:
    """Train every entry's mask (resumable), evaluate it on ``eval_splits`` and return one
    record per entry and split. Results are kept in ``work_dir`` under the mask's content hash
    and starting point, so the same mask is trained once however many entries (or per-training
    jobs) name it. ``start(entry) -> (tag, load, epoch)``: the starting point of an entry other
    than the fresh model (late rewinding); ``load(model)`` puts it in place, and training
    continues the schedule from ``epoch``. ``on_epoch_end``: passed to every entry's training."""
    work = Path(work_dir)
    tr, va, _ = full_splits(bundle)
    records = []
    for e in entries:
        tag, load, epoch = start(e) if start is not None else ("theta0", None, 0)
        stem = entry_stem(e, tag)
        done = work / f"{stem}.json"
        if not done.exists() or read_json(done).get("provenance") != provenance:
            net = make_model()
            if load is not None:
                load(net)
            res = train(net, tr, va, recipe, mask=e.mask, seed=seed, checkpoint=work / f"{stem}.ckpt",
                        log_path=log, desc=f"{experiment} {e.key}", start_epoch=epoch,
                        checkpoint_meta={"provenance": provenance, "stem": stem}, on_epoch_end=on_epoch_end)
            scores = {name: evaluate(net, split, recipe) for name, split in eval_splits.items()}
            if save_weights:
                save_state(work / f"{e.key}.safetensors", net, seed=seed, provenance=provenance)
            write_json(done, {"best_epoch": res.best_epoch, "val_top1": res.best_val_top1,
                              "test": scores, "provenance": provenance, "start": tag})
            platform.barrier()  # under DDP rank 0 alone writes: the others wait to read it
        (work / f"{stem}.ckpt").unlink(missing_ok=True)  # also after a kill just past the commit
        result = read_json(done)
        for split, value in result["test"].items():
            records.append(_row(experiment, model, bundle.name, source_dataset, partition, e.method,
                                e.ticket, e.mode, e.control, e.target_sparsity,
                                e.mask.sparsity if e.mask is not None else 0.0, e.round, e.trainings,
                                e.epochs, e.mask, seed, split, value, result["best_epoch"],
                                result["val_top1"], "retrain", e.flags))
    return records


def _select(entries: list[Entry], entry: str | None, where) -> list[Entry]:
    if entry is None:
        return entries
    chosen = [e for e in entries if e.key == entry]
    if not chosen:
        raise ValueError(f"{where}: no entry {entry!r} (known: {', '.join(e.key for e in entries)})")
    return chosen


def _source_dir_entries(suite, source_dir, source, model, dataset, seed, tag, **kw):
    """(manifest, entries) of a retrain/transfer source directory, after checking it."""
    want = prov.digest(prov.source_settings(suite, source, model, dataset, seed, tag))
    manifest = _source_manifest(source_dir, {"model": model, "seed": seed, "provenance": want})
    return manifest, manifest_entries(source_dir, manifest, seed, suite["prune"]["random_controls"], **kw)


def dense(suite: Suite, model: str, dataset: str, seed: int, theta0: str, out: str,
          log: str | None = None) -> None:
    """The dense reference: trained once from theta_0; its weights are kept (post-training
    methods start from them) and it is evaluated like every ticket. With late rewinding it also
    keeps its weights after ``rewind_epoch`` epochs (``rewind.safetensors``): under
    ``prune.rewind_start: dense`` the one point every IMP mask is retrained from."""
    from dilt.prune.imp import rewind_saver
    from dilt.workflow import dense_rewind

    _check_theta0(theta0, model, seed, suite, dataset)
    work = Path(out).parent
    h = prov.claim_dir(work, prov.dense_settings(suite, model, dataset, seed))
    bundle = load_data(suite, dataset, seed)
    make = lambda: theta0_model(suite, model, theta0, bundle)  # noqa: E731
    k = dense_rewind(suite.spec)
    hook = rewind_saver(work / DENSE_REWIND, k, {"seed": seed, "provenance": h}) if k else None
    stem = entry_stem(dense_entry())
    if k and not (work / DENSE_REWIND).is_file() and not (work / f"{stem}.json").is_file():
        # a resumed run may be past the rewind epoch: train again from the start, which writes it
        if (work / f"{stem}.ckpt").exists():
            print(f"dilt: {work / DENSE_REWIND} is missing; the dense run starts again to write it",
                  file=sys.stderr)
        (work / f"{stem}.ckpt").unlink(missing_ok=True)
    records = train_entries([dense_entry()], model=model, make_model=make, bundle=bundle,
                            eval_splits=test_splits(bundle, None), recipe=suite.recipe(model, dataset),
                            seed=seed, work_dir=work, log=log, experiment="retrain", partition="-",
                            source_dataset=dataset, provenance=h, save_weights=True, on_epoch_end=hook)
    if k and not (work / DENSE_REWIND).is_file():
        raise FileCheckError(f"{work / DENSE_REWIND}: the dense run finished without its rewind point "
                             f"(written after epoch {k}; deleted since?); delete the run directory "
                             "to recompute")
    write_json(out, {"records": records, "provenance": h})


def retrain(suite: Suite, model: str, dataset: str, seed: int, tag: str, source: str, theta0: str,
            out: str, log: str | None = None, entry: str | None = None) -> None:
    """Retrain a mask run's masks (or only ``entry``) from theta_0 on the full training set and
    evaluate them on T_full and T_k. With late rewinding, IMP masks start from their source
    run's rewind point instead of theta_0."""
    from dilt.io import clean_orphans

    _check_theta0(theta0, model, seed, suite, dataset)
    source_dir = Path(source)
    name = source_dir.name
    h = prov.digest(prov.retrain_settings(suite, name, model, dataset, seed, tag))
    bundle = load_data(suite, dataset, seed)
    parts = partitions(suite, bundle, tag, seed) if tag != FULL else None
    manifest, entries = _source_dir_entries(suite, source_dir, name, model, dataset, seed, tag)
    entries = _select(entries, entry, source_dir)
    cache = source_dir / "retrain" / "cache"
    clean_orphans(source_dir / "retrain")
    records = train_entries(entries, model=model, make_model=lambda: theta0_model(suite, model, theta0, bundle),
                            bundle=bundle, eval_splits=test_splits(bundle, parts),
                            recipe=suite.recipe(model, dataset), seed=seed, work_dir=cache, log=log,
                            experiment="retrain", partition=tag if tag != FULL else "-",
                            source_dataset=dataset, provenance=h,
                            start=_rewind_start(suite, source_dir, manifest, model, dataset, seed))
    write_json(out, {"records": records, "provenance": h})


DENSE_REWIND = "rewind.safetensors"  # the dense run's weights after rewind_epoch epochs


def _rewind_start(suite: Suite, source_dir: Path, manifest: dict, model: str, dataset: str,
                  seed: int):
    """With late rewinding (rewind_epoch > 0) an IMP ticket is retrained from its source run's
    rewind point (Frankle et al. 2020; OpenLTH), not theta_0. LTH: its run's point (head
    included). COLT and the DiLT tickets: the partition runs' points share theta_0 and differ by
    a few epochs on different classes; spec_k starts from run k's point, core, union and COLT's
    mask from their mean; the head (trained on a partition's classes) stays theta_0's. Training
    continues the schedule from the rewind epoch, as the IMP rounds after the first did. With
    ``prune.rewind_start: dense`` every one starts from the dense run's point instead, head
    included (LTH's own point: the dense run is LTH's round 0)."""
    from dilt.workflow import rewind_point

    rewind_epoch = suite["prune"]["rewind_epoch"]
    method = manifest["method"]
    where = rewind_point(suite.spec, method)
    if where is None:
        return None
    expect = {"seed": seed}
    if where == "dense":  # the dense run of this seed and settings, after rewind_epoch epochs
        point = source_dir.parent.parent / FULL / "dense" / DENSE_REWIND
        if not point.is_file():
            raise FileCheckError(f"{point}: late rewinding starts from the dense run's point, which "
                                 "is not on disk (run the dense job first)")
        files = [point]
        expect.update(rewind_epoch=rewind_epoch,
                      provenance=prov.digest(prov.dense_settings(suite, model, dataset, seed)))
    elif method == "tickets":
        files = (source_dir.parent / DILT.name).glob("p*/rewind.safetensors")
    else:
        files = source_dir.glob("rewind*.safetensors")
    files = sorted(files, key=_part_number)  # p1, p2, ..., p10 (not p1, p10, p2)
    if not files:
        raise FileCheckError(f"{source_dir}: late rewinding is on but no rewind point is on disk")
    states = [load_state(f, expect=expect)[0] for f in files]
    # a full-data run's head has every class; a partition run's head only its own
    keep_head = where == "dense" or (method != "tickets" and not get_method(method).on_partitions)

    def mean(chosen):
        return {k: (sum(s[k].double() for s in chosen) / len(chosen)).to(chosen[0][k].dtype)
                if chosen[0][k].is_floating_point() else chosen[0][k] for k in chosen[0]}
    avg = mean(states)

    def start(entry: Entry):
        if entry.method == "dense":
            return "theta0", None, 0
        own_run = where == "own" and entry.ticket.startswith("spec") and method == "tickets"
        k = int(entry.ticket[4:]) if own_run else None
        point = states[k - 1] if k else avg   # (the dense point: the mean of one)

        def load(net: torch.nn.Module) -> None:
            head = set() if keep_head else set(head_parameters(net))
            own = net.state_dict()
            net.load_state_dict({n: (point[n] if n in point and n not in head and point[n].shape == t.shape
                                     else t) for n, t in own.items()})
        if where == "dense":
            return "rewind-dense", load, rewind_epoch
        return (f"rewind-p{k}" if k else ("rewind" if len(states) == 1 else "rewind-mean")), load, rewind_epoch
    return start


def _part_number(path: Path) -> int:
    """k of a partition run's rewind point (``p<k>/rewind.safetensors`` of a DiLT run,
    ``rewind_p<k>.safetensors`` of COLT's); 0 for a single run's ``rewind.safetensors``."""
    tail = path.stem.removeprefix("rewind").removeprefix("_") or path.parent.name
    return int(tail[1:]) if re.fullmatch(r"p\d+", tail) else 0


def transfer(suite: Suite, model: str, dataset: str, seed: int, tag: str, target: str, sources: list[str],
             out: str, log: str | None = None, entry: str | None = None) -> None:
    """Experiment 4: masks found on ``dataset`` applied to a new initialisation theta'_0 and
    trained on ``target`` (all of the sources' masks at the transfer sparsity, or ``entry``)."""
    from dilt.io import clean_orphans

    t = suite.transfer_sparsity
    names = [s if s == "dense" else Path(s).name for s in sources]
    work = Path(out).parent
    from dilt.workflow import transfer_sources

    # the settings of the transfer as a whole, whichever of its sources this job was given
    h = prov.digest(prov.transfer_settings(suite, transfer_sources(suite.spec, tag), model, dataset,
                                           seed, tag, target))
    src = load_data(suite, dataset, seed)
    bundle = load_data(suite, target, seed)
    entries = []
    for s, name in zip(sources, names):
        if s == "dense":
            entries.append(dense_entry())
        else:
            entries += _source_dir_entries(suite, s, name, model, dataset, seed, tag,
                                           only_mode="source-matched", only_target=t)[1]
    entries = _select(entries, entry, work)
    init_seed = prov.transfer_init_seed(suite, seed)

    def make():
        torch.manual_seed(init_seed)
        return new_model(suite, model, bundle)

    # masks cover the body only (the head is never pruned by default), so they fit the new head
    shapes = Mask.ones(make(), prunable(suite, model, src)).shapes
    for e in entries:
        if e.mask is not None and e.mask.shapes != shapes:
            raise ValueError(f"transfer {dataset}->{target}: mask {e.key} does not fit {model} on {target}")
    cache = work / "cache"
    clean_orphans(work)
    records = train_entries(entries, model=model, make_model=make, bundle=bundle,
                            eval_splits={"full": Split(bundle.test)}, recipe=suite.recipe(model, target),
                            seed=seed, work_dir=cache, log=log, experiment="transfer",
                            partition=tag if tag != FULL else "-", source_dataset=dataset, provenance=h)
    write_json(out, {"records": records, "provenance": h})


# -- functional analysis (experiment 2) -----------------------------------------------------
def analyze(suite: Suite, model: str, dataset: str, seed: int, tag: str, run_dirs: list[str],
            theta0: str, out: str) -> None:
    from dilt.analysis import run_analysis
    from dilt.analysis.features import probe_indices
    from dilt.data.loader import batches
    from dilt.prune.imp import mask_at_sparsity

    _check_theta0(theta0, model, seed, suite, dataset)
    for k, d in enumerate(run_dirs, start=1):
        want = prov.digest(prov.find_settings(suite, DILT.name, model, dataset, seed, tag, k))
        _source_manifest(d, {"method": DILT.name, "seed": seed, "partition": tag, "provenance": want})
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
        net = theta0_model(suite, model, theta0, bundle, classes, head_seed(seed, p.index))
        state, meta = load_state(Path(d) / f"weights_r{r}.safetensors", expect={"seed": seed})
        net.load_state_dict(state)
        models.append(net)
        masks.append(mask)
        # features are cached beside the weights, keyed by everything they depend on
        key = (f"{meta.get('hash')}_{cfg.get('probe_split', 'test')}{len(idx)}_"
               f"{cfg.get('reduce', 'gap')}{cfg.get('proj_dim', 256)}")
        caches.append(str(Path(d) / f"features_r{r}_{key}.npz"))
    probe_x = torch.cat([x for x, _ in batches(ds, idx, 512)])
    h = prov.digest(prov.analysis_settings(suite, model, dataset, seed, tag))
    # the GW pairs solved so far (hours at paper scale): a killed job solves only the rest
    pairs = Path(out).parent / f"gw_pairs_{h}.json"
    for stale in pairs.parent.glob("gw_pairs_*.json"):  # of other settings: never resumed
        if stale != pairs:
            stale.unlink()
    result = run_analysis(models, masks, probe_x, weight_layers(models[0]), {**cfg, "seed": seed},
                          feature_cache=caches, gw_checkpoint=str(pairs))
    from dilt.tickets import failed_round, failed_run_fraction

    failed = [failed_round(d, failed_run_fraction(suite)) for d in run_dirs]
    result["flags"] = "failed_source" if any(f is not None and f <= r for f in failed) else ""
    result["meta"] = {"model": model, "dataset": dataset, "seed": seed, "partition": tag,
                      "sparsity": sparsity, "round": r, "probe_size": int(len(idx)),
                      "provenance": h}
    write_json(out, result)
    pairs.unlink(missing_ok=True)

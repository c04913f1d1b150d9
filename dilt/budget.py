"""What a suite costs before it runs: training runs, epochs and GPU-hours, per experiment.

``python -m dilt budget --suite NAME`` prints it. The count follows the workflow job by job:

* **1 IMP / methods**: the dense reference of every (model, dataset, seed); every method's
  mask-finding run (IMP trains rounds 0..R, R = ``len(schedule(targets, rate))`` from
  :func:`dilt.prune.magnitude.schedule`: LTH on the full data, DiLT once per partition on D_k,
  COLT N models per round on their D_k; RigL one sparse training per target; CAP its fine-tuning
  steps per target; SAViT its fine-tuning per FLOPs target; SNIP, GraSP and random masks none),
  and as the stage ``score`` what it computes besides training, in training-image equivalents
  (each method's ``scoring``: CAP's Fisher gradients, SAViT's gradients and exact Hessian,
  SNIP's and GraSP's scoring batches);
  and the retraining of every mask and random control the retrain jobs list
  (:func:`dilt.workflow.entries`), DiLT's core and union tickets included.
* **2 analysis**: no training; the forward passes of the probe set through the N partition
  models (the Gromov-Wasserstein solves run on CPUs and are not counted).
* **3 specialists**: the retraining of the spec_k tickets and their random controls.
* **4 transfer**: every mask and control trained from a new initialisation on each target.

A training's cost is ``epochs x (train images + validation images / 3)`` images (the validation
split is evaluated after every epoch; a forward pass costs about a third of a training step)
divided by the throughput of the (model, resolution) on one GPU (GPU-hours do not depend on how
many GPUs a DDP job uses, scaling assumed linear; the one test-set pass after a training is left
out). Each training is charged to the first experiment that needs it (the DiLT partition runs to
experiment 1, although 2-4 use them).
COLT's rounds are an upper bound: intersecting N masks prunes at least ``rate`` per round, so it
may reach the targets in fewer rounds than IMP; such rows say ``at most``.

Throughputs (images/s of training on one GPU, mixed precision) are cited from public benchmarks,
scaled from one where only a ratio is published, measured (``--throughput FILE``), or estimated
from FLOPs; every row says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

EXPERIMENTS = {1: "1 IMP/methods", 2: "2 analysis", 3: "3 specialists", 4: "4 transfer"}
EVAL_COST = 1 / 3            # a forward pass relative to a training step (forward + backward)
ESTIMATE_CAP = 20_000.0      # images/s: an estimate never exceeds what a PIL input pipeline feeds


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    kind: str                # cited | cited, scaled | measured | estimate
    source: str


_NV = ("NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, training performance on "
       "DGX A100 80GB, 1 GPU, mixed precision, batch 256 (pytorch-21.03 NGC)")
_TIMM = ("timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv: {m} {v} img/s vs resnet50 "
         "826.06 img/s (RTX 3090, AMP); that ratio applied to ResNet-50's A100 figure")
_RN50_A100 = 2470.0
CITED: dict[tuple[str, int], Throughput] = {
    ("resnet50", 224): Throughput(_RN50_A100, "cited", _NV),
    ("deit_s", 224): Throughput(round(_RN50_A100 * 1053.64 / 826.06), "cited, scaled",
                                _TIMM.format(m="deit_small_patch16_224", v=1053.64)),
    ("resnet18", 224): Throughput(round(_RN50_A100 * 2764.22 / 826.06), "cited, scaled",
                                  _TIMM.format(m="resnet18", v=2764.22)),
}

# official training-set sizes (images) of the real data sets; the embedded ones are counted
TRAIN_IMAGES = {"imagenet": 1_281_167, "cifar100": 50_000, "stanford_cars": 8_144, "cub200": 5_994}


# -- facts ----------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _embedded(name: str, val_fraction: float) -> tuple[int, int, int, int]:
    from dilt.data import load_dataset

    b = load_dataset(name, seed=0, val_fraction=val_fraction)
    return len(b.train_targets), len(b.val_targets), b.num_classes, b.input_shape[-1]


def data_facts(spec: dict, dataset: str) -> tuple[int, int, int]:
    """(train images, validation images, image side) of ``dataset`` under the suite."""
    from dilt.config import EMBEDDED_DATA, val_fraction

    vf = val_fraction(spec, dataset)
    if dataset in EMBEDDED_DATA:
        n_tr, n_va, _, side = _embedded(dataset, vf)
        return n_tr, n_va, side
    if dataset not in TRAIN_IMAGES:
        raise ValueError(f"budget: the training-set size of {dataset!r} is not known "
                         f"(known: {', '.join(sorted(TRAIN_IMAGES))})")
    n = TRAIN_IMAGES[dataset]
    n_va = int(round(vf * n))     # stratified per class: within one image per class of this
    side = (spec.get("dataset_options") or {}).get(dataset, {}).get("image_size", 224)
    return n - n_va, n_va, int(side)


@lru_cache(maxsize=32)
def meta_model(model: str, side: int, channels: int, num_classes: int, options: tuple = ()):
    """``model`` built on the meta device (shapes, nothing allocated)."""
    import torch

    from dilt.models import build_model

    with torch.device("meta"):
        return build_model(model, num_classes, (channels, side, side), **dict(options))


@lru_cache(maxsize=64)
def model_flops(model: str, side: int, channels: int, num_classes: int, options: tuple = ()) -> float:
    """Forward FLOPs of one image (counted on the meta device: nothing is allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = meta_model(model, side, channels, num_classes, options)
    with FlopCounterMode(display=False) as fc:
        net(torch.empty(1, channels, side, side, device="meta"))
    return float(fc.get_total_flops())


def throughput(model: str, side: int, measured: dict | None = None, *, channels: int = 3,
               num_classes: int = 1000, options: tuple = ()) -> Throughput:
    """Images/s of training ``model`` at ``side`` px on one GPU: measured, cited, or estimated
    from FLOPs relative to a cited entry (the same model at another size, else ResNet-50)."""
    key = f"{model}@{side}"
    if measured and key in measured:
        return Throughput(float(measured[key]), "measured", f"--throughput file ({key})")
    if (model, side) in CITED:
        return CITED[(model, side)]
    ref_key = next((k for k in CITED if k[0] == model), ("resnet50", 224))
    ref = CITED[ref_key]
    ratio = model_flops(ref_key[0], ref_key[1], 3, 1000) / model_flops(model, side, channels,
                                                                       num_classes, options)
    value = min(ref.images_per_s * ratio, ESTIMATE_CAP)
    return Throughput(round(value), "estimate",
                      f"FLOPs-scaled from {ref_key[0]}@{ref_key[1]} ({ref.kind}), capped at "
                      f"{ESTIMATE_CAP:.0f} img/s")


def load_measured(path: str | Path) -> dict[str, float]:
    """Measured throughputs: a JSON object ``{"<model>@<side>": images per second, ...}``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object of '<model>@<side>': positive images/s")
    return {str(k): float(v) for k, v in data.items()}


def imp_rounds(spec: dict) -> int:
    """IMP rounds after the dense one (round 0): one per step of the pruning schedule."""
    from dilt.prune.magnitude import schedule

    return len(schedule(spec["sparsities"], spec["prune"]["rate"]))


def part_fractions(spec: dict, tag: str, dataset: str) -> list[float]:
    """Share of the training images each partition of ``tag`` holds (classes assumed balanced)."""
    from dilt.data.partition import SEMANTIC_DATASETS

    n, scheme = next((p["n"], p["scheme"]) for p in spec["partitions"]
                     if f"{p['scheme']}{p['n']}" == tag)
    if scheme == "iid":
        return [1.0 / n] * n
    units = SEMANTIC_DATASETS[dataset] if scheme == "semantic" else _facts(spec, dataset)[2]
    return [len(g) / units for g in _split(units, n)]


def _split(units: int, n: int) -> list[range]:
    """``np.array_split`` sizes of ``units`` items in ``n`` groups (what the schemes cut)."""
    q, r = divmod(units, n)
    sizes = [q + 1] * r + [q] * (n - r)
    starts = [sum(sizes[:i]) for i in range(n)]
    return [range(s, s + z) for s, z in zip(starts, sizes)]


def _facts(spec: dict, dataset: str) -> tuple[int, int, int, int]:
    """(train images, validation images, classes, channels) of ``dataset``."""
    from dilt.config import EMBEDDED_DATA, KNOWN_DATA, val_fraction

    n_tr, n_va, _ = data_facts(spec, dataset)
    if dataset in EMBEDDED_DATA:
        return n_tr, n_va, _embedded(dataset, val_fraction(spec, dataset))[2], 1
    return n_tr, n_va, KNOWN_DATA[dataset][0], 3


# -- the count ------------------------------------------------------------------------------

def _method_options(spec: dict, name: str) -> dict:
    from dilt.methods import get_method

    return {**get_method(name).options, **((spec.get("method_options") or {}).get(name) or {})}


def find_trainings(spec: dict, method: str, recipe_epochs: int,
                   fractions: list[float]) -> list[tuple[int, float, float, str]]:
    """Trainings of one mask-finding job: ``(trainings, epochs each, data share, bound)``."""
    from dilt.methods import get_method
    from dilt.prune.imp import round_epochs

    m = get_method(method)
    targets = sorted(spec["sparsities"])
    if m.kind == "iterative":
        rounds = imp_rounds(spec) + 1
        # round 0 trains the whole recipe; after a late rewind the later rounds train the rest
        k = spec["prune"]["rewind_epoch"]
        split = ([(rounds, recipe_epochs)] if k == 0 else
                 [(1, recipe_epochs), (rounds - 1, round_epochs(recipe_epochs, k, 1))])
        if not m.on_partitions:                      # LTH: the full data
            return [(n, ep, 1.0, "exact") for n, ep in split]
        if m.per_partition:                          # DiLT: one job per partition (all listed)
            return [(n, ep, f, "exact") for f in fractions for n, ep in split]
        return [(n, ep, f, "at most") for f in fractions for n, ep in split]   # COLT: N models a round
    if m.kind == "dynamic":                          # RigL: one sparse training per target
        return [(len(targets), recipe_epochs, 1.0, "exact")]
    if m.cost is not None:                           # post-training / structured: fine-tuning
        trainings, epochs = m.cost(_method_options(spec, method), targets, recipe_epochs)
        return [(trainings, epochs, 1.0, "exact")] if trainings and epochs > 0 else []
    return []                                        # one-shot at init: no training


def _experiment(source: str, entry: str) -> int:
    """3 for a specialist ticket (``<ticket method>_spec<k>_...``), else 1."""
    return 3 if source == "tickets" and entry.split("_")[1].startswith("spec") else 1


def budget(suite, measured: dict | None = None) -> pd.DataFrame:
    """One row per (experiment, stage, model, dataset, method, bound), summed over seeds and
    partition schemes: trainings, epochs, images processed and GPU-hours. ``measured``:
    ``{"<model>@<side>": images/s}``, preferred to the cited throughputs."""
    from dilt import workflow as W
    from dilt.methods import ScoringFacts, get_method, ticket_method
    from dilt.provenance import FULL
    from dilt.prune.imp import round_epochs

    spec = suite.spec
    tickets_from = ticket_method().name  # the method the tickets' rows are reported under
    seeds = len(spec["seeds"])
    rows: dict[tuple, list] = {}

    def build_options(model: str) -> tuple:
        return tuple(sorted(suite.build_options(model).items()))

    def speed(model: str, dataset: str) -> Throughput:
        _, _, classes, channels = _facts(spec, dataset)
        return throughput(model, data_facts(spec, dataset)[2], measured, channels=channels,
                          num_classes=classes, options=build_options(model))

    def scoring_facts(model: str, dataset: str) -> ScoringFacts:
        n_tr, _, classes, channels = _facts(spec, dataset)
        net = meta_model(model, data_facts(spec, dataset)[2], channels, classes, build_options(model))
        return ScoringFacts(classes=classes, train_images=n_tr, model=net)

    def train_images(dataset: str, epochs: float, share: float = 1.0) -> float:
        n_tr, n_va, _, _ = _facts(spec, dataset)
        return epochs * share * (n_tr + n_va * EVAL_COST)

    def add(exp, stage, model, dataset, method, n, epochs, images_each, bound="exact"):
        """``n`` trainings of ``epochs`` (0: forward passes only) for every seed."""
        key = (EXPERIMENTS[exp], stage, model, dataset, method, bound)
        acc = rows.setdefault(key, [0, 0.0, 0.0, speed(model, dataset), data_facts(spec, dataset)[2]])
        acc[0] += n * seeds if epochs else 0
        acc[1] += n * epochs * seeds
        acc[2] += n * images_each * seeds

    for model in spec["models"]:
        for dataset in spec["datasets"]:
            epochs = suite.recipe(model, dataset).epochs
            add(1, "dense", model, dataset, "dense", 1, epochs, train_images(dataset, epochs))
            for method in spec["methods"]:
                if not W.applies(method, model):
                    continue
                for tag in W.method_tags(spec, method):
                    fr = part_fractions(spec, tag, dataset) if tag != FULL else [1.0]
                    for n, ep, share, bound in find_trainings(spec, method, epochs, fr):
                        add(1, "find", model, dataset, method, n, ep,
                            train_images(dataset, ep, share), bound)
                    scoring = get_method(method).scoring
                    if scoring is not None:
                        images = scoring(_method_options(spec, method), sorted(spec["sparsities"]),
                                         scoring_facts(model, dataset))
                        add(1, "score", model, dataset, method, 1, 0, images)
            for tag, source in W.retrain_sources(spec, model):
                if source == "dense":
                    continue
                name = tickets_from if source == "tickets" else source
                # an IMP ticket retrained from a late-rewinding point trains the rest of the
                # schedule (dilt.jobs: _rewind_start), like the rounds after the first
                ep = round_epochs(epochs, spec["prune"]["rewind_epoch"], 1) if W.rewinds(source) else epochs
                for entry in W.entries(spec, source, tag):
                    add(_experiment(source, entry), "retrain", model, dataset, name, 1, ep,
                        train_images(dataset, ep))
            probe = (spec.get("analysis") or {}).get("probe_size", 1024)
            for a in W.analyses(spec, "_"):
                if a.startswith(f"_/{model}/{dataset}/seed{spec['seeds'][0]}/"):
                    tag = a.split("/")[-2]
                    add(2, "analysis", model, dataset, tickets_from, len(part_fractions(spec, tag, dataset)),
                        0, probe * EVAL_COST)
            for target in W.transfer_targets(spec, dataset):
                t_epochs = suite.recipe(model, target).epochs
                for tag in [FULL] + W.tags(spec):
                    for source in W.transfer_sources(spec, tag):
                        name = tickets_from if source == "tickets" else source
                        n = len(W.entries(spec, source, tag, transfer=True))
                        add(4, "transfer", model, target, name, n, t_epochs,
                            train_images(target, t_epochs))

    out = []
    for key, (n, ep, images, tp, side) in rows.items():
        out.append(dict(zip(("experiment", "stage", "model", "dataset", "method", "bound"), key),
                        trainings=int(n), epochs=float(ep), images=float(images), side=side,
                        images_per_s=float(tp.images_per_s), throughput=tp.kind,
                        gpu_hours=images / tp.images_per_s / 3600.0, source=tp.source))
    return pd.DataFrame(out).sort_values(["experiment", "stage", "model", "dataset", "method"],
                                         kind="stable", ignore_index=True)


def totals(df: pd.DataFrame, by: str = "experiment") -> pd.DataFrame:
    """Trainings, epochs and GPU-hours per ``by`` value, with a ``total`` row."""
    cols = ["trainings", "epochs", "gpu_hours"]
    t = df.groupby(by, sort=True)[cols].sum()
    t.loc["total"] = t[cols].sum()
    t["trainings"] = t["trainings"].astype(int)
    return t


def format_budget(df: pd.DataFrame, suite_name: str = "", *, detail: bool = False) -> str:
    """The budget as text: per experiment and in total, the throughputs used (with their kind
    and source), and the full table when ``detail``."""
    lines = [f"compute budget of suite {suite_name}" if suite_name else "compute budget"]
    t = totals(df)
    t["epochs"] = t["epochs"].map(lambda v: f"{v:,.0f}")
    t["gpu_hours"] = t["gpu_hours"].map(lambda v: f"{v:,.1f}")
    t["trainings"] = t["trainings"].map(lambda v: f"{v:,d}")
    lines.append(t.rename(columns={"gpu_hours": "GPU-hours"}).to_string())
    if (df["bound"] == "at most").any():
        lines.append("(COLT rounds are an upper bound: its rounds may prune past the IMP rate)")
    lines.append("throughput (training images/s on one GPU):")
    tps = df.drop_duplicates(["model", "side"])
    for r in tps.itertuples(index=False):
        lines.append(f"  {r.model} at {r.side} px: {r.images_per_s:,.0f} ({r.throughput}: {r.source})")
    if detail:
        d = df.copy()
        d["gpu_hours"] = d["gpu_hours"].map(lambda v: f"{v:,.2f}")
        lines += ["", d.drop(columns=["images", "source"]).to_string(index=False)]
    return "\n".join(lines)

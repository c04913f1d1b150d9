"""The method registry: every way of finding a sparse network is one registered :class:`Method`.

A method module (``dilt/methods/<name>.py``) registers itself with :func:`register_method` and
implements ``find(job: MaskJob)``, which writes the *mask-run layout* through the job:

    <out_dir>/<key>.safetensors    one mask per target sparsity (``job.write_mask``)
    <out_dir>/own_<key>.json       the method's own trained result, where its protocol has one
                                   (``job.write_record``: RigL's sparse-from-scratch run, ...)
    <out_dir>/masks.json           the manifest, written last (``job.finish``): the run is complete

The CLI, the rules, the config schema's enum and the report read this registry; nothing else
spells a method's name. Kinds:

* ``iterative``      train, prune, rewind, repeat (LTH, DiLT, COLT)
* ``one-shot``       a mask at theta_0 from one look at the data (SNIP, GraSP, random)
* ``dynamic``        sparse training that changes the mask while it trains (RigL)
* ``post-training``  prune a trained dense model, then fine-tune (CAP)
* ``structured``     remove whole heads / neurons / channels (SAViT): reported on a FLOPs axis
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dilt.methods.job import MaskJob

KINDS = ("iterative", "one-shot", "dynamic", "post-training", "structured")
NEEDS = ("theta0", "dense", "partitions")

_REGISTRY: dict[str, Method] = {}


@dataclass(frozen=True)
class Method:
    """A registered way of finding sparse networks."""

    name: str                                   # config and path name (lower case)
    kind: str                                   # one of KINDS
    display: str                                # name in tables and figures
    find: Callable[[MaskJob], None] | None    # writes the mask-run layout; None: derived (tickets)
    needs: tuple[str, ...] = ("theta0",)        # subset of NEEDS
    per_partition: bool = False                 # one job per partition (DiLT), not one per run
    on_partitions: bool = False                 # runs on a partition scheme (COLT, DiLT)
    retrain: bool = True                        # its unstructured masks are retrained from theta_0
    vit_only: bool = False                      # runs on vision transformers only (SAViT)
    uses_model: bool = True                     # its find job computes with the model (False:
                                                # masks drawn from the layer shapes alone)
    options: dict = field(default_factory=dict)  # default options (``methods_options.<name>``)
    # trainings a find job runs beyond IMP's and RigL's (for `dilt budget`):
    # cost(options, targets, recipe_epochs) -> (trainings, epochs each)
    cost: Callable[[dict, list, int], tuple[int, float]] | None = None
    # what a find job computes besides training (scoring batches, Fisher gradients, Hessians),
    # in images of training steps (for `dilt budget`): scoring(options, targets, facts) -> images
    scoring: Callable[[dict, list, ScoringFacts], float] | None = None
    # raises ValueError naming the key of a bad option value (defaults merged with the config's);
    # the config check calls it, so a bad value fails before any job starts
    check: Callable[[dict], object] | None = None
    cite: str = ""                              # the paper it implements

    @property
    def trains_in_find(self) -> bool:
        """Whether its find job trains (all but the one-shot kind, which scores once): a job
        that trains takes the suite's DDP GPUs."""
        return self.kind != "one-shot"

    @property
    def find_work(self) -> str:
        """What its find job does, for the GPUs it asks (`dilt.workflow.job_resources`): "trains"
        (the suite's DDP GPUs), "scores" (one-shot scoring on at most one GPU) or "draws"
        (random masks: no GPU)."""
        if self.trains_in_find:
            return "trains"
        return "scores" if self.uses_model else "draws"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind {self.kind!r} is not one of {KINDS}")
        bad = set(self.needs) - set(NEEDS)
        if bad:
            raise ValueError(f"method {self.name}: unknown need {sorted(bad)[0]!r}")


@dataclass(frozen=True)
class ScoringFacts:
    """What a method's ``scoring`` cost may depend on: the data set's classes and training
    images, and the model (built on the meta device: shapes only)."""

    classes: int
    train_images: int
    model: object


def register_method(method: Method) -> Method:
    if method.name in _REGISTRY and _REGISTRY[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    _import_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def method_names() -> list[str]:
    _import_methods()
    return sorted(_REGISTRY)


def methods() -> list[Method]:
    return [_REGISTRY[n] for n in method_names()]


def ticket_method() -> Method:
    """The method whose independent partition runs the tickets and the functional analysis are
    built from: the one registered with ``per_partition`` (DiLT). Code that means "the runs the
    tickets come from" asks for this instead of spelling the name."""
    chosen = [m for m in methods() if m.per_partition]
    if len(chosen) != 1:
        raise RuntimeError(f"exactly one method may run per partition (the tickets' source); "
                           f"registered: {[m.name for m in chosen]}")
    return chosen[0]


def iterative_methods() -> list[str]:
    """The IMP methods: full-data ones first, then those on partitions (one run, then one run
    per partition), e.g. lth, colt, dilt."""
    its = [m for m in methods() if m.kind == "iterative"]
    return [m.name for m in sorted(its, key=lambda m: (m.on_partitions, m.per_partition, m.name))]


def _import_methods() -> None:
    """Import every module of this package once (each registers its method)."""
    import dilt.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "job":
            importlib.import_module(f"dilt.methods.{info.name}")

"""What a mask-finding job hands to a method's ``find``: its data, models, recipe, options and
the writers of the mask-run layout (see :mod:`dilt.methods`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dilt.io import read_json, write_json
from dilt.masks import Mask

MANIFEST = "masks.json"
# what a killed run resumes from: epoch checkpoints (:meth:`MaskJob.train`) and a method's own
# state between its steps (CAP's); removed once the run completes
RESUME_FILES = ("ckpt_*.pt", "step_*.pt")


def mask_key(target: float, ticket: str = "mask", control: str = "ticket") -> str:
    """File stem of a mask: ``mask_s0.9``, ``core_s0.95_random``, ..."""
    return f"{ticket}_s{target:g}" + ("" if control == "ticket" else f"_{control}")


@dataclass
class MaskJob:
    suite: object                 # dilt.config.Suite
    method: str
    model: str
    dataset: str
    seed: int
    out_dir: Path
    theta0: Path
    partition: str = "full"         # 'full' or a partition tag (contiguous2, ...)
    part: int | None = None         # k (1-based) for per-partition methods
    dense: Path | None = None       # trained dense weights, for post-training methods
    log: str | None = None
    provenance: str = ""            # the settings hash every file of this run carries
    _entries: list = field(default_factory=list)

    # -- inputs ------------------------------------------------------------------------------
    @cached_property
    def bundle(self):
        from dilt.jobs import load_data

        return load_data(self.suite, self.dataset, self.seed)

    @property
    def targets(self) -> list[float]:
        return sorted(self.suite["sparsities"])

    @cached_property
    def prunable(self) -> list[str]:
        from dilt.jobs import prunable

        return prunable(self.suite, self.model, self.bundle)

    @property
    def recipe(self):
        return self.suite.recipe(self.model, self.dataset)

    @property
    def options(self) -> dict:
        """The method's options: its registered defaults under the suite's ``method_options``."""
        from dilt.methods import get_method

        given = (self.suite.spec.get("method_options") or {}).get(self.method) or {}
        return {**get_method(self.method).options, **given}

    def theta0_model(self) -> nn.Module:
        """A fresh model holding theta_0 (full label space)."""
        from dilt.jobs import theta0_model

        return theta0_model(self.suite, self.model, self.theta0, self.bundle)

    def dense_model(self) -> nn.Module:
        """The trained dense reference of this seed (post-training methods start from it)."""
        from dilt.models.state import load_state

        if self.dense is None:
            raise ValueError(f"method {self.method} needs the trained dense model; none was given")
        from dilt import provenance as prov

        want = prov.digest(prov.dense_settings(self.suite, self.model, self.dataset, self.seed))
        net = self.theta0_model()
        net.load_state_dict(load_state(self.dense, expect={"provenance": want})[0])
        return net

    def splits(self):
        """(train, val, {eval split name: Split}) on the full data set."""
        from dilt.jobs import full_splits, test_splits

        tr, va, _ = full_splits(self.bundle)
        return tr, va, test_splits(self.bundle, None)

    def class_balanced_batch(self, per_class: int, split: str = "train", *,
                             shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
        """``per_class`` training examples of every class (fewer where a class has fewer), drawn
        and augmented with the job's seed: the batch SNIP, GraSP and SAViT score on. ``shard``
        (rank, ranks): only every ranks-th example from the rank-th, a DDP rank's share."""
        from dilt.data.loader import batches

        ds, targets = self.bundle.split(split)
        rng = np.random.default_rng(self.seed)
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(targets == c))[:per_class]
                                      for c in np.unique(targets)]))[shard[0]::shard[1]]
        x = y = None
        at = 0
        for xb, yb in batches(ds, idx, 4096, augment_seed=self.seed):  # filled in place: at 224 px
            if x is None:                                                # a list and its cat would
                x = xb.new_empty((len(idx), *xb.shape[1:]))              # hold the batch twice
                y = yb.new_empty((len(idx), *yb.shape[1:]))
            x[at:at + len(xb)], y[at:at + len(yb)] = xb, yb
            at += len(xb)
        return x, y

    def train(self, model: nn.Module, *, name: str, sparsifier=None, mask: Mask | None = None,
              recipe=None):
        """Train ``model`` with the job's recipe on the full training set (checkpointed in the
        run directory, so a killed job resumes); returns :class:`dilt.train.TrainResult`."""
        from dilt.train import train

        tr, va, _ = self.splits()
        ckpt = self.out_dir / f"ckpt_{name}.pt"
        res = train(model, tr, va, recipe or self.recipe, mask=mask, sparsifier=sparsifier,
                    seed=self.seed, checkpoint=ckpt, log_path=self.log,
                    desc=f"{self.method} {self.model}/{self.dataset} s{self.seed} {name}",
                    checkpoint_meta={"provenance": self.provenance, "name": name})
        return res

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from dilt.train import evaluate

        _, _, evals = self.splits()
        return {k: evaluate(model, s, self.recipe) for k, s in evals.items()}

    # -- outputs -----------------------------------------------------------------------------
    def write_mask(self, mask: Mask, target: float, *, epochs: float, round: int = 0,
                   ticket: str = "mask", control: str = "ticket", extra: dict | None = None) -> str:
        """Save one mask of this run and list it in the manifest. ``epochs``: the training
        epochs the method spent to find it (0 for a mask at initialisation)."""
        key = mask_key(target, ticket, control)
        meta = {"method": self.method, "model": self.model, "dataset": self.dataset,
                "seed": self.seed, "partition": self.partition, "target": target,
                "provenance": self.provenance}
        mask.save(self.out_dir / f"{key}.safetensors", **meta)
        self._entries.append({"key": key, "file": f"{key}.safetensors", "ticket": ticket,
                              "control": control, "target_sparsity": target, "round": round,
                              "actual_sparsity": mask.sparsity, "epochs": epochs,
                              "empty_layers": mask.empty_layers(), **(extra or {})})
        return key

    def write_record(self, key: str, scores: dict[str, float], *, target: float,
                     actual_sparsity: float, epochs: float, extra: dict | None = None) -> None:
        """The method's own trained result (its protocol's accuracy on each eval split)."""
        write_json(self.out_dir / f"own_{key}.json", {
            "key": key, "method": self.method, "target_sparsity": target,
            "actual_sparsity": actual_sparsity, "epochs": epochs, "test": scores,
            "provenance": self.provenance, **(extra or {})})
        for e in self._entries:
            if e["key"] == key:
                e["own_result"] = f"own_{key}.json"

    def finish(self, **summary) -> dict:
        """Write the manifest (last: the run is complete), remove the files a killed run would
        have resumed from (:data:`RESUME_FILES`) and return the manifest."""
        manifest = {"method": self.method, "model": self.model, "dataset": self.dataset,
                    "seed": self.seed, "partition": self.partition, "provenance": self.provenance,
                    "masks": self._entries, **summary}
        write_json(self.out_dir / MANIFEST, manifest)
        from dilt import platform

        if platform.is_main():  # the run is complete: nothing resumes from these any more
            for pattern in RESUME_FILES:
                for path in self.out_dir.glob(pattern):
                    path.unlink(missing_ok=True)
        return manifest


def read_manifest(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / MANIFEST)


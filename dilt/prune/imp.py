"""Iterative magnitude pruning: one loop for LTH, DiLT and COLT.

Round r trains every model from the rewind point under the shared mask m_r, then prunes
``rate`` of the remaining weights by global magnitude. With one model this is plain IMP (LTH on
the full data; DiLT runs one such job per partition, fully independently). With N models trained
on N partitions the pruned masks are intersected every round (COLT): the models never leave the
consensus. A round that would cross a target sparsity stops exactly on it. Files per round, in
``out_dir``::

    mask_r{r}.safetensors            the mask trained in round r (r = 0 is dense)
    weights_r{r}[_p{k}].safetensors  model k after training under mask_r (best validation epoch)
    rewind[_p{k}].safetensors        the late-rewinding point (rewind_epoch > 0), from round 0
    round_r{r}[_p{k}].json           written last in a round: accuracies and the hashes of the
                                     mask and weights (the round is complete)
    ckpt_r{r}[_p{k}].pt              the epoch checkpoint while a round runs (removed after)
    imp_summary.json                 written last: the run is complete

A restarted job skips finished rounds and resumes the unfinished one from its checkpoint.
With late rewinding, rounds r >= 1 start from the rewind point (Frankle et al. 2020) and train
the rest of the schedule from the rewind epoch (:func:`round_epochs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dilt import platform
from dilt.io import FileCheckError, read_json, write_json
from dilt.masks import Mask
from dilt.models.state import load_state, save_state
from dilt.prune.magnitude import consensus_prune, keep_count
from dilt.train import Recipe, Split, evaluate, train


@dataclass
class Part:
    """One model's data: the partition it trains on (or the full data) and where it is tested."""

    make_model: Callable[[], nn.Module]   # a fresh model holding theta_0
    train: Split
    val: Split
    test: Split


def run_imp(parts: Sequence[Part], prunable: Sequence[str], targets: Sequence[float],
            rate: float, recipe: Recipe, out_dir: str | os.PathLike, *, seed: int,
            rewind_epoch: int = 0, meta: dict | None = None, log_path=None,
            desc: str = "imp") -> dict:
    """Run IMP until the highest target sparsity; return (and write) the summary.

    Crash safety: a round is complete when its ``round_r{r}[_p{k}].json`` exists (written last,
    holding the hashes of the mask and weights it used); anything else of an unfinished round is
    recomputed, resuming training from the epoch checkpoint. Every file read back is checked
    against those hashes, so a damaged or foreign file is refused, never used. ``meta`` (with
    its ``provenance``) goes into every file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    n = len(parts)
    suffix = (lambda k: "") if n == 1 else (lambda k: f"_p{k + 1}")
    last_keep = keep_count(_numel(parts[0], prunable), max(targets))
    targets = sorted(targets)
    ckpt_meta = {"provenance": meta.get("provenance", "")}

    mask = Mask.ones(parts[0].make_model(), prunable)
    rounds, r = [], 0
    while True:
        mask_path = out / f"mask_r{r}.safetensors"
        if mask_path.exists():
            on_disk = Mask.load(mask_path, shapes=mask.shapes)
            if on_disk != mask:
                raise FileCheckError(f"{mask_path}: differs from the mask this run derives for round {r}; "
                                     "delete the run directory to recompute")
        else:
            mask.save(mask_path, round=r, **meta)
        models = []
        for k, part in enumerate(parts):
            done = out / f"round_r{r}{suffix(k)}.json"
            wpath = out / f"weights_r{r}{suffix(k)}.safetensors"
            rewind = out / f"rewind{suffix(k)}.safetensors"
            model = _rewound(part, rewind, rewind_epoch, r)
            if done.exists():
                record = read_json(done)
                state, wmeta = load_state(wpath)
                if wmeta.get("hash") != record.get("weights_hash") or record.get("mask_hash") != mask.content_hash():
                    raise FileCheckError(f"{wpath}: does not match {done.name} (damaged or mixed runs); "
                                         "delete the run directory to recompute")
                model.load_state_dict(state)
                (out / f"ckpt_r{r}{suffix(k)}.pt").unlink(missing_ok=True)  # a kill after the commit
            else:
                hook = rewind_saver(rewind, rewind_epoch, meta) if r == 0 and rewind_epoch > 0 else None
                ckpt = out / f"ckpt_r{r}{suffix(k)}.pt"
                res = train(model, part.train, part.val, recipe, mask=mask, seed=seed + 7919 * r,
                            checkpoint=ckpt, log_path=log_path, desc=f"{desc} r{r}{suffix(k)}",
                            on_epoch_end=hook, checkpoint_meta=ckpt_meta,
                            start_epoch=recipe.epochs - round_epochs(recipe.epochs, rewind_epoch, r))
                whash = save_state(wpath, model, round=r, sparsity=mask.sparsity, **meta)
                write_json(done, {
                    "round": r, "part": k + 1 if n > 1 else None, "sparsity": mask.sparsity,
                    "val_top1": res.best_val_top1, "best_epoch": res.best_epoch,
                    "test_top1": evaluate(model, part.test, recipe), "epochs": res.epochs_run,
                    "weights_hash": whash, "mask_hash": mask.content_hash(),
                    "provenance": meta.get("provenance", "")})
                platform.barrier()  # under DDP rank 0 alone writes: the others wait to read it
                ckpt.unlink(missing_ok=True)
            models.append(model)
        rounds += [read_json(out / f"round_r{r}{suffix(k)}.json") for k in range(n)]
        if mask.kept <= last_keep:
            break
        nxt = next(t for t in targets if keep_count(mask.numel, t) < mask.kept)
        mask = consensus_prune(models, mask, rate, nxt)
        r += 1

    summary = {**meta, "rounds": rounds, "final_round": r,
               "sparsity_by_round": [round(Mask.load(out / f"mask_r{i}.safetensors").sparsity, 8)
                                     for i in range(r + 1)]}
    write_json(out / "imp_summary.json", summary)
    platform.barrier()
    return summary


def round_epochs(epochs: int, rewind_epoch: int, r: int) -> int:
    """The epochs IMP round ``r`` trains: the whole recipe in round 0 (and every round when
    rewinding to theta_0); after a late rewind, the rest of the schedule from the rewind epoch
    (Frankle et al. 2020; OpenLTH trains iterations k..T)."""
    return epochs - rewind_epoch if r > 0 and rewind_epoch > 0 else epochs


def epochs_before(epochs: int, rewind_epoch: int, r: int) -> int:
    """The epochs of rounds 0..r-1: what one model trains before round ``r``'s mask exists."""
    return sum(round_epochs(epochs, rewind_epoch, i) for i in range(r))


def _numel(part: Part, prunable: Sequence[str]) -> int:
    params = dict(part.make_model().named_parameters())
    return sum(params[n].numel() for n in prunable)


def _rewound(part: Part, rewind_path: Path, rewind_epoch: int, r: int) -> nn.Module:
    """theta_0, or the late-rewinding point (saved during round 0) for rounds after the first."""
    model = part.make_model()
    if rewind_epoch > 0 and r > 0:
        if not rewind_path.exists():
            raise FileCheckError(f"{rewind_path}: the late-rewinding point is missing; "
                                 "delete the run directory to recompute")
        model.load_state_dict(load_state(rewind_path)[0])
    return model


def rewind_saver(path: Path, epoch: int, meta: dict):
    """Saves the weights after ``epoch`` epochs of round 0: the training loop calls it before
    that epoch's checkpoint, so a kill can never pass the rewind point without it on disk."""
    def hook(e: int, model: nn.Module) -> None:
        if e + 1 == epoch:
            save_state(path, model, rewind_epoch=epoch, **meta)
    return hook


def round_at_sparsity(masks: Sequence[Mask], sparsity: float) -> int:
    """The round whose mask keeps exactly ``keep_count(numel, sparsity)`` weights."""
    for r, m in enumerate(masks):
        if m.kept == keep_count(m.numel, sparsity):
            return r
    raise KeyError(f"no IMP round at sparsity {sparsity} (rounds: {[round(m.sparsity, 6) for m in masks]})")


def mask_at_sparsity(run_dir: str | os.PathLike, sparsity: float) -> tuple[int, Mask]:
    """The round and mask of an IMP run at exactly ``sparsity``."""
    masks = all_masks(run_dir)
    try:
        r = round_at_sparsity(masks, sparsity)
    except KeyError as e:
        raise KeyError(f"{run_dir}: {e.args[0]}") from None
    return r, masks[r]


def all_masks(run_dir: str | os.PathLike) -> list[Mask]:
    summary = read_json(Path(run_dir) / "imp_summary.json")
    return [Mask.load(Path(run_dir) / f"mask_r{r}.safetensors") for r in range(summary["final_round"] + 1)]



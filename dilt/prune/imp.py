"""Iterative magnitude pruning: one loop for LTH, DiLT and COLT.

Round r trains every model from the rewind point under the shared mask m_r, then prunes
``rate`` of the remaining weights by global magnitude. With one model this is plain IMP (LTH on
the full data; DiLT runs one such job per partition, fully independently). With N models trained
on N partitions the pruned masks are intersected every round (COLT): the models never leave the
consensus. A round that would cross a target sparsity stops exactly on it. Files per round, in
``out_dir``::

    mask_r{r}.safetensors            the mask trained in round r (r = 0 is dense)
    weights_r{r}[_p{k}].safetensors  model k after training under mask_r (best validation epoch)
    round_r{r}.json                  accuracies of round r
    ckpt_r{r}[_p{k}].pt              the epoch checkpoint while a round runs (removed after)
    imp_summary.json                 written last: the run is complete

A restarted job skips finished rounds and resumes the unfinished one from its checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dilt.io import read_json, write_json
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
    """Run IMP until the highest target sparsity; return (and write) the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    n = len(parts)
    suffix = (lambda k: "") if n == 1 else (lambda k: f"_p{k + 1}")
    last_keep = keep_count(_numel(parts[0], prunable), max(targets))
    targets = sorted(targets)

    mask = Mask.ones(parts[0].make_model(), prunable)
    rounds, r = [], 0
    while True:
        mask_path = out / f"mask_r{r}.safetensors"
        if not mask_path.exists():
            mask.save(mask_path, round=r, **meta)
        models = []
        for k, part in enumerate(parts):
            wpath = out / f"weights_r{r}{suffix(k)}.safetensors"
            model = _rewound(part, out / f"rewind{suffix(k)}.safetensors")
            if wpath.exists():
                model.load_state_dict(load_state(wpath)[0])
            else:
                hook = _rewind_saver(out / f"rewind{suffix(k)}.safetensors", rewind_epoch) \
                    if r == 0 and rewind_epoch > 0 else None
                ckpt = out / f"ckpt_r{r}{suffix(k)}.pt"
                res = train(model, part.train, part.val, recipe, mask=mask, seed=seed + 7919 * r,
                            checkpoint=ckpt, log_path=log_path, desc=f"{desc} r{r}{suffix(k)}",
                            on_epoch_end=hook)
                save_state(wpath, model, round=r, sparsity=mask.sparsity, **meta)
                write_json(out / f"round_r{r}{suffix(k)}.json", {
                    "round": r, "part": k + 1 if n > 1 else None, "sparsity": mask.sparsity,
                    "val_top1": res.best_val_top1, "best_epoch": res.best_epoch,
                    "test_top1": evaluate(model, part.test, recipe), "epochs": res.epochs_run})
                ckpt.unlink(missing_ok=True)
            models.append(model)
        rounds += [read_json(out / f"round_r{r}{suffix(k)}.json") for k in range(n)]
        if mask.kept <= last_keep:
            break
        next_path = out / f"mask_r{r + 1}.safetensors"
        if next_path.exists():
            mask = Mask.load(next_path, shapes=mask.shapes)
        else:
            nxt = next(t for t in targets if keep_count(mask.numel, t) < mask.kept)
            mask = consensus_prune(models, mask, rate, nxt)
        r += 1

    summary = {**meta, "rounds": rounds, "final_round": r,
               "sparsity_by_round": [round(Mask.load(out / f"mask_r{i}.safetensors").sparsity, 8)
                                     for i in range(r + 1)]}
    write_json(out / "imp_summary.json", summary)
    return summary


def _numel(part: Part, prunable: Sequence[str]) -> int:
    params = dict(part.make_model().named_parameters())
    return sum(params[n].numel() for n in prunable)


def _rewound(part: Part, rewind_path: Path) -> nn.Module:
    """theta_0, or the late-rewinding point when one was saved in round 0."""
    model = part.make_model()
    if rewind_path.exists():
        model.load_state_dict(load_state(rewind_path)[0])
    return model


def _rewind_saver(path: Path, epoch: int):
    def hook(e: int, model: nn.Module) -> None:
        if e + 1 == epoch and not path.exists():
            save_state(path, model, rewind_epoch=epoch)
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



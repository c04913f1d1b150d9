"""DiLT tickets from N independent partition IMP runs.

For every target sparsity t and ticket (core, spec_k, union):

* ``source-matched``:  the partition masks at sparsity t (as in the proposal); the ticket's own
  sparsity differs (core is sparser, union denser);
* ``density-matched``: the partition masks of the IMP round where the ticket's own sparsity is
  closest to t, so that it can be compared with other methods at (nearly) equal sparsity.

Every ticket gets a ``random`` control with the same number of weights in every layer.
Identical masks (the same ticket from the same round) are written once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from dilt.io import write_json
from dilt.masks import Mask, random_like, tickets
from dilt.prune.imp import all_masks, round_at_sparsity

MODES = ("source-matched", "density-matched")


def ticket_table(rounds: Sequence[Sequence[Mask]]) -> list[dict[str, Mask]]:
    """``rounds[k][r]`` = partition k's mask after round r  ->  tickets of every round."""
    n_rounds = min(len(r) for r in rounds)
    return [tickets([rounds[k][r] for k in range(len(rounds))]) for r in range(n_rounds)]


def select(table: list[dict[str, Mask]], partition_masks: list[Mask], target: float,
           ticket: str, mode: str) -> int:
    """The round whose ``ticket`` is used for ``target`` under ``mode``."""
    if mode == "source-matched":
        return round_at_sparsity(partition_masks, target)
    if mode == "density-matched":
        return min(range(len(table)), key=lambda i: (abs(table[i][ticket].sparsity - target), i))
    raise ValueError(f"unknown ticket mode {mode!r}; known: {', '.join(MODES)}")


def write_tickets(run_dirs: Sequence[str | os.PathLike], targets: Sequence[float],
                  out_dir: str | os.PathLike, *, seed: int, meta: dict) -> dict:
    """Write every ticket and its random control to ``out_dir``; return the manifest."""
    out = Path(out_dir)
    per_part = [all_masks(d) for d in run_dirs]
    table = ticket_table(per_part)
    part_masks = per_part[0][:len(table)]
    part_sparsity = [m.sparsity for m in part_masks]
    names = list(table[0])
    entries, written = [], {}
    for t in sorted(targets):
        for mode in MODES:
            for name in names:
                r = select(table, part_masks, t, name, mode)
                for control in ("ticket", "random"):
                    key = f"{name}_r{r}" + ("_random" if control == "random" else "")
                    if key not in written:
                        mask = table[r][name]
                        if control == "random":
                            g = torch.Generator().manual_seed(seed * 1009 + r * 31 + names.index(name))
                            mask = random_like(mask, g)
                        mask.save(out / f"{key}.safetensors", ticket=name, round=r, control=control, **meta)
                        written[key] = mask
                    mask = written[key]
                    entries.append({"ticket": name, "mode": mode, "control": control,
                                    "target_sparsity": t, "round": r, "file": f"{key}.safetensors",
                                    "actual_sparsity": mask.sparsity,
                                    "empty_layers": mask.empty_layers()})
    manifest = {**meta, "n_partitions": len(run_dirs), "partition_sparsity_by_round": part_sparsity,
                "tickets": entries}
    write_json(out / "manifest.json", manifest)
    return manifest

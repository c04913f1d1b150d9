"""DiLT tickets from N independent partition IMP runs.

For every target sparsity t and ticket (core, spec_k, union):

* ``source-matched``:  the partition masks at sparsity t (as in the proposal); the ticket's own
  sparsity differs (core is sparser, union denser);
* ``density-matched``: the partition masks of the IMP round where the ticket's own sparsity is
  closest to t, so that it can be compared with other methods at (nearly) equal sparsity.

Every ticket gets a ``random`` control with the same number of weights in every layer.
Identical masks (the same ticket from the same round) are written once. Tickets of a round at
or after one where a partition run failed (its validation accuracy fell below a stated fraction
of its dense round's) carry the flag ``failed_source``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from dilt.io import read_json, write_json
from dilt.masks import Mask, random_like, tickets
from dilt.methods.job import MANIFEST
from dilt.provenance import control_seed
from dilt.prune.imp import all_masks, round_at_sparsity

MODES = ("source-matched", "density-matched")
FAILED_RUN_FRACTION = 0.8  # the default of the suite's flags.failed_run_fraction


def failed_run_fraction(suite) -> float:
    """A run fails from the first round below this fraction of its dense round's accuracy."""
    return float((suite.spec.get("flags") or {}).get("failed_run_fraction", FAILED_RUN_FRACTION))


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


def failed_round(run_dir: str | os.PathLike, floor: float) -> int | None:
    """The first round whose validation accuracy fell below ``floor`` times round 0's (the dense
    model's) on the run's own partition, or None: tickets from that round on carry a flag."""
    return first_failed_round(read_json(Path(run_dir) / "imp_summary.json")["rounds"], floor)


def first_failed_round(rounds: Sequence[dict], floor: float) -> int | None:
    """The first round at which some model of an IMP run (a run trains one per partition in
    COLT) fell below ``floor`` times its own round-0 validation accuracy, or None."""
    by_part: dict = {}
    for r in sorted(rounds, key=lambda r: r["round"]):
        by_part.setdefault(r.get("part"), []).append(r)
    failed = [next((r["round"] for r in rs if r["val_top1"] < floor * rs[0]["val_top1"]), None)
              for rs in by_part.values()]
    return min((f for f in failed if f is not None), default=None)


def write_tickets(run_dirs: Sequence[str | os.PathLike], targets: Sequence[float],
                  out_dir: str | os.PathLike, *, seed: int, meta: dict, random_controls: bool = True,
                  failed_floor: float = 0.8) -> dict:
    """Write every ticket (and its random control) to ``out_dir`` and the manifest
    ``masks.json`` in the mask-run layout; return the manifest."""
    out = Path(out_dir)
    per_part = [all_masks(d) for d in run_dirs]
    table = ticket_table(per_part)
    part_masks = per_part[0][:len(table)]
    part_sparsity = [m.sparsity for m in part_masks]
    failed = [failed_round(d, failed_floor) for d in run_dirs]
    # the epochs before each round's masks, in full-data passes (each run's share of the
    # data), summed over the runs
    run_epochs = [_epochs_by_round(read_json(Path(d) / MANIFEST), len(table)) for d in run_dirs]
    names = list(table[0])
    entries, written = [], {}
    for t in sorted(targets):
        for mode in MODES:
            for name in names:
                r = select(table, part_masks, t, name, mode)
                flags = ["failed_source"] if any(f is not None and f <= r for f in failed) else []
                for control in ("ticket", "random") if random_controls else ("ticket",):
                    key = f"{name}_r{r}" + ("_random" if control == "random" else "")
                    if key not in written:
                        mask = table[r][name]
                        if control == "random":
                            g = torch.Generator().manual_seed(control_seed(seed, r, names.index(name)))
                            mask = random_like(mask, g)
                        mask.save(out / f"{key}.safetensors", ticket=name, round=r, control=control, **meta)
                        written[key] = mask
                    mask = written[key]
                    entries.append({"key": f"{name}_{mode}_s{t:g}" + ("_random" if control == "random" else ""),
                                    "file": f"{key}.safetensors",
                                    "ticket": name, "mode": mode, "control": control,
                                    "target_sparsity": t, "round": r,
                                    "actual_sparsity": mask.sparsity, "trainings": len(run_dirs) * r,
                                    "epochs": round(sum(e[r] for e in run_epochs), 9),
                                    "empty_layers": mask.empty_layers(), "flags": flags})
    manifest = {**meta, "n_partitions": len(run_dirs), "partition_sparsity_by_round": part_sparsity,
                "failed_from_round": failed, "masks": entries}
    write_json(out / MANIFEST, manifest)
    return manifest


def _epochs_by_round(manifest: dict, rounds: int) -> list[float]:
    """The training epochs of a partition run before each of its first ``rounds`` masks (in
    passes over the full training set), from its manifest. A manifest without
    ``epochs_by_round`` (written before it was kept) trained every round alike."""
    if "epochs_by_round" in manifest:
        return manifest["epochs_by_round"]
    per_round = next((e["epochs"] / e["round"] for e in manifest["masks"] if e["round"] > 0), 0.0)
    return [r * per_round for r in range(rounds)]

"""Choose the smoke suite's dense recipes on validation accuracy only (never the test split).

Trains the dense model of each smoke model on digits for every recipe of a small grid and each
seed, and prints the mean validation top-1 and the seconds per training of each recipe. The rule,
fixed before the search: among the recipes within ``--within`` (0.5 points) of the grid's best mean
validation accuracy, take the one that trains fastest; it goes into workflow_config.yaml with a
comment. The test split is not evaluated here at all.

    python bench/recipe_search.py [--models mlp cnn vit_tiny] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from dilt.data import load_dataset
from dilt.models import build_model
from dilt.train import Recipe, Split, train

EPOCHS, BATCHES = [8, 12, 20], [32, 64, 128]
GRID = {
    "mlp": [dict(epochs=e, batch_size=b, lr=lr, weight_decay=1e-4)
            for e, b, lr in itertools.product(EPOCHS, BATCHES, [0.05, 0.1, 0.2])],
    "cnn": [dict(epochs=e, batch_size=b, lr=lr, weight_decay=5e-4)
            for e, b, lr in itertools.product(EPOCHS, BATCHES, [0.05, 0.1, 0.2])],
    "vit_tiny": [dict(epochs=e, batch_size=b, optimizer="adamw", lr=lr, weight_decay=0.05)
                 for e, b, lr in itertools.product(EPOCHS, BATCHES, [1e-3, 2e-3, 4e-3])],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(GRID))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--within", type=float, default=0.005, help="accuracy margin of the rule")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for model in args.models:
        rows = []
        for rec in GRID[model]:
            accs, t0 = [], time.perf_counter()
            for seed in args.seeds:
                data = load_dataset("digits", seed=seed)
                torch.manual_seed(seed)
                net = build_model(model, data.num_classes, data.input_shape)
                res = train(net, Split(data.train), Split(data.val), Recipe.from_dict(rec), seed=seed)
                accs.append(res.best_val_top1)
            rows.append((float(np.mean(accs)), rec, time.perf_counter() - t0))
            print(f"{model} val {np.mean(accs):.4f} +- {np.std(accs):.4f}  {rec}  "
                  f"({rows[-1][2] / len(args.seeds):.1f} s per training)", flush=True)
        best = max(rows, key=lambda r: r[0])
        chosen = min((r for r in rows if r[0] >= best[0] - args.within), key=lambda r: r[2])
        print(f"BEST {model}: val {best[0]:.4f} {best[1]}", flush=True)
        print(f"CHOSEN {model} (fastest within {args.within:.3f}): val {chosen[0]:.4f} {chosen[1]} "
              f"({chosen[2] / len(args.seeds):.1f} s per training)", flush=True)


if __name__ == "__main__":
    main()

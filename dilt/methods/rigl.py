"""RigL as a method: per target, train sparse from theta_0 with drop / grow updates
(:class:`dilt.prune.rigl.RigL`) and keep the trained network's accuracy and its mask: those of
the epoch validation selected (the final mask of the original whenever that epoch comes after
the last update, at ``end_fraction`` of training).

The mask covers the suite's prunable weights (first layer and head dense by default, as the
first layer is in the original); the overall sparsity over them is the target.
"""

from __future__ import annotations

from dilt.methods import Method, register_method
from dilt.methods.job import mask_key
from dilt.methods.random_masks import mask_seed
from dilt.prune.rigl import RigL

NAME = "rigl"  # the config and path name (registered below)


def checked_options(options: dict) -> dict:
    """RigL's options, each checked (one-line error naming the key)."""
    def bad(key, want):
        return ValueError(f"method_options.{NAME}.{key}: must be {want}, got {options.get(key)!r}")

    def number(key):
        v = options.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad(key, "a number")
        return float(v)

    dt = options.get("delta_t")
    if isinstance(dt, bool) or not isinstance(dt, int) or dt < 1:
        raise bad("delta_t", "an integer >= 1")
    drop, end = number("drop_fraction"), number("end_fraction")
    if not 0 < drop < 1:
        raise bad("drop_fraction", "in (0, 1)")
    if not 0 < end <= 1:
        raise bad("end_fraction", "in (0, 1]")
    if not isinstance(options.get("erk"), bool):
        raise bad("erk", "true or false")
    return {"delta_t": dt, "drop_fraction": drop, "end_fraction": end, "erk": options["erk"]}


def find(job) -> None:
    """One RigL run per target; the selected epoch's mask and its own test accuracy."""
    opts = checked_options(job.options)
    epochs = job.recipe.epochs
    for t in job.targets:
        key = mask_key(t)
        model = job.theta0_model()
        s = RigL(job.prunable, 1.0 - t, seed=mask_seed(job.seed, t), **opts)
        res = job.train(model, name=key, sparsifier=s)
        job.write_mask(s.mask, t, epochs=epochs, extra={"mask_updates": s.updates})
        job.write_record(key, job.evaluate(model), target=t, actual_sparsity=s.mask.sparsity,
                         epochs=epochs, extra={"best_epoch": res.best_epoch,
                                               "val_top1": res.best_val_top1,
                                               "mask_updates": s.updates})
    job.finish(options=opts)


RIGL = register_method(Method(
    name=NAME, kind="dynamic", display="RigL", find=find, needs=("theta0",),
    options={"delta_t": 100, "drop_fraction": 0.3, "end_fraction": 0.75, "erk": True},
    check=checked_options,
    cite="Evci, Gale, Menick, Castro, Elsen. Rigging the Lottery: Making All Tickets Winners. "
         "ICML 2020"))

"""CPU time of ``dilt.analysis.run_analysis`` on smoke-sized inputs, its profile, and its output.

Inputs mirror one smoke ``analyze`` job: two partition models of one smoke model (random weights,
the second one a perturbed copy of the first by default, like two tickets trained from one
theta_0; ``--independent`` draws them from different seeds), random masks at the analysis
sparsity (0.9), and a class-stratified probe of ``--probe`` digits test images; the smoke
analysis settings (2000 permutations, the default solver and ``n_jobs``).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/profile_analysis.py --models mlp cnn vit_tiny
    ... --profile              # cProfile of one run per model, grouped by part
    ... --dump /tmp/before     # write <dir>/<model>.json: the full result without "seconds"
    ... --compare /tmp/before  # exit 1 unless the result equals that dump exactly
    ... --fresh                # each run in a new process (pays the worker start-up, like a job)

CPU seconds count this process and the joblib worker processes it starts (psutil).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dilt.analysis import run_analysis  # noqa: E402
from dilt.analysis.features import probe_indices  # noqa: E402
from dilt.data import load_dataset  # noqa: E402
from dilt.data.loader import batches  # noqa: E402
from dilt.masks import Mask  # noqa: E402
from dilt.models import build_model, prunable_names, weight_layers  # noqa: E402

SMOKE_ANALYSIS = {"sparsity": 0.9, "probe_size": 256, "probe_split": "test", "permutations": 2000}
PRUNE_FIRST = {"mlp": True}


def inputs(model: str, probe: int, independent: bool = False, seed: int = 0):
    bundle = load_dataset("digits", seed=seed)
    ds, targets = bundle.split("test")
    idx = probe_indices(targets, probe, seed=0)
    x = torch.cat([b for b, _ in batches(ds, idx, 512)])
    models = []
    for s in (0, 1):
        torch.manual_seed(100 * seed + (s if independent else 0))
        net = build_model(model, bundle.num_classes, bundle.input_shape)
        if s and not independent:  # a second ticket from the same theta_0
            g = torch.Generator().manual_seed(1000 + seed)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.3 * p.std().nan_to_num() * torch.randn(p.shape, generator=g))
        models.append(net)
    masks = []
    for s, net in enumerate(models):
        g = torch.Generator().manual_seed(200 + s)
        params = dict(net.named_parameters())
        masks.append(Mask({n: torch.rand(params[n].shape, generator=g) < 0.1
                           for n in prunable_names(net, prune_first=PRUNE_FIRST.get(model, False))}))
    return models, masks, x, weight_layers(models[0])


def cpu_seconds(proc: psutil.Process) -> dict[int, float]:
    """User + system CPU seconds of this process and of each live child, by pid."""
    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def timed(args, cfg):
    proc = psutil.Process()
    before = cpu_seconds(proc)
    wall = time.perf_counter()
    out = run_analysis(*args, cfg)
    wall = time.perf_counter() - wall
    after = cpu_seconds(proc)
    cpu = sum(after[p] - before.get(p, 0.0) for p in after)
    return out, cpu, wall


def profile(args, cfg, top: int):
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    run_analysis(*args, cfg)
    pr.disable()
    st = pstats.Stats(pr)
    total = st.total_tt
    parts = {  # cumulative time of the outermost call of each part
        "features (forward passes)": "extract_features",
        "distance matrices": "distance_matrix",
        "GW joint matrix": "joint_matrix",
        "  - network simplex (ot.emd)": "emd",
        "  - init_matrix": "init_matrix",
        "clustering": "cluster_joint",
        "linear CKA": "linear_cka",
        "layer/block tables": "layer_table",
        "spearman_perm (3 tests)": "spearman_perm",
        "partial_spearman_perm": "partial_spearman_perm",
        "to_json": "to_json",
    }
    print(f"  profiled total {total:.2f} s (cProfile overhead included)")
    for label, fn in parts.items():
        cum = sum(v[3] for k, v in st.stats.items() if k[2] == fn)
        ncalls = sum(v[1] for k, v in st.stats.items() if k[2] == fn)
        print(f"  {label:32s} {cum:8.3f} s  {100 * cum / total:5.1f}%  ({ncalls} calls)")
    st.sort_stats("tottime").print_stats(top)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn", "vit_tiny"])
    ap.add_argument("--probe", type=int, nargs="+", default=[256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-jobs", type=int, default=None, help="override n_jobs (default: smoke's)")
    ap.add_argument("--independent", action="store_true", help="independently drawn models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--dump", type=Path)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--fresh", action="store_true",
                    help="time every run in a new process (joblib workers started anew each time)")
    ap.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = {**SMOKE_ANALYSIS, "seed": a.seed}
    if a.n_jobs is not None:
        cfg["n_jobs"] = a.n_jobs
    bad = 0
    for model in a.models:
        for n in a.probe:
            args = inputs(model, n, a.independent, a.seed)
            L = len(args[3])
            tag = f"{model}_p{n}" + ("_ind" if a.independent else "") + f"_s{a.seed}"
            if a.profile:
                print(f"== {tag}: {L} layers, {2 * L * (2 * L - 1) // 2} pairs")
                profile(args, cfg, a.top)
                continue
            cpus, walls, out = [], [], None
            for _ in range(a.repeats):
                if a.fresh:  # a new process per run, as every analyze job is (worker start-up)
                    cmd = [sys.executable, __file__, "--models", model, "--probe", str(n),
                           "--repeats", "1", "--seed", str(a.seed), "--emit-json"]
                    cmd += ["--independent"] * a.independent
                    cmd += ["--n-jobs", str(a.n_jobs)] if a.n_jobs is not None else []
                    res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                    text=True).stdout.splitlines()[-1])
                    out, cpu, wall = res["out"], res["cpu"], res["wall"]
                else:
                    out, cpu, wall = timed(args, cfg)
                cpus.append(cpu)
                walls.append(wall)
            if a.emit_json:
                print(json.dumps({"out": out, "cpu": cpu, "wall": wall}))
                continue
            text = json.dumps({k: v for k, v in out.items() if k != "seconds"}, sort_keys=True)
            print(f"{tag:22s} L={L:2d} cpu median {statistics.median(cpus):7.2f} s "
                  f"{[round(c, 2) for c in cpus]}  wall median {statistics.median(walls):7.2f} s  "
                  f"start_counts {out['start_counts']}", flush=True)
            if a.dump:
                a.dump.mkdir(parents=True, exist_ok=True)
                (a.dump / f"{tag}.json").write_text(text)
            if a.compare:
                ref = (a.compare / f"{tag}.json").read_text()
                same = ref == text
                bad += not same
                print(f"  identical to {a.compare / tag}.json: {same}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

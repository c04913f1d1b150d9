"""DDP on the CPU: two gloo ranks under torchrun train like one process with the same global
batch (within a float tolerance), hold the same mask, and only rank 0 writes files."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dilt import platform
from dilt.data import load_dataset
from dilt.data.loader import Loader
from dilt.masks import Mask
from dilt.models import build_model, prunable_names
from dilt.prune.magnitude import magnitude_prune
from dilt.train import Recipe, Split, train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = dict(epochs=3, batch_size=64, lr=0.05, eval_batch_size=100)
TOL = 1e-5  # max |w_ddp - w_single| after 3 epochs (measured 6e-8: the all-reduce sums in another order)

WORKER = """
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
import dilt.train as T
from dilt import platform
from tests.test_ddp import setup
from dilt.prune.rigl import RigL
from dilt.models import prunable_names

out = {out!r}
writes = []
real = T.save_checked
T.save_checked = lambda path, obj: (writes.append(str(path)), real(path, obj))[1]
data, net, mask = setup()
res = T.train(net, T.Split(data.train), T.Split(data.val), T.Recipe(**{recipe!r}), mask=mask, seed=3,
              checkpoint=out + "/ckpt.pt", log_path=out + "/log.jsonl")
state = {{k: v.detach().clone() for k, v in net.state_dict().items()}}
rigl = RigL(prunable_names(net), 0.3, delta_t=4, seed=1)
T.train(net, T.Split(data.train), T.Split(data.val), T.Recipe(**{recipe!r}), sparsifier=rigl, seed=4)
info = {{"rank": platform.rank(), "world": platform.world_size(), "writes": writes,
        "mask": mask.content_hash(), "rigl_mask": rigl.mask.content_hash(), "rigl_updates": rigl.updates,
        "best_epoch": res.best_epoch, "val": res.best_val_top1,
        "history": [h["val_top1"] for h in res.history]}}
got = platform.gather_object(info)
if platform.is_main():
    torch.save(state, out + "/state.pt")
    with open(out + "/ranks.json", "w") as f:
        json.dump(got, f)
platform.shutdown()
platform.exit_process(0)
"""


def setup():
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", 10, data.input_shape)  # no BatchNorm: per-rank statistics would differ
    return data, net, magnitude_prune(net, Mask.ones(net, prunable_names(net)), 0.6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, worker: str, **fields) -> subprocess.CompletedProcess:
    """Run ``worker`` (formatted with the repository root, ``tmp_path`` as ``out`` and
    ``fields``) as 2 gloo ranks under torchrun, on one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = tmp_path / "worker.py"
    script.write_text(worker.format(root=str(ROOT), out=str(tmp_path), **fields))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_loader_shards_are_the_single_process_batches():
    ds = load_dataset("digits", seed=0).train
    idx = np.arange(5, 200)
    single = list(Loader(ds, idx, 32).epoch(11))
    shards = [list(Loader(ds, idx, 32, rank=r, world_size=3, min_last=3).epoch(11)) for r in range(3)]
    assert all(len(s) == len(single) for s in shards)
    for k, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([s[k][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[k][1] for s in shards]), y)
    assert platform.shard_batch(np.arange(7), 1, 3).tolist() == [3, 4]
    assert platform.world_size() == 1 and platform.is_main()  # no process group: one process


def test_a_finished_rank_exits_with_its_code_and_its_output_flushed():
    """A former DDP rank ends by os._exit (no C++ teardown in gloo's threads), yet keeps its exit
    status and what it printed to a pipe (block-buffered: os._exit alone would drop it)."""
    code = ("from dilt import platform; platform._WAS_DISTRIBUTED = True; print('results written');"
            "platform.exit_process(3)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (3, "results written\n")
    with pytest.raises(SystemExit) as e:  # one process: a plain exit
        platform.exit_process(4)
    assert e.value.code == 4


def test_gloo_ddp_matches_single_process(tmp_path):
    run = _torchrun(tmp_path, WORKER, recipe=RECIPE)
    assert run.returncode == 0, run.stderr[-20000:]
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    # rank 0 alone wrote: one checkpoint per epoch, one log line per epoch
    assert ranks[0]["writes"] == [str(tmp_path / "ckpt.pt")] * RECIPE["epochs"] and ranks[1]["writes"] == []
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == RECIPE["epochs"]
    # every rank holds the same mask, the fixed one and RigL's after its drop / grow updates
    assert ranks[0]["mask"] == ranks[1]["mask"]
    assert ranks[0]["rigl_mask"] == ranks[1]["rigl_mask"] and ranks[0]["rigl_updates"] > 0
    assert ranks[0]["history"] == ranks[1]["history"]  # the all-reduced evaluation
    # single process, same global batch, same seed
    data, net, mask = setup()
    res = train(net, Split(data.train), Split(data.val), Recipe(**RECIPE), mask=mask, seed=3)
    ddp = torch.load(tmp_path / "state.pt")
    diff = max(float((ddp[k] - v).abs().max()) for k, v in net.state_dict().items())
    assert diff < TOL, diff
    assert res.best_epoch == ranks[0]["best_epoch"]
    assert res.history[-1]["val_top1"] == pytest.approx(ranks[0]["history"][-1], abs=2 / 360)


JOB_WORKER = """
import hashlib, json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from dilt import platform, provenance
from dilt.data import load_dataset
from dilt.models import build_model, prunable_names
from dilt.prune.imp import Part, run_imp
from dilt.train import Recipe, Split, train

platform.init_from_env("cpu")
out = {out!r}
provenance.claim_dir(out + "/run", {{"x": 1}})
data = load_dataset("digits", seed=0)
recipe = Recipe(epochs=1, batch_size=64, lr=0.05, device="cpu")
def make():
    torch.manual_seed(0)
    return build_model("mlp", 10, data.input_shape)
parts = [Part(make, Split(data.train), Split(data.val), Split(data.test))] * 2
summary = run_imp(parts, prunable_names(make()), [0.5, 0.75], 0.5, recipe, out + "/run", seed=0,
                  meta={{"provenance": "p"}})
torch.manual_seed(0)
cnn = build_model("cnn", 10, data.input_shape)
train(cnn, Split(data.train), Split(data.val), recipe, seed=0)
bufs = hashlib.sha256(b"".join(b.numpy().tobytes() for b in cnn.buffers())).hexdigest()
torch.manual_seed(0)
cnn = build_model("cnn", 10, data.input_shape)
ema = Recipe(epochs=1, batch_size=64, lr=0.05, device="cpu", ema_decay=0.9, ema_select=True)
train(cnn, Split(data.train), Split(data.val), ema, seed=0)
ema_bufs = hashlib.sha256(b"".join(b.numpy().tobytes() for b in cnn.buffers())).hexdigest()
got = platform.gather_object({{"rank": platform.rank(), "rounds": summary["final_round"], "bufs": bufs,
                               "ema_bufs": ema_bufs}})
if platform.is_main():
    with open(out + "/ranks.json", "w") as f:
        json.dump(got, f)
platform.shutdown()
platform.exit_process(0)
"""


def test_ranks_read_what_rank_0_wrote_and_share_its_batchnorm_statistics(tmp_path):
    """A job under torchrun: every rank waits for rank 0's files before reading them (the IMP
    rounds' records, a stale run directory emptied once), and evaluates rank 0's BatchNorm
    statistics (each rank updates its own from its share of the batches), those of the EMA copy
    too."""
    stale = tmp_path / "run"
    stale.mkdir()
    (stale / "settings.json").write_text(json.dumps({"provenance": "old", "settings": {}}))
    for i in range(300):
        (stale / f"old_{i}.bin").write_bytes(b"x")
    run = _torchrun(tmp_path, JOB_WORKER)
    assert run.returncode == 0, run.stderr[-20000:]
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert [r["rounds"] for r in ranks] == [2, 2]
    assert ranks[0]["bufs"] == ranks[1]["bufs"]
    assert ranks[0]["ema_bufs"] == ranks[1]["ema_bufs"]  # the EMA copy's, selected and returned
    assert not list(stale.glob("old_*")) and json.loads((stale / "settings.json").read_text())["settings"] == {"x": 1}
    assert sorted(p.name for p in stale.glob("round_r*.json")) == [f"round_r{r}_p{k}.json" for r in range(3)
                                                                   for k in (1, 2)]


@pytest.mark.parametrize("device, backend", [("auto", "nccl"), ("cuda", "nccl"), ("cpu", "gloo")])
def test_the_jobs_recipe_device_chooses_the_process_groups_backend(monkeypatch, device, backend):
    """On a GPU node under torchrun, a job whose recipe trains on the CPU joins over gloo (NCCL
    cannot carry CPU tensors), and a CUDA one over NCCL on its LOCAL_RANK's GPU; a fixed GPU
    index under DDP is refused, naming the key."""
    from dilt import cli

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("gpu", i))
    monkeypatch.setattr(platform.dist, "init_process_group", lambda b, **k: calls.setdefault("backend", b))
    monkeypatch.setattr(platform, "is_distributed", lambda: False)
    suite = type("S", (), {"recipe": lambda self, m, d: Recipe(device=device if d == "digits" else "auto")})()
    args = type("A", (), {"model": "mlp", "dataset": "digits"})()
    assert platform.init_from_env(cli._job_device(args, suite))
    assert calls["backend"] == backend and calls.get("gpu") == (1 if backend == "nccl" else None)
    monkeypatch.setattr(platform, "is_distributed", lambda: True)
    with pytest.raises(ValueError, match=r"^recipe\.device: 'cuda:0' under DDP"):
        platform.device_for("cuda:0")


NAN_WORKER = """
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
import dilt.train as T
from dilt import platform
from tests.test_ddp import setup

platform.init_from_env("cpu")
real, calls = torch.nn.CrossEntropyLoss.forward, []
def nan_on_rank1(self, out, y):  # rank 1's loss goes NaN at its 5th step
    calls.append(1)
    loss = real(self, out, y)
    return loss * float("nan") if platform.rank() == 1 and len(calls) == 5 else loss
torch.nn.CrossEntropyLoss.forward = nan_on_rank1
data, net, mask = setup()
try:
    T.train(net, T.Split(data.train), T.Split(data.val), T.Recipe(**{recipe!r}), mask=mask, seed=3)
    msg = None
except T.DivergenceError as e:
    msg = str(e)
with open({out!r} + f"/rank{{platform.rank()}}.json", "w") as f:
    json.dump({{"msg": msg, "steps": len(calls)}}, f)
platform.shutdown()
platform.exit_process(0)
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    """Not only the rank whose loss is NaN: the others stop at the same step with the same
    error (before, they waited in the gradients' all-reduce until a time-out)."""
    run = _torchrun(tmp_path, NAN_WORKER, recipe=RECIPE)
    assert run.returncode == 0, run.stderr[-20000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [g["steps"] for g in got] == [5, 5]
    assert "loss is nan at epoch 0, step 4" in got[1]["msg"]
    assert "another rank's loss is not finite at epoch 0, step 4" in got[0]["msg"]

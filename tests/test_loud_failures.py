"""Loud failures: divergence, damaged or foreign files and stale settings are refused in one
line naming the file (or run, epoch and step), and nothing of a failed job is marked done."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_config

from dilt import config, jobs
from dilt.io import FileCheckError, load_checked, save_checked
from dilt.masks import Mask, MaskError
from dilt.models import build_model, prunable_names
from dilt.prune.magnitude import magnitude_prune
from dilt.train import DivergenceError


def _suite(tmp_path, name="c.yaml", **over):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(**over)))
    return config.load(path), path


@pytest.fixture
def setup(tmp_path):
    suite, path = _suite(tmp_path)
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    return suite, path, theta0


def test_divergence_stops_the_job_naming_run_epoch_and_step(tmp_path):
    suite, path = _suite(tmp_path, recipes={"default": {"epochs": 2, "batch_size": 128, "lr": 90.0}})
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    out = tmp_path / "lth"
    with pytest.raises(DivergenceError, match=r"lth mlp/digits s0 .* r\d+: loss is .*epoch \d+, step \d+") as e:
        jobs.find(suite, "lth", "mlp", "digits", 0, "full", None, str(theta0), str(out))
    import re

    r = int(re.search(r" r(\d+): loss", str(e.value)).group(1))
    assert not (out / f"round_r{r}.json").exists() and not (out / f"weights_r{r}.safetensors").exists()
    assert not (out / "masks.json").exists() and not (out / "imp_summary.json").exists()
    # through the CLI: one line, no traceback, non-zero exit
    proc = subprocess.run([sys.executable, "-m", "dilt", "find", "--config", str(path), "--method", "lth",
                           "--model", "mlp", "--dataset", "digits", "--seed", "0", "--theta0", str(theta0),
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss is" in lines[0] and "Traceback" not in proc.stderr


def test_magnitude_pruning_refuses_nan_weights():
    torch.manual_seed(0)
    net = build_model("mlp", 10, (1, 8, 8))
    mask = Mask.ones(net, prunable_names(net, prune_first=True))
    with torch.no_grad():
        net.hidden[0].weight[0, :5] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        magnitude_prune(net, mask, 0.5)


def test_damaged_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checked(path, {"w": torch.arange(1000.0)})
    assert torch.equal(load_checked(path)["w"], torch.arange(1000.0))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(FileCheckError, match="checksum mismatch"):
        load_checked(path)
    path.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(FileCheckError):
        load_checked(path)


def test_mask_with_swapped_positions_or_truncated_is_refused(tmp_path):
    torch.manual_seed(0)
    net = build_model("mlp", 10, (1, 8, 8))
    mask = magnitude_prune(net, Mask.ones(net, prunable_names(net, prune_first=True)), 0.8)
    path = tmp_path / "m.safetensors"
    mask.save(path, seed=0)
    # swap 200 kept and pruned positions (same count) in the stored tensor bytes
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    t = load_file(str(path))
    name = "hidden.0.weight"
    flat = t[name].flatten().clone()
    on, off = flat.nonzero().flatten()[:200], (~flat).nonzero().flatten()[:200]
    flat[on], flat[off] = False, True
    t[name] = flat.view_as(t[name])
    save_file(t, str(path), metadata=meta)
    assert Mask({n: v for n, v in t.items()}).kept == mask.kept  # the count alone cannot tell
    with pytest.raises(MaskError, match="does not match its checksum"):
        Mask.load(path)
    mask.save(path, seed=0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MaskError, match="unreadable"):
        Mask.load(path)


def test_foreign_runs_are_refused_by_tickets(setup, tmp_path):
    suite, _, theta0 = setup
    c2 = tmp_path / "c2"
    jobs.find(suite, "dilt", "mlp", "digits", 0, "contiguous2", 1, str(theta0), str(c2 / "p1"))
    jobs.find(suite, "lth", "mlp", "digits", 0, "full", None, str(theta0), str(tmp_path / "lth"))
    with pytest.raises(FileCheckError, match=r"method is 'lth', expected 'dilt'"):
        jobs.tickets(suite, "mlp", "digits", 0, "contiguous2", [str(c2 / "p1"), str(tmp_path / "lth")],
                     str(c2 / "tickets"))
    # a partition run of another seed (its theta_0 and settings differ)
    theta1 = tmp_path / "theta1.safetensors"
    jobs.init(suite, "mlp", "digits", 1, str(theta1))
    jobs.find(suite, "dilt", "mlp", "digits", 1, "contiguous2", 2, str(theta1), str(c2 / "p2_seed1"))
    with pytest.raises(FileCheckError, match="seed is 1, expected 0"):
        jobs.tickets(suite, "mlp", "digits", 0, "contiguous2", [str(c2 / "p1"), str(c2 / "p2_seed1")],
                     str(c2 / "tickets"))
    # theta_0 of another seed handed to a job of seed 0
    with pytest.raises(FileCheckError, match="seed is 1, expected 0"):
        jobs.find(suite, "lth", "mlp", "digits", 0, "full", None, str(theta1), str(tmp_path / "x"))


def test_changed_settings_recompute_and_say_what_changed(setup, tmp_path, capsys):
    suite, _, theta0 = setup
    out = tmp_path / "lth"
    jobs.find(suite, "lth", "mlp", "digits", 0, "full", None, str(theta0), str(out))
    import json

    assert json.loads((out / "round_r1.json").read_text())["epochs"] == 2
    edited, _ = _suite(tmp_path, "edited.yaml", recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})
    capsys.readouterr()
    jobs.find(edited, "lth", "mlp", "digits", 0, "full", None, str(theta0), str(out))
    err = capsys.readouterr().err
    assert "settings changed" in err and "recipe.epochs: 2 -> 3" in err
    assert json.loads((out / "round_r1.json").read_text())["epochs"] == 3
    # a damaged weights file of a finished round is refused, never used
    raw = bytearray((out / "weights_r1.safetensors").read_bytes())
    raw[-8] ^= 0xFF
    (out / "weights_r1.safetensors").write_bytes(bytes(raw))
    with pytest.raises(FileCheckError, match="weights_r1.safetensors"):
        jobs.find(edited, "lth", "mlp", "digits", 0, "full", None, str(theta0), str(out))


def test_a_model_option_edit_makes_theta0_and_the_dense_model_stale(tmp_path):
    """theta_0 and the dense model are built with the model's options (a ViT's depth, drop
    path): after an edit, the old files are refused, never loaded into the new model; options
    that only choose the prunable weights, and an option-free model, keep their hash."""
    from dilt import provenance as prov
    from dilt.methods.job import MaskJob

    models = {"vit_tiny": {}}
    plain, _ = _suite(tmp_path, "plain.yaml", models=models, methods=["lth", "cap"])
    deeper, _ = _suite(tmp_path, "deeper.yaml", models={"vit_tiny": {"depth": 2}}, methods=["lth", "cap"])
    pruned, _ = _suite(tmp_path, "pruned.yaml", models={"vit_tiny": {"prune_first": True}})
    init = lambda s: prov.digest(prov.init_settings(s, "vit_tiny", "digits", 0))  # noqa: E731
    assert "model_options" not in prov.init_settings(plain, "vit_tiny", "digits", 0)
    assert init(plain) == init(pruned) != init(deeper)
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(plain, "vit_tiny", "digits", 0, str(theta0))
    with pytest.raises(FileCheckError, match="theta_0 was made with other settings"):
        jobs.dense(deeper, "vit_tiny", "digits", 0, str(theta0), str(tmp_path / "d/records.json"))
    # the dense weights a post-training method starts from: those of this suite's dense job
    jobs.dense(plain, "vit_tiny", "digits", 0, str(theta0), str(tmp_path / "d/records.json"))
    dense = next((tmp_path / "d").glob("*.safetensors"))
    job = MaskJob(suite=plain, method="cap", model="vit_tiny", dataset="digits", seed=0,
                  out_dir=tmp_path / "cap", theta0=theta0, dense=dense)
    job.dense_model()
    retimed, _ = _suite(tmp_path, "retimed.yaml", models=models, methods=["lth", "cap"],
                        recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})
    job = MaskJob(suite=retimed, method="cap", model="vit_tiny", dataset="digits", seed=0,
                  out_dir=tmp_path / "cap", theta0=theta0, dense=dense)
    with pytest.raises(FileCheckError, match="provenance"):
        job.dense_model()


def test_a_rank_other_than_0_writes_nothing_beside_the_target(tmp_path, monkeypatch):
    """Under DDP rank 0 alone writes a file; another rank's copy goes to the node's temporary
    directory (off the shared file system) and is dropped, leaving neither file nor debris."""
    from dilt.io import atomic_path

    target = tmp_path / "run" / "weights.bin"
    monkeypatch.setenv("RANK", "1")
    with atomic_path(target) as tmp:
        assert tmp.parent != target.parent
        tmp.write_bytes(b"rank 1")
    assert not target.exists() and not tmp.exists() and list(target.parent.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        tmp.write_bytes(b"rank 0")
    assert target.read_bytes() == b"rank 0" and list(target.parent.iterdir()) == [target]

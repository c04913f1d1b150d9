"""IMP: the schedule, exact target sparsities, COLT's shared masks vs DiLT's independent ones."""

import pytest
import torch
import yaml
from conftest import tiny_config

from dilt import jobs
from dilt.io import FileCheckError, read_json
from dilt.masks import Mask
from dilt.models import build_model, prunable_names
from dilt.prune.imp import all_masks
from dilt.prune.magnitude import consensus_prune, keep_count, magnitude_prune, schedule


def test_schedule_hits_every_target_exactly():
    s = schedule([0.9, 0.95, 0.98], 0.5)
    assert s == [0.5, 0.75, 0.875, 0.9, 0.95, 0.975, 0.98]
    s = schedule([0.5, 0.7, 0.9], 0.2)
    for t in (0.5, 0.7, 0.9):
        assert t in s
    assert all(b > a for a, b in zip(s, s[1:]))
    with pytest.raises(ValueError, match="rate"):
        schedule([0.9], 1.5)


def _net(seed=0):
    torch.manual_seed(seed)
    return build_model("cnn", 10, (1, 8, 8))


@pytest.mark.parametrize("target", [0.5, 0.9, 0.98, 0.9731])
def test_magnitude_prune_exact_count_and_nested(target):
    net = _net()
    names = prunable_names(net)
    dense = Mask.ones(net, names)
    m = magnitude_prune(net, dense, target)
    assert m.kept == keep_count(m.numel, target)
    assert abs(m.sparsity - target) <= 1 / m.numel
    # the kept weights are the largest in magnitude, globally
    params = dict(net.named_parameters())
    kept = torch.cat([params[n].detach().abs()[m[n]] for n in names])
    pruned = torch.cat([params[n].detach().abs()[~m[n]] for n in names])
    assert kept.min() >= pruned.max()
    m2 = magnitude_prune(net, m, min(0.99, target + 0.01))
    assert m2 <= m


def test_consensus_prune_is_an_intersection_cut_at_the_target():
    a, b = _net(1), _net(2)
    names = prunable_names(a)
    dense = Mask.ones(a, names)
    free = consensus_prune([a, b], dense, 0.5, next_target=0.99)
    ma, mb = magnitude_prune(a, dense, 0.5), magnitude_prune(b, dense, 0.5)
    assert free == (ma & mb)                         # no target crossed: the plain intersection
    cut = consensus_prune([a, b], dense, 0.5, next_target=0.6)
    assert cut.kept == keep_count(cut.numel, 0.6)     # crossing: exactly on the target
    assert (ma & mb) <= cut


def test_a_step_that_reaches_the_target_before_rounding_stops_on_it():
    """0.95 -> 0.98 at rate 0.6 is exact in real numbers; on 170 weights the 0.95 mask keeps 9
    (8.5 rounded), 40% of 9 rounds to 4, one above the target's 3. The round must still stop
    on the target, not leave a one-weight sliver for an extra round (as schedule() plans)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(17, 10, bias=False)
    m95 = magnitude_prune(net, Mask.ones(net, ["weight"]), 0.95)
    assert (m95.kept, keep_count(m95.kept, 0.6), keep_count(170, 0.98)) == (9, 4, 3)
    m98 = consensus_prune([net], m95, 0.6, next_target=0.98)
    assert m98.kept == keep_count(170, 0.98) and m98 == magnitude_prune(net, m95, 0.98)
    assert schedule([0.95, 0.98], 0.6)[-2:] == [0.95, 0.98]
    # a step well short of the next target is the plain rate
    m84 = consensus_prune([net], magnitude_prune(net, Mask.ones(net, ["weight"]), 0.6), 0.6, next_target=0.9)
    assert m84.kept == keep_count(keep_count(170, 0.6), 0.6)


def test_dilt_masks_differ_and_colt_masks_are_shared(tiny_suite, tmp_path):
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(tiny_suite, "mlp", "digits", 0, str(theta0))
    runs = []
    for k in (1, 2):
        d = tmp_path / f"dilt_p{k}"
        jobs.imp(tiny_suite, "mlp", "digits", 0, "dilt", "contiguous2", k, str(theta0), str(d))
        runs.append(all_masks(d))
    colt_dir = tmp_path / "colt"
    summary = jobs.imp(tiny_suite, "mlp", "digits", 0, "colt", "contiguous2", None, str(theta0), str(colt_dir))
    # every target sparsity is hit exactly, by DiLT's partition masks and by COLT's
    for masks in (*runs, all_masks(colt_dir)):
        for t in (0.5, 0.8):
            assert any(m.kept == keep_count(m.numel, t) for m in masks)
    # each independent run follows the documented schedule, round by round
    expected = [0.0] + schedule([0.5, 0.8], 0.5)
    for masks in runs:
        assert [round(m.sparsity, 4) for m in masks] == [round(s, 4) for s in expected]
    # DiLT: the two independent runs find different masks at the same sparsity
    for r in range(1, len(runs[0])):
        assert runs[0][r].sparsity == runs[1][r].sparsity
        assert runs[0][r] != runs[1][r]
    # COLT: one mask per round, trained by both partition models; both models really trained on
    # different data (their trained weights differ) under that same mask
    from dilt.models.state import load_state

    for r in range(summary["final_round"] + 1):
        mask = Mask.load(colt_dir / f"mask_r{r}.safetensors")
        w1 = load_state(colt_dir / f"weights_r{r}_p1.safetensors")[0]
        w2 = load_state(colt_dir / f"weights_r{r}_p2.safetensors")[0]
        for name in mask:
            assert torch.all(w1[name][~mask[name]] == 0) and torch.all(w2[name][~mask[name]] == 0)
        assert not torch.equal(w1["hidden.1.weight"], w2["hidden.1.weight"])
    # COLT's intersection reaches the top target in no more rounds than IMP
    assert summary["final_round"] <= len(runs[0]) - 1
    # epochs are passes over the full training set: a partition model's epoch is its share of
    # one, so DiLT's two runs together, and COLT's two models, cost one recipe a round as LTH does
    from dilt.methods.job import read_manifest

    epochs = tiny_suite.recipe("mlp", "digits").epochs
    bundle = jobs.load_data(tiny_suite, "digits", 0)
    parts = jobs.partitions(tiny_suite, bundle, "contiguous2", 0)
    n_train = len(bundle.train_targets)
    per_round = []
    for k in (1, 2):
        e = next(e for e in read_manifest(tmp_path / f"dilt_p{k}")["masks"] if e["round"] > 0)
        per_round.append(e["epochs"] / e["round"])
        assert per_round[-1] == pytest.approx(epochs * len(parts[k - 1].train_idx) / n_train)
    assert sum(per_round) == pytest.approx(epochs)
    assert all(e["epochs"] == pytest.approx(e["round"] * epochs) for e in read_manifest(colt_dir)["masks"])
    from dilt.tickets import write_tickets

    tickets = write_tickets([tmp_path / "dilt_p1", tmp_path / "dilt_p2"], [0.5, 0.8], tmp_path / "tickets",
                            seed=0, meta={})
    assert all(e["epochs"] == pytest.approx(e["round"] * epochs) for e in tickets["masks"])


def test_a_failed_round_is_found_per_model_of_the_run():
    """COLT trains one model per partition each round: each is held to its own dense accuracy
    (part 2's easier-looking drop to 0.55 is above 0.8 x its 0.6; its 0.4 at round 2 is not)."""
    from dilt.tickets import first_failed_round

    rounds = [{"round": r, "part": p, "val_top1": v} for r, p, v in
              [(0, 1, 0.99), (0, 2, 0.60), (1, 1, 0.98), (1, 2, 0.55), (2, 1, 0.97), (2, 2, 0.40)]]
    assert first_failed_round(rounds, 0.8) == 2
    assert first_failed_round(rounds, 0.5) is None
    assert first_failed_round([{"round": r, "part": None, "val_top1": v}
                               for r, v in enumerate([0.9, 0.8, 0.7])], 0.85) == 2


def test_lth_masks_from_a_failed_round_are_flagged(tiny_suite, tmp_path, monkeypatch):
    """An LTH / COLT mask from a round at or after the run's first failed round carries
    failed_source, as the DiLT tickets do, so no verdict counts it."""
    import dilt.tickets

    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(tiny_suite, "mlp", "digits", 0, str(theta0))
    monkeypatch.setattr(dilt.tickets, "first_failed_round", lambda rounds, floor: 2)
    manifest = jobs.imp(tiny_suite, "mlp", "digits", 0, "lth", "full", None, str(theta0),
                        str(tmp_path / "lth"))
    assert manifest["failed_from_round"] == 2
    flagged = {e["round"]: e["flags"] for e in manifest["masks"]}
    assert flagged and all(f == (["failed_source"] if r >= 2 else []) for r, f in flagged.items())
    assert any(r >= 2 for r in flagged) and any(r < 2 for r in flagged)
    entries = jobs.manifest_entries(tmp_path / "lth", manifest, 0, random_controls=True)
    assert all(("failed_source" in e.flags) == (e.round >= 2) for e in entries)


def test_late_rewinding_rounds_and_tickets_train_the_rest_of_the_schedule(tmp_path):
    """With rewind_epoch k, round 0 trains the whole recipe and every later round epochs k..T-1
    from the rewind point; masks and tickets are charged exactly that (in full-data passes), and
    the budget counts the same; a rewound ticket retrains the rest of the schedule too."""
    from dilt import config
    from dilt.budget import find_trainings
    from dilt.methods.job import read_manifest
    from dilt.prune.imp import epochs_before
    from dilt.tickets import write_tickets

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(prune={"rate": 0.5, "rewind_epoch": 1},
                                               recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})))
    suite = config.load(path)
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    lth = tmp_path / "lth"
    jobs.imp(suite, "mlp", "digits", 0, "lth", "full", None, str(theta0), str(lth))
    rounds = sorted(lth.glob("round_r*.json"))
    assert [read_json(p)["epochs"] for p in rounds] == [3] + [2] * (len(rounds) - 1)
    assert epochs_before(3, 1, 3) == 3 + 2 + 2
    assert all(e["epochs"] == (3 + 2 * (e["round"] - 1) if e["round"] else 0)
               for e in read_manifest(lth)["masks"])
    assert [(n, ep) for n, ep, _, _ in find_trainings(suite.spec, "lth", 3, [1.0])] == [(1, 3), (len(rounds) - 1, 2)]
    for k in (1, 2):
        jobs.imp(suite, "mlp", "digits", 0, "dilt", "contiguous2", k, str(theta0), str(tmp_path / "dilt" / f"p{k}"))
    tickets = write_tickets([tmp_path / "dilt" / "p1", tmp_path / "dilt" / "p2"], [0.5, 0.8],
                            tmp_path / "tickets", seed=0, meta={})
    assert all(e["epochs"] == pytest.approx(epochs_before(3, 1, e["round"])) for e in tickets["masks"])
    # retraining: every IMP mask (and its random control) from the rewind point, epochs 1..2
    starts = []
    real = jobs.train
    jobs.train = lambda *a, **k: starts.append(k["start_epoch"]) or real(*a, **k)
    try:
        jobs.retrain(suite, "mlp", "digits", 0, "full", str(lth), str(theta0), str(tmp_path / "r.json"))
    finally:
        jobs.train = real
    assert starts and set(starts) == {1}


def test_a_shared_dense_rewind_point_starts_every_imp_mask(tmp_path):
    """``prune.rewind_start: dense``: the dense job keeps its weights after rewind_epoch epochs,
    which are LTH's own rewind point (the dense run is LTH's round 0), and LTH's and COLT's masks
    are all retrained from that one point, head included, for the rest of the schedule."""
    from dilt import config
    from dilt.models.state import load_state

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(
        prune={"rate": 0.5, "rewind_epoch": 1, "rewind_start": "dense"}, sparsities=[0.5],
        transfer={"sparsity": 0.5, "targets": ["digits_rot"]},
        recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})))
    suite = config.load(path)
    run = tmp_path / "mlp" / "digits" / "seed0"
    theta0 = run / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    jobs.dense(suite, "mlp", "digits", 0, str(theta0), str(run / "full" / "dense" / "records.json"))
    point = load_state(run / "full" / "dense" / jobs.DENSE_REWIND)[0]
    lth, colt = run / "full" / "lth", run / "contiguous2" / "colt"
    jobs.imp(suite, "mlp", "digits", 0, "lth", "full", None, str(theta0), str(lth))
    jobs.imp(suite, "mlp", "digits", 0, "colt", "contiguous2", None, str(theta0), str(colt))
    own = load_state(lth / "rewind.safetensors")[0]
    assert point.keys() == own.keys() and all(torch.equal(point[k], own[k]) for k in point)

    starts = []
    real = jobs.train

    def spy(net, *a, **k):
        starts.append(({n: t.clone() for n, t in net.state_dict().items()}, k["start_epoch"]))
        return real(net, *a, **k)
    jobs.train = spy
    try:
        for tag, source in (("full", lth), ("contiguous2", colt)):
            jobs.retrain(suite, "mlp", "digits", 0, tag, str(source), str(theta0), str(tmp_path / f"{tag}.json"))
    finally:
        jobs.train = real
    assert len(starts) >= 4  # each run's mask and its random control
    for state, epoch in starts:
        assert epoch == 1
        assert all(torch.equal(state[n], point[n]) for n in point if not n.endswith("weight"))  # biases, head
        assert all(torch.equal(state[n], point[n]) for n in point if n.startswith("head"))
    stems = [p.name for p in (lth / "retrain" / "cache").glob("*.json")]
    assert stems and all("rewind-dense" in s for s in stems)
    # a point of another run (here LTH's own file: the same weights, other provenance) is refused
    (run / "full" / "dense" / jobs.DENSE_REWIND).write_bytes((lth / "rewind.safetensors").read_bytes())
    with pytest.raises(FileCheckError, match=r"dense/rewind.safetensors: provenance is"):
        jobs.retrain(suite, "mlp", "digits", 0, "full", str(lth), str(theta0), str(tmp_path / "again.json"))
    (run / "full" / "dense" / jobs.DENSE_REWIND).unlink()
    with pytest.raises(FileCheckError, match=r"dense/rewind.safetensors: late rewinding starts from"):
        jobs.retrain(suite, "mlp", "digits", 0, "full", str(lth), str(theta0), str(tmp_path / "again.json"))


def test_a_dense_run_resumed_without_its_rewind_point_starts_again_and_writes_it(tmp_path):
    """Killed past its rewind epoch, and its rewind point then lost: the rerun does not resume
    (it could never write the point) but trains again from the start, writing the same point."""
    from dilt import config
    from dilt.models.state import load_state

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(
        prune={"rate": 0.5, "rewind_epoch": 1}, recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})))
    suite = config.load(path)
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    ref, run = tmp_path / "ref" / "records.json", tmp_path / "run" / "records.json"
    jobs.dense(suite, "mlp", "digits", 0, str(theta0), str(ref))

    class Killed(RuntimeError):
        pass
    real = jobs.train

    def killed_after_two_epochs(*a, **k):
        hook = k["on_epoch_end"]

        def die(epoch, model):
            hook(epoch, model)
            if epoch == 2:  # epochs 0 and 1 are checkpointed, the rewind point (after 1) written
                raise Killed
        return real(*a, **{**k, "on_epoch_end": die})
    jobs.train = killed_after_two_epochs
    try:
        with pytest.raises(Killed):
            jobs.dense(suite, "mlp", "digits", 0, str(theta0), str(run))
    finally:
        jobs.train = real
    stem = jobs.entry_stem(jobs.dense_entry())
    assert (run.parent / f"{stem}.ckpt").exists()
    (run.parent / jobs.DENSE_REWIND).unlink()
    jobs.dense(suite, "mlp", "digits", 0, str(theta0), str(run))
    a = load_state(ref.parent / jobs.DENSE_REWIND)[0]
    b = load_state(run.parent / jobs.DENSE_REWIND)[0]
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert read_json(ref)["records"] == read_json(run)["records"]

"""The compute budget against counts made by hand on a tiny grid."""

import json

import pytest
import yaml
from conftest import tiny_config

from dilt import budget as B

# two seeds, N=2 contiguous partitions, targets 0.5 and 0.75 at rate 0.5: IMP prunes to 0.5, then
# 0.75 (two rounds after the dense one), so every IMP run trains 3 times
METHODS = ["lth", "dilt", "colt", "snip", "rigl", "cap"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from dilt import config

    raw = tiny_config(methods=METHODS, seeds=[0, 1], sparsities=[0.5, 0.75],
                      method_options={"cap": {"steps": 2, "prune_every": 1}},
                      transfer={"sparsity": 0.75, "targets": ["digits_rot"]})
    path = tmp_path_factory.mktemp("budget") / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return config.load(path)


# per seed, counted by hand from the workflow's rules:
HAND = {
    ("1 IMP/methods", "dense", "dense"): 1,
    ("1 IMP/methods", "find", "lth"): 3,               # rounds 0, 1, 2 on the full data
    ("1 IMP/methods", "find", "dilt"): 2 * 3,          # one IMP run per partition
    ("1 IMP/methods", "find", "colt"): 2 * 3,          # 2 models a round (at most 3 rounds)
    ("1 IMP/methods", "find", "rigl"): 2,              # one sparse training per target
    ("1 IMP/methods", "find", "cap"): 3,               # one run: 0.5 one-shot, 2 steps to 0.75
    ("1 IMP/methods", "retrain", "lth"): 2 * 2,        # per target: mask + random control
    ("1 IMP/methods", "retrain", "colt"): 2 * 2,
    ("1 IMP/methods", "retrain", "snip"): 2,           # no random control for one-shot masks
    ("1 IMP/methods", "retrain", "rigl"): 2,
    ("1 IMP/methods", "retrain", "cap"): 2,
    # tickets: 2 targets x 2 modes x {core, union} x {ticket, random}
    ("1 IMP/methods", "retrain", "dilt"): 2 * 2 * 2 * 2,
    ("3 specialists", "retrain", "dilt"): 2 * 2 * 2 * 2,   # spec1, spec2
    # at 0.75, source-matched: dense; LTH + control; COLT + control; 4 tickets + controls
    ("4 transfer", "transfer", "dense"): 1,
    ("4 transfer", "transfer", "lth"): 2,
    ("4 transfer", "transfer", "colt"): 2,
    ("4 transfer", "transfer", "dilt"): 8,
}


def test_training_counts_match_the_hand_count(suite):
    df = B.budget(suite, measured={"mlp@8": 1000.0})
    got = df[df.trainings > 0].groupby(["experiment", "stage", "method"])["trainings"].sum().to_dict()
    assert got == {k: 2 * v for k, v in HAND.items()}       # two seeds
    t = B.totals(df)
    assert t.loc["1 IMP/methods", "trainings"] == 2 * 51
    assert t.loc["3 specialists", "trainings"] == 32
    assert t.loc["4 transfer", "trainings"] == 26
    assert t.loc["total", "trainings"] == 2 * 51 + 32 + 26
    assert t.loc["2 analysis", "trainings"] == 0
    assert set(df[df.bound == "at most"].method) == {"colt"}


def test_epochs_images_and_hours(suite):
    from dilt.data import load_dataset

    df = B.budget(suite, measured={"mlp@8": 1000.0})
    # every training runs the recipe's 2 epochs, except CAP's fine-tuning steps (prune_every 1)
    cap = (df.stage == "find") & (df.method == "cap")
    assert (df[cap].epochs == df[cap].trainings).all()
    assert (df[~cap].epochs == 2 * df[~cap].trainings).all()
    d = load_dataset("digits", seed=0, val_fraction=0.2)
    per_epoch = len(d.train_targets) + len(d.val_targets) / 3
    row = lambda stage, method: df[(df.stage == stage) & (df.method == method)].iloc[0]  # noqa: E731
    assert row("find", "lth").images == pytest.approx(2 * 3 * 2 * per_epoch)
    # DiLT's runs each see half of the images (5 of the 10 classes)
    assert row("find", "dilt").images == pytest.approx(2 * 6 * 2 * per_epoch / 2)
    r = load_dataset("digits_rot", seed=0, val_fraction=0.2)
    per_epoch_rot = len(r.train_targets) + len(r.val_targets) / 3
    assert row("transfer", "dilt").images == pytest.approx(2 * 8 * 2 * per_epoch_rot)
    # the analysis: the probe set (64 images) forward through both partition models, per seed
    assert row("analysis", "dilt").images == pytest.approx(2 * 2 * 64 / 3)
    assert (df.gpu_hours == df.images / 1000.0 / 3600).all()
    assert set(df.throughput) == {"measured"}


def test_imp_rounds_follow_the_schedule():
    # paper: 0.2 a round to 0.5, 0.7, 0.8, 0.9 -> 0.2 0.36 0.488 |0.5| 0.6 0.68 |0.7| 0.76 |0.8|
    # 0.84 0.872 0.8976 |0.9|: 13 rounds after the dense one
    assert B.imp_rounds({"sparsities": [0.5, 0.7, 0.8, 0.9], "prune": {"rate": 0.2}}) == 13
    assert B.imp_rounds({"sparsities": [0.9, 0.95, 0.98], "prune": {"rate": 0.5}}) == 7


def test_partition_shares():
    spec = {"partitions": [{"n": 3, "scheme": "contiguous"}, {"n": 2, "scheme": "iid"},
                           {"n": 3, "scheme": "semantic"}], "val_fraction": 0.1}
    assert B.part_fractions(spec, "contiguous3", "cifar100") == [0.34, 0.33, 0.33]
    assert B.part_fractions(spec, "iid2", "cifar100") == [0.5, 0.5]
    assert B.part_fractions(spec, "semantic3", "cifar100") == [7 / 20, 7 / 20, 6 / 20]


def test_throughputs_are_marked(tmp_path):
    assert B.throughput("resnet50", 224).kind == "cited"
    assert B.throughput("resnet50", 224).images_per_s == 2470
    assert B.throughput("deit_s", 224).kind == "cited, scaled"
    path = tmp_path / "tp.json"
    path.write_text(json.dumps({"resnet50@224": 2900}))
    m = B.throughput("resnet50", 224, B.load_measured(path))
    assert (m.kind, m.images_per_s) == ("measured", 2900.0)
    # an estimate scales a cited figure by FLOPs: ResNet-18 at 32 px (CIFAR stem) from 224 px
    est = B.throughput("resnet18", 32, num_classes=100)
    ratio = B.model_flops("resnet18", 224, 3, 1000) / B.model_flops("resnet18", 32, 3, 100)
    assert est.kind == "estimate"
    assert est.images_per_s == min(round(B.CITED[("resnet18", 224)].images_per_s * ratio), B.ESTIMATE_CAP)


def test_paper_budget_uses_cited_throughputs_and_prints_totals():
    from dilt import config

    s = config.load("workflow_config.yaml", "paper")
    df = B.budget(s)
    assert set(df.throughput) <= {"cited", "cited, scaled"}
    text = B.format_budget(df, "paper")
    total = B.totals(df).loc["total"]
    assert f"{int(total.trainings):,d}" in text and "GPU-hours" in text
    assert "DGX A100" in text


def test_scoring_passes_are_counted_beside_the_trainings(suite):
    """What a find job computes besides training is a ``score`` row in training-image
    equivalents: CAP's Fisher gradients at every pruning step, SNIP's scoring batch, and
    SAViT's exact Hessian, one Hessian-vector product per gate and scoring image."""
    from dilt.methods import ScoringFacts, get_method
    from dilt.methods.savit import HVP_STEPS

    df = B.budget(suite, measured={"mlp@8": 1000.0})
    score = df[df.stage == "score"].set_index("method")
    assert set(score.index) == {"cap", "snip"} and (score.trainings == 0).all()
    assert (score.epochs == 0).all()
    # two seeds; CAP: 3 pruning steps (0.5, then 2 steps to 0.75) of 4096 gradients of 128
    assert score.loc["cap", "images"] == 2 * 3 * 4096 * 128
    assert score.loc["snip", "images"] == 2 * 10 * 10            # 10 a class, 10 classes
    # the tiny ViT: 4 blocks x 4 heads, 4 x 128 MLP neurons, 64 embedding dims
    vit = B.meta_model("vit_tiny", 8, 1, 10)
    facts = ScoringFacts(classes=10, train_images=1000, model=vit)
    savit = get_method("savit")
    opts = dict(savit.options)
    assert savit.scoring(opts, [0.5], facts) == 32 * 10 * (1 + HVP_STEPS * (16 + 512 + 64))
    assert savit.scoring({**opts, "curvature": "fisher"}, [0.5], facts) == 32 * 10
    assert not get_method("random_erk").trains_in_find and get_method("cap").trains_in_find

import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


def tiny_config(**suite_overrides) -> dict:
    """A small valid config: one suite 'tiny' on digits with the MLP."""
    suite = {
        "models": {"mlp": {"prune_first": True}},
        "datasets": ["digits"],
        "partitions": [{"n": 2, "scheme": "contiguous"}],
        "sparsities": [0.5, 0.8],
        "methods": ["lth", "dilt", "colt"],
        "seeds": [0],
        "prune": {"rate": 0.5},
        "recipes": {"default": {"epochs": 2, "batch_size": 128, "lr": 0.05}},
        "analysis": {"sparsity": 0.5, "probe_size": 64, "permutations": 200},
        "transfer": {"sparsity": 0.8, "targets": ["digits_rot"]},
    }
    suite.update(suite_overrides)
    return {"suite": "tiny", "suites": {"tiny": suite}}


@pytest.fixture
def tiny_suite(tmp_path):
    from dilt import config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    return config.load(path)

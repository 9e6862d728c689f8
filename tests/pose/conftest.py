"""Fixtures of the pose-estimation tests."""

import pytest

from tests.rendered_template import make_template


@pytest.fixture(scope="module")
def template():
    """A car's surface (vertices [300, 3]) with random unit features θ_j [300, 16] and two background
    prototypes β [2, 16]."""
    return make_template()


@pytest.fixture(scope="module")
def run_dir(synth_root, tmp_path_factory):
    """A run written as training writes it (shards, surface features and an alignment of the small
    synthetic dataset, an untrained network saved as training saves it): what the pose tests read. One per
    test module (``catpose evaluate`` caches its retrieval views in it)."""
    import torch

    from catpose.learn.model import build_model
    from catpose.learn.train import prepare, save_trained, write_split
    from catpose.storage import Store
    from tests.training_inputs import training_config, training_inputs

    base = tmp_path_factory.mktemp("poserun")
    shards = str(base / "shards")
    feats = training_inputs(synth_root, base, shards)
    cfg = training_config(synth_root, base, shards, feats, out=str(base / "runs"), holdout=0.0)
    prep = prepare(cfg)
    store = Store(cfg.out)
    write_split(store, "train-car", cfg, prep)
    torch.manual_seed(0)
    save_trained(store, "train-car", cfg, build_model(cfg, torch.as_tensor(prep["template"].vertices)),
                 prep["template"], 0)
    return base / "runs" / "train-car"

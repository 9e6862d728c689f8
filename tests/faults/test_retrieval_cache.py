"""Issue 34, finding 4: the retrieval-views cache of a training run (``retrieval_views.pt``) is keyed by
the digests of the ``model.pt`` and ``split.json`` it was made from: kept while they are unchanged, and
recomputed, saying so, when another model (another run writing into the same folder, a retrain) or
another split is there, so no estimate uses the descriptors of another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from catpose.config import PoseConfig
from catpose.learn.model import build_model
from catpose.learn.train import prepare, save_trained, write_split
from catpose.pose.estimate import PoseEstimator
from catpose.pose.evaluate import attach_views, views_key
from catpose.storage import Store
from tests.training_inputs import training_config, training_inputs

pytestmark = pytest.mark.slow


def _save_model(store, cfg, prep, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model(cfg, torch.as_tensor(prep["template"].vertices))
    with torch.no_grad():  # another set of weights for another seed (as training would leave)
        for p in model.parameters():
            p.add_(0.05 * seed * torch.randn_like(p))
    save_trained(store, "train-car", cfg, model, prep["template"], 0)


def _views(run: str) -> tuple[PoseEstimator, bool]:
    est = PoseEstimator.from_run(run, None, PoseConfig(device="cpu", grid=256))
    return est, attach_views(est, run, progress=False)


def test_the_views_cache_follows_the_model_and_split_it_was_made_from(synth_root, tmp_path, capsys):
    shards = str(tmp_path / "shards")
    feats = training_inputs(synth_root, tmp_path, shards)
    cfg = training_config(synth_root, tmp_path, shards, feats, out=str(tmp_path / "runs"), holdout=0.0)
    prep = prepare(cfg)
    store = Store(cfg.out)
    write_split(store, "train-car", cfg, prep)
    _save_model(store, cfg, prep, 0)
    run = str(tmp_path / "runs" / "train-car")
    rstore = Store(run)
    est0, ok = _views(run)
    assert ok and rstore.exists("retrieval_views.pt")
    assert rstore.read_json("retrieval_views.key.json") == views_key(rstore)
    capsys.readouterr()
    cache = tmp_path / "runs" / "train-car" / "retrieval_views.pt"
    t0 = cache.stat().st_mtime_ns
    est, _ = _views(run)  # nothing changed: read from the cache, not recomputed
    assert "recomputing" not in capsys.readouterr().out and cache.stat().st_mtime_ns == t0
    assert torch.equal(est.view_descriptors, est0.view_descriptors)

    _save_model(store, cfg, prep, 1)  # another model.pt in the run (e.g. a second run training into it)
    est1, _ = _views(run)
    printed = capsys.readouterr().out
    assert f"retrieval views: {cache} was made from another model.pt or training split than the run's; " \
           "recomputing it" in printed
    assert not torch.allclose(est1.view_descriptors, est0.view_descriptors)  # the new model's descriptors
    assert rstore.read_json("retrieval_views.key.json") == views_key(rstore)
    # the descriptors of the cache are those the new model computes (a fresh estimator, the same views)
    est1b, _ = _views(run)
    assert "recomputing" not in capsys.readouterr().out
    assert torch.equal(est1b.view_descriptors, est1.view_descriptors)

    split = json.loads((tmp_path / "runs" / "train-car" / "split.json").read_text())
    split["train"] = split["train"][:-1]  # another training split: recomputed too
    (tmp_path / "runs" / "train-car" / "split.json").write_text(json.dumps(split))
    est2, _ = _views(run)
    assert "recomputing it" in capsys.readouterr().out
    assert len(est2.view_rotations) < len(est1.view_rotations)
    # a torn update (the cache written, its key not) is never trusted
    (tmp_path / "runs" / "train-car" / "retrieval_views.key.json").unlink()
    _views(run)
    assert "recomputing it" in capsys.readouterr().out
    assert np.isfinite(est2.view_descriptors.numpy()).all()

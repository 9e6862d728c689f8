"""Inputs of a training run on the synthetic cars, shared by the training and pose-evaluation tests:
shards, surface features and an alignment (the ground truth's, written as ``catpose align`` does)."""

from pathlib import Path

from catpose.align.table import write_alignment
from catpose.config import FeaturesConfig, ShardConfig, TrainConfig
from catpose.data.groundtruth import load_ground_truth
from catpose.data.shards import write_shards
from catpose.features.runner import run_features
from catpose.learn.train import ground_truth_to_reference


def training_inputs(synth_root, base: Path, shards: str, endpoint=None):
    """Shards, surface features and an alignment (the ground truth's, written as catpose align does)."""
    write_shards(
        ShardConfig(data=synth_root, out=shards, category=("car",), endpoint_url=endpoint), progress=False
    )
    feats = str(base / "features")
    run_features(
        FeaturesConfig(data=synth_root, category=("car",), out=feats, vertices=300, frames=4, workers=0),
        progress=False,
    )
    ref = sorted(load_ground_truth(synth_root, "car"))[0]
    tf = ground_truth_to_reference(synth_root, "car", ref)
    (base / "align").mkdir(parents=True, exist_ok=True)
    write_alignment(base / "align" / "alignment.parquet", tf, ref)
    return feats


def training_config(synth_root, base, shards, feats, **kw):
    base_kw = dict(
        data=shards,
        alignment=base / "align",
        features=feats,
        category="car",
        vertices=200,
        size=64,
        batch_size=4,
        holdout=0.3,
        num_workers=2,
        cpus_per_worker=0.5,
        ground_truth=synth_root,
    )
    return TrainConfig(**{**base_kw, **kw})

"""A trained car, made the way the main job makes one, small enough for a test session on 2 CPU cores.

The main job's stages on one synthetic category: ``catpose synth`` (fewer videos than the demo's 30),
``catpose shard``, the surface features (colorsift, the features stage's defaults but for fewer frames,
which training does not read), the alignment (the ground truth's, written as ``catpose align`` writes it:
the alignment stage is tested on its own, and on these videos it reaches 100 % Acc@π/6), Ray Train at the
demo's settings (:data:`catpose.run.config.PipelineConfig` ``train``: 64-px crops, a 300-vertex template,
2 workers, batches of 8), then the pose stage's evaluation (the demo's estimator settings, retrieval prior
included) on a synthetic in-the-wild set of unseen instances. ``python -m tests.trained_run --seed S``
measures one run and prints its numbers (how the thresholds of ``tests/pose/test_trained_accuracy.py``
were set).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

# what the test trains on: fewer videos and epochs than the demo (30 videos, 50 epochs) so that the run fits
# a few minutes of a test session; measured, see tests/pose/test_trained_accuracy.py
VIDEOS = 12
EPOCHS = 40
WILD_IMAGES = 60


def trained_car(base: Path, seed: int = 0, videos: int = VIDEOS, epochs: int = EPOCHS,
                wild_images: int = WILD_IMAGES, progress: bool = False) -> dict:
    """Trains a car under ``base`` and scores it; returns the run, its training result, the pose evaluation
    and each step's seconds. Needs Ray (``ray.init`` before, as the ``ray_local`` fixture does)."""
    from catpose.align.table import write_alignment
    from catpose.config import PoseEvalConfig, ShardConfig, WildConfig
    from catpose.data.groundtruth import load_ground_truth
    from catpose.data.shards import write_shards
    from catpose.data.synth.generate import generate
    from catpose.features.runner import run_features
    from catpose.learn.train import ground_truth_to_reference, run_train
    from catpose.run.config import PipelineConfig
    from catpose.pose.evaluate import evaluate_pose
    from catpose.pose.wild import generate_wild

    demo = PipelineConfig()
    base = Path(base)
    t = {}
    t0 = time.perf_counter()
    data = base / "data"
    generate(dataclasses.replace(demo.synth, out=str(data), category=("car",), videos=videos))
    t["synth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shards = str(base / "shards")
    write_shards(ShardConfig(data=str(data), out=shards, category=("car",)), progress=progress)
    feats = str(base / "features")
    run_features(dataclasses.replace(demo.features, data=str(data), out=feats, category=("car",), frames=4),
                 progress=progress)
    ref = min(load_ground_truth(data, "car"))
    (base / "align").mkdir(parents=True, exist_ok=True)
    write_alignment(base / "align" / "alignment.parquet", ground_truth_to_reference(data, "car", ref), ref)
    t["shard+features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tcfg = dataclasses.replace(demo.train, data=shards, alignment=str(base / "align"), features=feats,
                               category="car", out=str(base / "runs"), ground_truth=str(data), epochs=epochs,
                               seed=seed)
    tr = run_train(tcfg)
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wild = base / "wild"
    generate_wild(WildConfig(out=wild, category="car", images=wild_images), progress=progress)
    t["wild"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pose = evaluate_pose(PoseEvalConfig(checkpoint=tr["run"], dataset="synth-wild", root=wild, category="car",
                                        out=base / "pose", overlays=0, pose=demo.pose), progress=progress)
    t["pose"] = time.perf_counter() - t0
    return {
        "base": str(base),
        "run": tr["run"],
        "train": tr,
        "pose": pose,
        "seconds": {k: round(v, 1) for k, v in t.items()},
    }


def summary(res: dict) -> dict:
    """The numbers the accuracy test checks."""
    ev = res["train"]["evaluation"]["methods"]
    m = res["pose"]["methods"]
    return {
        "held_out_matching": {k: round(v["accuracy"], 4) for k, v in ev.items()},
        "pose": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in m.items()},
        "scored": res["pose"]["scored"],
        "failed": res["pose"]["failed"],
        "loss": [round(res["train"]["history"][0]["loss"], 3), round(res["train"]["history"][-1]["loss"], 3)],
        "seconds": res["seconds"],
    }


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    import ray

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos", type=int, default=VIDEOS)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--images", type=int, default=WILD_IMAGES)
    a = ap.parse_args()
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = trained_car(Path(d), a.seed, a.videos, a.epochs, a.images)
        print(
            json.dumps({**vars(a), **summary(r), "total_s": round(time.perf_counter() - t0, 1)}), flush=True
        )

"""Shared inputs of the learn tests: the small synthetic dataset's car frames as shard rows, with each
video's template targets (built from the ground-truth alignment)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def car_rows(synth_root, tmp_path_factory):
    """{"shards": the car's shard folder, "columns": its rows as columns (learn.data.COLUMNS), "targets":
    VideoTargets per video of a 200-vertex template}."""
    from catpose.config import ShardConfig
    from catpose.data.co3d import Co3dCategory
    from catpose.data.groundtruth import load_ground_truth
    from catpose.data.shards import iter_shard_rows, write_shards
    from catpose.features.surface import sequence_vertices
    from catpose.learn.data import COLUMNS, VideoTargets
    from catpose.learn.template import build_template, instance_correspondents
    from catpose.learn.train import ground_truth_to_reference

    shards = str(tmp_path_factory.mktemp("car-rows") / "shards")
    write_shards(ShardConfig(data=synth_root, out=shards, category=("car",)), progress=False)
    tf = ground_truth_to_reference(synth_root, "car", sorted(load_ground_truth(synth_root, "car"))[0])
    verts = {s.name: sequence_vertices(s.load_point_cloud(), 300)[0] for s in Co3dCategory(synth_root, "car")}
    tpl = build_template([tf[n].apply(v).astype(np.float32) for n, v in verts.items()], 200)
    targets = {n: VideoTargets(*instance_correspondents(tpl, v, tf[n]), v) for n, v in verts.items()}
    rows = list(iter_shard_rows(shards, columns=COLUMNS))
    return {"shards": shards, "columns": {c: [r[c] for r in rows] for c in COLUMNS}, "targets": targets}

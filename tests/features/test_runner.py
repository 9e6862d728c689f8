"""``catpose features`` as Ray tasks: store, manifest, resume, failures."""

import shutil

import numpy as np

from catpose.config import FeaturesConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.pointcloud import PointCloud, write_ply
from catpose.features.runner import feature_key, load_surface_features, run_features


def test_features_as_ray_tasks_resume_and_record_failures(synth_root, tmp_path, ray_local):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    broken = Co3dCategory(data, "car").sequence_names[2]
    write_ply(data / "car" / broken / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    out = tmp_path / "features"
    cfg = FeaturesConfig(data=data, category=("car", "mug"), out=str(out), vertices=300, frames=4, workers=2)
    mans = run_features(cfg, progress=False)
    assert mans["mug"].summary() == {"ok": 3}
    assert mans["car"].summary() == {"ok": 2, "failed": 1}
    assert "pointcloud.ply" in mans["car"].failed[broken] and "empty" in mans["car"].failed[broken]
    assert mans["car"].info["backbone"].startswith("colorsift")
    name = Co3dCategory(data, "mug").sequence_names[0]
    sf = load_surface_features(str(out), "mug", name)
    assert sf.features.shape == (4, 300, sf.features.shape[2]) and sf.visible.any()
    mtime = (out / feature_key("mug", name)).stat().st_mtime_ns
    # a rerun skips what is done and retries the failure; changed settings recompute
    mans = run_features(cfg, progress=False)
    assert (out / feature_key("mug", name)).stat().st_mtime_ns == mtime
    assert mans["car"].status(broken) == "failed"
    run_features(FeaturesConfig(**{**cfg.__dict__, "vertices": 200, "category": ("mug",)}), progress=False)
    assert load_surface_features(str(out), "mug", name).vertices.shape == (200, 3)


def test_features_into_s3(synth_root, s3_bucket):
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/features"
    cfg = FeaturesConfig(data=synth_root, category=("mug",), out=uri, vertices=200, frames=3, workers=0,
                         endpoint_url=endpoint)
    assert run_features(cfg, progress=False)["mug"].summary() == {"ok": 3}
    name = Co3dCategory(synth_root, "mug").sequence_names[1]
    sf = load_surface_features(uri, "mug", name, endpoint)
    assert sf.sequence == name and sf.vertices.shape == (200, 3)

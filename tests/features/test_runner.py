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


def test_features_stage_with_a_dinov2_backbone_end_to_end(synth_root, tmp_path):
    """The features stage with DINOv2 (random weights in the official checkpoint's format, a small ViT): every
    video's surface features come from that backbone (its 128 channels, at the visible vertices only), the
    store records it, and the alignment runs on them."""
    from catpose.align.run import run_align
    from catpose.config import AlignConfig, SearchConfig
    from catpose.features.runner import signature
    from tests.features.test_backbones import tiny_vit

    _, weights = tiny_vit(tmp_path)
    cfg = FeaturesConfig(
        data=synth_root,
        category=("car",),
        out=str(tmp_path / "features"),
        backbone="dinov2_vits14",
        weights=weights,
        input_size=56,
        vertices=150,
        frames=3,
        workers=0,
    )
    man = run_features(cfg, progress=False)["car"]
    assert man.summary() == {"ok": 3}
    assert "dinov2_vits14" in man.info["backbone"]
    for name in man.keys_with("ok"):
        sf = load_surface_features(cfg.out, "car", name)
        assert sf.vertices.shape == (150, 3) and sf.features.shape == (3, 150, 128)
        f = sf.features.astype(np.float32)
        assert np.isfinite(f).all() and not f[~sf.visible].any() and (np.abs(f[sf.visible]).sum(-1) > 0).all()
        assert sf.visible.mean() > 0.2
    res = run_align(
        AlignConfig(
            data=synth_root,
            category="car",
            out=tmp_path / "align",
            features=cfg.out,
            search=SearchConfig(rotations=128),
            workers=0,
        ),
        made_with=signature(cfg),
        progress=False,
    )
    assert res["videos"] == 3 and res["pairs"] == 3 and not res["failed_chunks"]

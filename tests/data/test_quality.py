"""CO3D as it really is: a video without pointcloud.ply (its cloud made from the depth maps), blank
frames and a broken mask, on a synthetic CO3D-layout category written by ``catpose synth``."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from catpose.cli import main
from catpose.config import ShardConfig, SynthConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.pointcloud import read_ply
from catpose.data.quality import blank_reason, cloud_from_depth, sequence_quality
from catpose.data.shards import write_shards
from catpose.data.synth.generate import generate


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    """3 cars (8 frames, 64 px, depth maps): car_0000 without its pointcloud.ply, car_0001 with two black
    frames and a grey one, car_0002 with the mask of one frame replaced by a box in a corner."""
    root = tmp_path_factory.mktemp("co3d_real")
    generate(SynthConfig(workers=0, out=root, category=("car",), videos=3, frames=8, size=64))
    cat = Co3dCategory(root, "car")
    s0, s1, s2 = (cat[n] for n in cat.sequence_names)
    truth = read_ply(s0.point_cloud_path)
    (root / "car" / s0.name / "pointcloud.ply").unlink()
    # all black, black with a little noise-free dark, constant grey
    for k, value in ((2, 0), (3, 3), (5, 128)):
        fr = s1.frames[k]
        buf = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
        fr.image_path.write_bytes(buf.getvalue())
    box = np.zeros((64, 64), np.uint8)
    box[:12, :12] = 255
    Image.fromarray(box).save(s2.frames[4].mask_path)
    return root, truth, (s0.name, s1.name, s2.name)


def chamfer(a, b):
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def test_cloud_made_from_depth_maps_matches_the_known_one(real_like):
    root, truth, (s0, _, _) = real_like
    cat = Co3dCategory(root, "car")
    seq = cat[s0]
    assert seq.cloud_source == "depth" and cat.clouds_from_depth == [s0] and s0 in cat.sequence_names
    cloud = seq.load_point_cloud()  # no file: made from the depth maps and cameras
    diag = float(np.linalg.norm(truth.points.max(0) - truth.points.min(0)))
    assert len(cloud) > 200 and cloud.colors is not None
    assert chamfer(cloud.points, truth.points) < 0.01 * diag  # float16 depth, same cameras
    assert chamfer(cloud_from_depth(seq, max_frames=3).points, truth.points) < 0.02 * diag


def test_blank_frames_and_broken_mask_are_named(real_like):
    root, _, (s0, s1, s2) = real_like
    cat = Co3dCategory(root, "car")
    assert blank_reason(np.zeros((8, 8, 3), np.uint8)).startswith("all black")
    assert blank_reason(np.full((8, 8, 3), 90, np.uint8)).startswith("near-constant")
    q1 = sequence_quality(cat[s1])
    assert sorted(q1.blank_frames) == [f"{s1}/2", f"{s1}/3", f"{s1}/5"] and q1.bad_masks == {}
    q2 = sequence_quality(cat[s2])
    assert (
        list(q2.bad_masks) == [f"{s2}/4"]
        and "disagrees with the cloud's projection" in q2.bad_masks[f"{s2}/4"]
    )
    assert q2.blank_frames == {}
    q0 = sequence_quality(cat[s0])  # the cloud made from depth agrees with its own masks
    assert q0.cloud == "depth" and q0.bad_masks == {} and q0.blank_frames == {}


def test_info_and_shard_manifest_count_and_name_them(real_like, tmp_path, capsys):
    root, _, (s0, s1, s2) = real_like
    assert main(["info", "--data", str(root), "--check-files"]) == 1  # problems found: exit 1
    out = capsys.readouterr().out
    assert f"their clouds made from depth maps ({s0})" in out
    assert (
        "car: 3 blank frames (skipped by shard and features), 1 masks at odds with the cloud's projection"
        in out
    )
    assert f"{s1}/2: " in out and "all black" in out and f"{s2}/4: " in out
    man = write_shards(
        ShardConfig(data=root, out=str(tmp_path / "shards"), category=("car",)), progress=False
    )
    info = man["categories"]["car"]
    assert info["blank_frames"] == 3 and info["clouds_from_depth"] == [s0] and info["frames"] == 21
    assert "blank frame: all black" in man["skipped"][f"car/{s1}/2"]
    saved = json.loads((tmp_path / "shards" / "_catpose_shards.json").read_text())
    assert saved["categories"]["car"]["blank_frames"] == 3


def test_features_manifest_names_them(real_like, tmp_path):
    from catpose.config import FeaturesConfig
    from catpose.features.runner import run_features

    root, _, (s0, s1, s2) = real_like
    man = run_features(FeaturesConfig(data=root, category=("car",), out=str(tmp_path / "f"), vertices=100,
                                      frames=8, workers=0), progress=False)["car"]
    assert man.summary() == {"ok": 3}
    assert man.items[s0]["cloud"] == "depth" and man.items[s1]["cloud"] == "file"
    assert sorted(man.items[s1]["blank_frames"]) == [f"{s1}/2", f"{s1}/3", f"{s1}/5"]
    assert man.items[s1]["frames"] == 5  # 8 asked, 3 blank, no other frame left to take their place
    dq = man.info["data_quality"]
    assert (
        dq["clouds_from_depth"] == [s0] and dq["blank_frames"] == 3 and list(dq["bad_masks"]) == [f"{s2}/4"]
    )

"""Bad input as real CO3D has it: a video with neither pointcloud.ply nor depth maps is excluded and
named (one with depth maps gets a cloud made from them: tests/data/test_quality.py)."""

import shutil

import pytest

from catpose.config import SynthConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.synth.generate import generate


def test_a_video_without_cloud_nor_depth_is_excluded_and_named(tmp_path):
    generate(
        SynthConfig(workers=0, out=tmp_path, category=("mug",), videos=2, frames=4, size=48, depth=False)
    )
    cat = Co3dCategory(tmp_path, "mug")
    gone = cat.sequence_names[1]
    shutil.rmtree(tmp_path / "mug" / gone / "images")  # irrelevant: the video is excluded before any image
    (tmp_path / "mug" / gone / "pointcloud.ply").unlink()
    cat = Co3dCategory(tmp_path, "mug")
    assert (
        cat.sequence_names == [n for n in cat.sequence_names if n != gone] and gone not in cat.sequence_names
    )
    assert (
        "no point cloud and no depth maps" in cat.excluded[gone]
        and f"{gone}/pointcloud.ply" in cat.excluded[gone]
    )
    assert f"excluded: no point cloud nor depth maps ({gone})" in cat.cloud_summary()
    with pytest.raises(FileNotFoundError, match=f"{gone}/pointcloud.ply"):
        cat[gone].load_point_cloud()

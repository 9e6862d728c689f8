"""The CO3D reader on generated data: geometry round trip, laziness, clear errors on bad input."""

import shutil

import numpy as np
import pytest

from catpose.data.co3d import Co3dCategory, list_categories
from catpose.data.pointcloud import PointCloud, read_ply, write_ply
from catpose.errors import DataFormatError, MissingFileError


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("category", ["car", "mug"])
def test_point_cloud_projects_into_masks(synth_root, category):
    """synth -> reader round trip: >= 95 % of points land inside the mask in every frame."""
    cat = Co3dCategory(synth_root, category)
    assert len(cat) == 3
    for seq in cat:
        cloud = seq.load_point_cloud()
        assert len(cloud) > 500
        for fr in seq.frames:
            uv, z = fr.camera.project(cloud.points)
            mask = fr.load_mask()
            H, W = mask.shape
            u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
            inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
            inside[inside] = mask[v[inside], u[inside]] > 0.5
            assert inside.mean() >= 0.95, (seq.name, fr.frame_number, inside.mean())


def test_depth_maps_agree_with_cameras(synth_root):
    seq = next(iter(Co3dCategory(synth_root, "car")))
    cloud = seq.load_point_cloud()
    for fr in seq.frames[:3]:
        depth = fr.load_depth()
        mask = fr.load_mask()
        assert (depth[mask > 0.99] > 0).all()
        # unprojecting the depth of fully covered pixels gives points near the cloud
        v, u = np.nonzero(mask > 0.99)
        pts = fr.camera.unproject(np.stack([u + 0.5, v + 0.5], -1), depth[v, u])
        d = np.linalg.norm(pts[:, None, :] - cloud.points[None, ::7, :], axis=-1).min(1)
        extent = np.linalg.norm(cloud.points.max(0) - cloud.points.min(0))
        assert np.median(d) < 0.02 * extent


def test_frames_join_by_annotation_not_file_name(synth_root):
    seq = next(iter(Co3dCategory(synth_root, "car")))
    numbers = [f.frame_number for f in seq.frames]
    assert numbers == list(range(len(numbers)))
    assert seq.frames[1].image_path.name != "frame000001.jpg"  # file numbers differ, as in CO3D
    assert len(seq.subsample(3)) == 3 and seq.subsample(3)[0].frame_number == 0


def test_set_lists_and_categories(synth_root):
    assert list_categories(synth_root) == ["car", "mug"]
    assert Co3dCategory(synth_root, "mug").set_list_names == ["fewview_dev"]


def test_media_load_lazily(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "d")
    seq_name = Co3dCategory(root, "car").sequence_names[0]
    shutil.rmtree(root / "car" / seq_name / "images")
    cat = Co3dCategory(root, "car")  # opening and listing needs only the annotations
    seq = cat[seq_name]
    assert len(seq.frames) == 8 and seq.frames[0].camera.image_size == (96, 96)
    with pytest.raises(MissingFileError, match=f"{seq_name}/images/frame"):
        seq.frames[0].load_image()


def test_truncated_image_names_the_file(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "d")
    fr = next(iter(Co3dCategory(root, "car"))).frames[2]
    data = fr.image_path.read_bytes()
    fr.image_path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataFormatError, match=str(fr.image_path)):
        fr.load_image()


def test_empty_and_broken_point_clouds(tmp_path):
    p = tmp_path / "pointcloud.ply"
    write_ply(p, PointCloud(np.zeros((0, 3), np.float32)))
    with pytest.raises(DataFormatError, match="empty") as e:
        read_ply(p)
    assert str(p) in str(e.value)
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float "
                  b"x\nend_header\n\x00")
    with pytest.raises(DataFormatError, match="pointcloud.ply"):
        read_ply(p)
    with pytest.raises(MissingFileError, match="missing.ply"):
        read_ply(tmp_path / "missing.ply")


def test_ply_round_trip_with_colors_and_normals(tmp_path):
    rng = np.random.default_rng(0)
    c = PointCloud(
        rng.normal(size=(100, 3)).astype(np.float32),
        rng.integers(0, 255, (100, 3)).astype(np.uint8),
        rng.normal(size=(100, 3)).astype(np.float32),
    )
    write_ply(tmp_path / "a.ply", c)
    r = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(r.points, c.points)
    np.testing.assert_array_equal(r.colors, c.colors)
    np.testing.assert_array_equal(r.normals, c.normals)


def test_wrong_paths(tmp_path, synth_root):
    with pytest.raises(MissingFileError, match="category folder 'plane'"):
        Co3dCategory(synth_root, "plane")
    with pytest.raises(MissingFileError, match="dataset root"):
        list_categories(tmp_path / "nowhere")
    with pytest.raises(KeyError, match="no_such_seq"):
        Co3dCategory(synth_root, "car")["no_such_seq"]


def test_missing_camera_names_frame(tmp_path, synth_root):
    from catpose.data.types import dump_annotations, load_frame_annotations

    root = copy_dataset(synth_root, tmp_path / "d")
    fa_path = root / "car" / "frame_annotations.jgz"
    frames = load_frame_annotations(fa_path)
    frames[5].viewpoint = None
    dump_annotations(fa_path, frames)
    seq = Co3dCategory(root, "car")[frames[5].sequence_name]
    with pytest.raises(DataFormatError, match="viewpoint") as e:
        seq.frames[frames[5].frame_number].camera
    assert frames[5].sequence_name in str(e.value)

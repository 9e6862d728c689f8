"""Point clouds above the cap are subsampled while read (issue 34, finding 8)."""

from __future__ import annotations

import numpy as np

from catpose.data.pointcloud import MAX_POINTS, PointCloud, ply_bytes, read_ply, write_ply


def _cloud(n: int) -> PointCloud:
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((n, 3)).astype(np.float32)
    pts[:, 0] = np.arange(n, dtype=np.float32)  # x is the point's index: the subset can be traced
    return PointCloud(pts, (pts[:, :3].astype(np.int64) % 256).astype(np.uint8))


def test_a_cloud_above_the_cap_is_subsampled_while_read(tmp_path):
    cloud = _cloud(20_000)
    path = tmp_path / "pointcloud.ply"
    write_ply(path, cloud)
    got = read_ply(path, max_points=3000)
    idx = got.points[:, 0].astype(int)
    # distinct, in file order
    assert len(got) == 3000 and len(np.unique(idx)) == 3000 and np.all(np.diff(idx) > 0)
    assert np.array_equal(got.points, cloud.points[idx]) and np.array_equal(got.colors, cloud.colors[idx])
    assert idx.min() < 1000 and idx.max() > 19_000  # spread over the whole file
    again = read_ply(path, max_points=3000)
    assert np.array_equal(again.points, got.points)  # the same subset every time
    from_bytes = read_ply(str(path), data=ply_bytes(cloud), max_points=3000)  # a cloud fetched from a store
    assert len(from_bytes) == 3000


def test_a_cloud_under_the_cap_is_read_whole(tmp_path):
    cloud = _cloud(500)
    write_ply(tmp_path / "c.ply", cloud)
    got = read_ply(tmp_path / "c.ply")
    assert MAX_POINTS == 1_000_000 and np.array_equal(got.points, cloud.points)
    assert len(read_ply(tmp_path / "c.ply", max_points=None)) == 500


def test_streamed_reading_gives_the_same_subset_block_by_block(tmp_path):
    """A store's cloud is read from an open file (header, then its vertex rows a block at a time): the
    rows kept are those the whole-file reader keeps, also when a block ends mid-subset."""
    from catpose.data.pointcloud import _plyfile_vertices, _stream_vertices, read_ply_stream

    cloud = _cloud(20_000)
    path = tmp_path / "pointcloud.ply"
    write_ply(path, cloud)
    whole = _plyfile_vertices(str(path), "name", 3000)
    for block in (4096, 1 << 20):  # many blocks, one block
        with open(path, "rb") as fh:
            got = _stream_vertices(fh, "name", 3000, block=block)
        assert np.array_equal(got, whole)
    with open(path, "rb") as fh:
        assert np.array_equal(read_ply_stream(fh, path, max_points=None).points, cloud.points)


def test_an_ascii_or_truncated_cloud_read_from_a_file(tmp_path):
    import pytest
    from plyfile import PlyData

    from catpose.data.pointcloud import _vertex_element, read_ply_stream
    from catpose.errors import DataFormatError

    cloud = _cloud(400)
    PlyData([_vertex_element(cloud)], text=True).write(str(tmp_path / "a.ply"))
    with open(tmp_path / "a.ply", "rb") as fh:  # ascii: read whole, the same result
        assert np.array_equal(read_ply_stream(fh, tmp_path / "a.ply", max_points=100).points,
                              read_ply(tmp_path / "a.ply", max_points=100).points)
    data = ply_bytes(cloud)
    (tmp_path / "t.ply").write_bytes(data[: len(data) - 100])
    with (
        open(tmp_path / "t.ply", "rb") as fh,
        pytest.raises(DataFormatError, match="t.ply.*ends within its vertices"),
    ):
        read_ply_stream(fh, tmp_path / "t.ply")


def test_the_cap_is_a_setting_of_the_category_and_of_the_features(synth_root, s3_bucket):
    import pytest

    from catpose.config import FeaturesConfig, check_settings
    from catpose.data.co3d import Co3dCategory
    from catpose.errors import ConfigError
    from catpose.storage import Store

    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/co3d", endpoint)
    store.upload_dir(synth_root / "car", "car")
    local = Co3dCategory(synth_root, "car", max_points=100)["car_0001"].load_point_cloud()
    remote = Co3dCategory(store.uri, "car", endpoint, max_points=100)["car_0001"].load_point_cloud()
    assert len(local) == len(remote) == 100
    full = Co3dCategory(store.uri, "car", endpoint)["car_0001"].load_point_cloud()  # under the default cap
    assert np.array_equal(full.points, Co3dCategory(synth_root, "car")["car_0001"].load_point_cloud().points)
    assert FeaturesConfig().cloud_points == MAX_POINTS
    with pytest.raises(ConfigError, match="field 'cloud_points': -1 is out of range; allowed: >= 0"):
        check_settings(FeaturesConfig(cloud_points=-1))

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
    assert len(got) == 3000 and len(np.unique(idx)) == 3000 and np.all(np.diff(idx) > 0)  # distinct, in file order
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

"""Farthest point sampling and statistical outlier removal (catpose.geometry.sampling)."""

import numpy as np

from catpose.geometry import farthest_point_sample, remove_outliers


def test_outliers_removed_and_fps_spreads():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (2000, 3))
    far = np.array([[30.0, 0, 0], [0, -40.0, 0], [0, 0, 50.0]])
    keep = remove_outliers(np.concatenate([pts, far]))
    assert not keep[-3:].any() and keep[:-3].mean() > 0.95
    idx = farthest_point_sample(pts, 100)
    assert len(np.unique(idx)) == 100
    sub = pts[idx]
    d = np.linalg.norm(sub[:, None] - sub[None], axis=-1) + np.eye(100) * 1e9
    rand = pts[rng.choice(2000, 100, replace=False)]
    dr = np.linalg.norm(rand[:, None] - rand[None], axis=-1) + np.eye(100) * 1e9
    assert d.min() > 2 * dr.min()  # FPS keeps samples apart


def test_fps_is_deterministic_and_keeps_small_clouds_whole():
    pts = np.random.default_rng(1).normal(size=(500, 3))
    np.testing.assert_array_equal(farthest_point_sample(pts, 50), farthest_point_sample(pts, 50))
    np.testing.assert_array_equal(farthest_point_sample(pts[:30], 50), np.arange(30))

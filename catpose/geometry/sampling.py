"""Point sampling: farthest point sampling (``fpsample``; pytorch3d's when installed) and statistical
outlier removal (scipy's k-d tree)."""

from __future__ import annotations

import fpsample
import numpy as np
import torch
from scipy.spatial import cKDTree


def remove_outliers(points: np.ndarray, k: int = 16, std_ratio: float = 2.0) -> np.ndarray:
    """Statistical outlier removal: keep points whose mean distance to their k nearest neighbours is
    at most ``mean + std_ratio · std`` of that statistic over the cloud. Returns a boolean mask."""
    if len(points) <= k + 1:
        return np.ones(len(points), dtype=bool)
    d, _ = cKDTree(points).query(points, k=k + 1)
    md = d[:, 1:].mean(1)
    return md <= md.mean() + std_ratio * md.std()


def farthest_point_sample(points: np.ndarray, n: int, exact: bool = False) -> np.ndarray:
    """Indices of ``n`` farthest-point samples (deterministic start at index 0), sorted.

    ``exact=True``: the textbook greedy sequence (each step takes the point farthest from those
    chosen; ``fpsample.fps_sampling``), what the alignment engine computes on the GPU
    (``catpose.align.videos.farthest_points``, tested against this); otherwise pytorch3d's where
    installed, else fpsample's faster bucket variant, whose picks can differ from the greedy ones — the
    CPU path of the alignment keeps it (its accuracy tests were set on it: on the 6-car test the greedy
    subsets turned 2 of 6 videos where the bucket variant turns none)."""
    if len(points) <= n:
        return np.arange(len(points))
    if exact:
        return np.sort(fpsample.fps_sampling(np.ascontiguousarray(points, dtype=np.float32), n, start_idx=0))
    try:  # pytorch3d is an optional, heavy extra: imported only here, where it is used when installed
        from pytorch3d.ops import sample_farthest_points
    except ImportError:
        sample_farthest_points = None
    if sample_farthest_points is not None:
        _, idx = sample_farthest_points(torch.as_tensor(points)[None].float(), K=n, random_start_point=False)
        return idx[0].numpy()
    h = min(7, int(np.log2(len(points))))  # the k-d tree's height must leave a point per leaf
    return np.sort(fpsample.bucket_fps_kdline_sampling(points.astype(np.float32), n, h=h, start_idx=0))

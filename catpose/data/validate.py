"""Geometric sanity checks of a sequence: do its point cloud, cameras and masks agree?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catpose.data.co3d import Co3dSequence


@dataclass
class SequenceCheck:
    sequence: str
    frames: int
    points: int
    in_mask: float  # mean over frames of the fraction of cloud points that project inside the mask
    worst_frame_in_mask: float


def check_sequence(seq: Co3dSequence, max_frames: int = 12, max_points: int = 4000) -> SequenceCheck:
    """Projects the point cloud through each (sub-sampled) frame's camera into its mask.

    On clean data nearly all points land inside the mask (occluded points too: the mask is the
    silhouette). A low value means wrong cameras, a misplaced cloud or bad masks.
    """
    cloud = seq.load_point_cloud()
    pts = cloud.points
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    fracs = []
    for fr in seq.subsample(max_frames):
        if fr.mask_path is None:
            continue
        mask = fr.load_mask()
        uv, z = fr.camera.project(pts)
        H, W = mask.shape
        u = np.floor(np.nan_to_num(uv[:, 0], nan=-1)).astype(int)
        v = np.floor(np.nan_to_num(uv[:, 1], nan=-1)).astype(int)
        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
        ok[ok] = mask[v[ok], u[ok]] > 0.5
        fracs.append(float(ok.mean()))
    return SequenceCheck(seq.name, len(seq), len(cloud), float(np.mean(fracs)) if fracs else float("nan"),
                         float(np.min(fracs)) if fracs else float("nan"))

"""Cleaning a video's cloud to the object (catpose.data.cleaning) on small realistic synthetic data,
measured against the generator's ground truth of which points lie on the object."""

import numpy as np
import pytest

from catpose.data.cleaning import (
    CleanSettings,
    clean_object_points,
    fit_support_plane,
    in_view_share,
    isolated_points,
    mask_vote,
    up_direction,
    view_size,
)
from catpose.data.co3d import Co3dCategory
from catpose.data.groundtruth import load_ground_truth, load_point_labels
from catpose.errors import CleaningError


def _videos(root, category):
    gts = load_ground_truth(root, category)
    for seq in Co3dCategory(root, category):
        yield (
            seq,
            seq.load_point_cloud().points.astype(np.float64),
            load_point_labels(root, category, seq.name),
            gts[seq.name],
        )


def _world_up(gt):
    up = gt.R.T @ np.array([0.0, 0.0, 1.0])  # canonical z (up) as a world direction
    return up / np.linalg.norm(up)


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_realistic_videos_hold_ground_outliers_and_partial_orbits(realistic_root):
    import json

    gt = json.loads((realistic_root / "catpose_gt.json").read_text())["categories"]
    orbits = [s["orbit_deg"] for c in gt.values() for s in c["sequences"].values()]
    assert any(150 <= o <= 200 for o in orbits) and any(o == 360 for o in orbits)
    for cat in ("car", "mug"):
        for seq, pts, lab, _ in _videos(realistic_root, cat):
            assert lab.shape == (len(pts),) and 0.05 < lab.mean() < 0.6  # mostly ground and background
            f = seq.frames[0]
            assert f.load_mask().max() == 1.0


def test_up_direction_from_full_and_partial_orbits(realistic_root):
    # a prior for the plane search (which allows 20°); hand-held roll tilts it a little
    for cat in ("car", "mug"):
        for seq, _, _, gt in _videos(realistic_root, cat):
            assert _angle(up_direction([f.camera for f in seq.frames]), _world_up(gt)) < 5


def test_support_plane_is_the_ground_and_not_the_roof(realistic_root):
    seq, pts, lab, gt = next(_videos(realistic_root, "car"))
    cams = [f.camera for f in seq.frames]
    scale = np.median([np.linalg.norm(c.center - pts[lab].mean(0)) for c in cams])
    near = in_view_share(pts, cams) >= 0.8
    n, d = fit_support_plane(pts[near], up_direction(cams), 0.01 * scale)
    assert _angle(n, _world_up(gt)) < 3
    on_plane = np.abs(pts @ n + d) < 0.01 * scale
    assert (~lab[on_plane]).mean() > 0.95  # the plane's points are ground
    # the object alone (no ground under it): no plane is taken for a support (the car's roof is not one)
    assert fit_support_plane(pts[lab], up_direction(cams), 0.01 * scale) is None


def test_mask_vote_survives_imperfect_masks(realistic_root):
    for cat in ("car", "mug"):
        for seq, pts, lab, _ in _videos(realistic_root, cat):
            inside, seen = mask_vote(pts, [f.camera for f in seq.frames], [f.load_mask() for f in seq.frames],
                                     tol=0.03 * np.ptp(pts[lab], 0).max())
            keep = (seen > 0) & (inside >= 0.5 * seen)
            assert keep[lab].mean() > 0.7  # eroded and holed masks cost some object points, not most
            assert (~lab[keep]).mean() < 0.05


@pytest.mark.parametrize("mode", ["masks", "geometry"])
def test_clean_object_points_against_ground_truth(realistic_root, mode):
    for cat in ("car", "mug"):
        for seq, pts, lab, _ in _videos(realistic_root, cat):
            frames = seq.frames
            res = clean_object_points(pts, [f.camera for f in frames], [f.load_mask() for f in frames],
                                      CleanSettings(mode=mode))
            k = res.keep
            assert res.mode == mode and 0.3 < res.removed_share < 0.95
            assert (~lab[k]).mean() < 0.03, (seq.name, res.summary())
            assert k[lab].mean() > (0.7 if mode == "masks" else 0.9), (seq.name, res.summary())
            steps = {"masks", "isolated"} if mode == "masks" else {"outside_view", "plane", "isolated"}
            assert set(res.summary()["removed_by"]) == steps


def test_isolated_points_are_outliers():
    rng = np.random.default_rng(0)
    surface = np.c_[rng.uniform(0, 1, (2000, 2)), np.zeros(2000)]
    lone = rng.uniform(-1, 2, (40, 3)) + [0, 0, 0.5]
    flags = isolated_points(np.concatenate([surface, lone]), 3.0)
    assert flags[2000:].mean() > 0.9 and flags[:2000].mean() < 0.01


def test_cleaning_that_leaves_too_little_names_the_video(realistic_root):
    seq, pts, _, _ = next(_videos(realistic_root, "mug"))
    empty = [np.zeros(f.image_size, np.float32) for f in seq.frames]  # segmentation found nothing
    with pytest.raises(CleaningError, match=r"seq-x.*cleaning \(masks\) left 0 of"):
        clean_object_points(pts, [f.camera for f in seq.frames], empty, source="seq-x")


def test_view_size_is_about_the_object(realistic_root):
    # what the cameras frame, whatever the cloud holds: the template's size check leans on it
    for cat in ("car", "mug"):
        for seq, pts, lab, _ in _videos(realistic_root, cat):
            ratio = view_size([f.camera for f in seq.frames]) / np.linalg.norm(np.ptp(pts[lab], 0))
            assert 0.6 < ratio < 1.2, (seq.name, ratio)


def test_support_plane_of_a_noisy_sfm_floor():
    # an SfM floor: its points scatter over more than one band about the plane (far from the cameras,
    # depth is noisy), a small object stands on it; the plane is found, and tilted floors are not taken
    rng = np.random.default_rng(7)
    band = 0.01
    floor = np.c_[rng.uniform(-1, 1, (900, 2)), rng.normal(0, 1.2 * band, 900)]
    obj = np.c_[rng.uniform(-0.05, 0.05, (100, 2)), rng.uniform(0.02, 0.1, 100)]
    res = fit_support_plane(np.concatenate([floor, obj]), np.array([0.0, 0.0, 1.0]), band)
    assert res is not None
    n, d = res
    assert n[2] > np.cos(np.deg2rad(2)) and abs(d) < band

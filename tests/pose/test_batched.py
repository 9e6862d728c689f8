"""Batched pose estimation (``PoseEstimator.estimate_batch``, ``search_poses``; ``PoseEstimator.estimate`` is
a batch of one) against the one-image reference path (``tests/pose/reference.py``: ``estimate``,
``search_pose``) on feature templates rendered at known poses: the same hypotheses, the same poses and
errors; failures in a batch are reported per image."""

import numpy as np
import pytest
import torch
from PIL import Image

from catpose.config import PoseConfig
from catpose.errors import NoObjectError
from catpose.geometry import geodesic_deg, so3_grid
from catpose.pose.estimate import PoseEstimate, PoseEstimator, distinct_batch
from catpose.pose.viewpoint import viewpoint_to_rotation
from tests.pose import reference
from tests.rendered_template import (
    FOCAL,
    FeaturesByGrey,
    S,
    background_features,
    object_pose,
    render_features,
)

# (azimuth, elevation, in-plane angle) and the focal length of each image of the batch
VIEWS = [((30, 20, 0), FOCAL), ((200, 35, 8), FOCAL * 1.3), ((115, 5, -12), FOCAL * 0.85)]
BOX = [S / 2 - S / 2.3, S / 2 - S / 2.3, S / 2 + S / 2.3, S / 2 + S / 2.3]  # crop = the whole image


def grey(level: int) -> np.ndarray:
    return np.full((S, S, 3), level, np.uint8)


def rendered_batch(template, views, seed0=0):
    """Grey levels, true rotations [3, 3] and translations [3], and the encoder that gives each grey
    image the feature image of the template at its pose."""
    V, theta, beta = template
    fmaps, Rs, Ts = {}, [], []
    for n, (angles, focal) in enumerate(views):
        R = torch.as_tensor(viewpoint_to_rotation(*angles), dtype=torch.float32)
        T = object_pose(V, R, focal)
        fmaps[10 * (n + 1)] = render_features(V, theta, beta, R, T, seed=seed0 + n, focal=focal)
        Rs.append(R)
        Ts.append(T)
    return list(fmaps), Rs, Ts, fmaps


def test_distinct_hypotheses_as_tensors_match_the_greedy_loop(device):
    """distinct_batch (k rounds of tensor ops over [B, G] scores) picks what reference.distinct (a Python
    loop over
    the sorted candidates, one image) picks, for each image of the batch."""
    grid = so3_grid(512).to(device)
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(5, len(grid), generator=g).to(device)
    idx, valid = distinct_batch(grid, scores, 4)
    assert idx.shape == (5, 4) and bool(valid.all())
    for b in range(5):
        assert idx[b].tolist() == reference.distinct(grid, scores[b], 4)
    # more hypotheses asked for than exist 100° apart: the rest repeat the best and are not valid
    idx, valid = distinct_batch(grid, scores, 12, min_deg=100)
    for b in range(5):
        ref = reference.distinct(grid, scores[b], 12, min_deg=100)
        n = len(ref)
        assert n < 12 and idx[b, :n].tolist() == ref and valid[b].tolist() == [True] * n + [False] * (12 - n)
        assert (idx[b, n:] == ref[0]).all()


@pytest.mark.parametrize("grid,refine_steps", [(1024, 0), (4096, 40)])
def test_batch_matches_the_one_image_path(template, device, grid, refine_steps):
    """Three images with different poses and cameras in one batch: each gets the pose the one-image path
    gives it (the same coarse hypothesis without refinement; within 0.05° after refinement of all
    B × top_k hypotheses together), the same E(R, T) and the same error to the true rotation (below 5°
    with the default grid and refinement, as for one image in test_estimate.py)."""
    V, theta, beta = template
    greys, Rs, _, fmaps = rendered_batch(template, VIEWS)
    est = PoseEstimator(FeaturesByGrey(fmaps), theta, V, beta, size=S,
                        cfg=PoseConfig(prior_weight=0, grid=grid, refine_steps=refine_steps, device=device))
    focal = [f for _, f in VIEWS]
    batch = est.estimate_batch([grey(g) for g in greys], [BOX] * 3, focal_px=focal)
    for n, g in enumerate(greys):
        one = reference.estimate(est, grey(g), bbox=BOX, focal_px=focal[n])
        got = batch[n]
        assert isinstance(got, PoseEstimate) and got.timings["batch"] == 3
        apart = float(geodesic_deg(got.R, one.R))
        if refine_steps == 0:
            np.testing.assert_allclose(got.R, one.R, atol=1e-6)  # the same grid rotation
        assert apart < 0.05, f"image {n}: batched and one-image poses {apart:.3f}° apart"
        np.testing.assert_allclose(got.T, one.T, atol=1e-3 * np.linalg.norm(one.T))
        assert abs(got.confidence - one.confidence) < 1e-3
        err_b, err_1 = float(geodesic_deg(got.R, Rs[n].numpy())), float(geodesic_deg(one.R, Rs[n].numpy()))
        assert abs(err_b - err_1) < 0.05
        if refine_steps:
            assert err_b < 5.0, f"image {n}: error {err_b:.1f}°"
        np.testing.assert_allclose(got.box, one.box)
        assert got.object_fraction == pytest.approx(one.object_fraction, abs=1e-6)
        assert got.focal_px == one.focal_px and np.allclose(got.principal_px, one.principal_px)


def test_a_batch_with_an_unreadable_image_and_one_without_object_goes_on(template, tmp_path, device):
    """estimate_files over [car, broken file, empty street, car]: the two cars get their poses (as the
    one-image path gives them), the broken file and the image without object are named failures."""
    V, theta, beta = template
    focal = PoseConfig().focal_ndc * S / 2  # the camera assumed without a known focal length
    greys, Rs, _, fmaps = rendered_batch(template, [((30, 20, 0), focal), ((200, 35, 8), focal)])
    fmaps[200] = background_features(beta, grid=48)  # every pixel looks like background
    est = PoseEstimator(FeaturesByGrey(fmaps), theta, V, beta, size=S,
                        cfg=PoseConfig(prior_weight=0, device=device, batch=4))
    paths = []
    for name, level in (
        ("car1.png", greys[0]),
        ("broken.jpg", None),
        ("street.png", 200),
        ("car2.png", greys[1]),
    ):
        p = tmp_path / name
        if level is None:
            p.write_bytes(b"\xff\xd8\xff not really a jpeg")
        else:
            Image.fromarray(grey(level)).save(p)
        paths.append(str(p))
    out = list(est.estimate_files(paths, progress=False))
    assert [o[0] for o in out] == paths
    assert [o[1] is not None for o in out] == [True, False, False, True]
    assert paths[1] in out[1][2] and "decode" in out[1][2]
    assert paths[2] in out[2][2] and "no object found" in out[2][2]
    for n, i in enumerate((0, 3)):
        pose, err = out[i][1], out[i][2]
        assert err is None and pose.timings["batch"] == 2  # the two cars were estimated together
        one = reference.estimate(est, grey(greys[n]))
        assert float(geodesic_deg(pose.R, one.R)) < 0.05
        assert float(geodesic_deg(pose.R, Rs[n].numpy())) < 5.0
    # estimate_batch itself hands back the error of the image without object in its place
    res = est.estimate_batch([grey(greys[0]), grey(200)], sources=["car.png", "street.png"])
    assert (
        isinstance(res[0], PoseEstimate) and isinstance(res[1], NoObjectError) and "street.png" in str(res[1])
    )


def test_batch_with_the_retrieval_prior_matches_the_one_image_path(template, device):
    """With training views attached (prior_weight > 0), each image's prior [len(grid)] is the one the
    one-image path computes, and the batch's poses are the one-image path's."""
    V, theta, beta = template
    greys, _, _, fmaps = rendered_batch(template, VIEWS[:2])
    est = PoseEstimator(FeaturesByGrey(fmaps), theta, V, beta, size=S,
                        cfg=PoseConfig(grid=1024, refine_steps=8, prior_weight=3.0, device=device))
    g = torch.Generator().manual_seed(1)
    descs = torch.nn.functional.normalize(torch.randn(30, 16 * 16, generator=g), dim=1)  # [V, D·4²]
    est.set_views(descs, so3_grid(30).numpy())
    crops = torch.nn.functional.normalize(torch.randn(3, 16 * 16, generator=g), dim=1)
    priors = est.retrieval_priors(crops)
    assert priors.shape == (3, 1024) and float(priors.max()) <= 0 < float(-priors.min())
    torch.testing.assert_close(priors, torch.stack([reference.retrieval_prior(est, c) for c in crops]))
    focal = [f for _, f in VIEWS[:2]]
    batch = est.estimate_batch([grey(x) for x in greys], [BOX] * 2, focal_px=focal)
    for n, x in enumerate(greys):
        one = reference.estimate(est, grey(x), bbox=BOX, focal_px=focal[n])
        assert (
            float(geodesic_deg(batch[n].R, one.R)) < 0.05 and abs(batch[n].confidence - one.confidence) < 1e-3
        )

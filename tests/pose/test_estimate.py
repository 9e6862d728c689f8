"""Pose estimation: a feature template rendered at a known pose is found again; bad images fail clearly."""

import numpy as np
import pytest
import torch
from PIL import Image

from catpose.config import PoseConfig
from catpose.errors import DataFormatError, NoObjectError
from catpose.geometry import geodesic_deg
from catpose.pose.estimate import PoseEstimator
from catpose.pose.viewpoint import viewpoint_to_rotation
from tests.rendered_template import FOCAL, FixedFeatures, S, background_features, object_pose, render_features


@pytest.mark.parametrize("angles", [(30, 20, 0), (200, 35, 8), (115, 5, -12)])
def test_rendered_template_at_known_pose_is_recovered(template, angles, device):
    V, theta, beta = template
    R = torch.as_tensor(viewpoint_to_rotation(*angles), dtype=torch.float32)
    T = object_pose(V, R)
    est = PoseEstimator(FixedFeatures(render_features(V, theta, beta, R, T)), theta, V, beta, size=S,
                        cfg=PoseConfig(prior_weight=0, device=device))
    box = [S / 2 - S / 2.3, S / 2 - S / 2.3, S / 2 + S / 2.3, S / 2 + S / 2.3]  # crop = the whole image
    p = est.estimate(np.zeros((S, S, 3), np.uint8), bbox=box, focal_px=FOCAL)
    err = float(geodesic_deg(p.R, R.numpy()))
    assert err < 5.0, f"pose {angles}: error {err:.1f}°"
    assert 0 < p.confidence <= 1 and p.object_fraction >= est.cfg.min_object
    true_distance = float(torch.linalg.norm(T))
    assert abs(p.distance - true_distance) < 0.1 * true_distance


def test_bad_images_fail_clearly_and_a_batch_goes_on(template, tmp_path):
    V, theta, beta = template
    R = torch.as_tensor(viewpoint_to_rotation(60, 20, 0), dtype=torch.float32)
    good = PoseEstimator(FixedFeatures(render_features(V, theta, beta, R, object_pose(V, R))), theta, V, beta,
                         size=S, cfg=PoseConfig(prior_weight=0, grid=512, refine_steps=5))
    img = tmp_path / "car.png"
    Image.fromarray(np.full((S, S, 3), 120, np.uint8)).save(img)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros((S, S), np.uint8)).save(empty)
    out = list(
        good.estimate_files([str(img), str(broken), str(img)], masks=[None, None, str(empty)], progress=False)
    )
    assert [o[1] is not None for o in out] == [True, False, False]
    assert str(broken) in out[1][2] and "decode" in out[1][2]
    assert "mask is empty" in out[2][2] and str(img) in out[2][2]
    with pytest.raises(DataFormatError, match="cannot decode"):
        from catpose.pose.estimate import load_image

        load_image(broken)
    # an image with no object: every pixel looks like background
    nothing = PoseEstimator(FixedFeatures(background_features(beta)),
                            theta, V, beta, size=S, cfg=PoseConfig(prior_weight=0))
    with pytest.raises(NoObjectError, match="no object found"):
        nothing.estimate(np.zeros((S, S, 3), np.uint8), source="street.jpg")
    with pytest.raises(NoObjectError, match="box .* is empty"):
        good.estimate(np.zeros((S, S, 3), np.uint8), bbox=[10, 10, 10, 40])

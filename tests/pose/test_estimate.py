"""Pose estimation: a feature template rendered at a known pose is found again; bad images fail clearly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from catpose.config import PoseConfig
from catpose.errors import DataFormatError, NoObjectError
from catpose.geometry import farthest_point_sample, geodesic_deg, project
from catpose.pose.estimate import PoseEstimator, fit_translation, template_visibility
from catpose.pose.viewpoint import viewpoint_to_rotation

S = 96  # crop = image size
FOCAL = 110.0


@pytest.fixture(scope="module")
def template():
    """A car's surface (vertices) with random unit features θ_j and two background prototypes β."""
    from catpose.data.synth.shapes import make_instance

    mesh, _ = make_instance("car", np.random.default_rng(0)).merged()
    pts = mesh.sample(4000, return_index=False) if hasattr(mesh, "sample") else None
    pts = np.asarray(pts, np.float32)
    V = pts[farthest_point_sample(pts, 300)]
    V -= (V.max(0) + V.min(0)) / 2
    g = torch.Generator().manual_seed(0)
    theta = F.normalize(torch.randn(len(V), 16, generator=g), dim=1)
    beta = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    return torch.as_tensor(V), theta, beta


def render_features(V, theta, beta, R, T, size=S, grid=48, noise=0.3, seed=0):
    """The feature image of the template at pose (R, T): each pixel of a ``grid``² map gets θ of the
    nearest visible projected vertex (within 1.5 cells), else β₀; plus noise. [1, D, grid, grid]."""
    r = grid / size
    f = torch.tensor([[FOCAL * r, FOCAL * r]])
    pp = torch.tensor([[size / 2 * r, size / 2 * r]])
    uv, z = project(V, R[None].float(), T[None].float(), f, pp)
    diam = float((V.amax(0) - V.amin(0)).norm())
    vis = template_visibility(uv, z, grid, diam, len(V))[0]
    pix = torch.stack(torch.meshgrid(torch.arange(grid) + 0.5, torch.arange(grid) + 0.5, indexing="xy"), -1).view(-1, 2)
    d = torch.cdist(pix, uv[0][vis])
    dmin, j = d.min(1)
    feats = torch.where((dmin < 1.5)[:, None], theta[vis][j], beta[0].expand(len(pix), -1))
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(feats + noise * torch.randn(feats.shape, generator=g) / feats.shape[1] ** 0.5, dim=1)
    return feats.T.reshape(1, -1, grid, grid)


class FixedFeatures(torch.nn.Module):
    """A stand-in encoder that returns one prepared feature image, whatever the crop."""

    def __init__(self, fmap):
        super().__init__()
        self.fmap = fmap

    def forward(self, images):
        return self.fmap.to(images.device).expand(len(images), -1, -1, -1)


def _object_pose(V, R):
    T = fit_translation(V, R[None], FOCAL, torch.tensor([S / 2, S / 2]), torch.tensor([S / 2, S / 2]), S / 1.15)[0]
    return T


@pytest.mark.parametrize("angles", [(30, 20, 0), (200, 35, 8), (115, 5, -12)])
def test_rendered_template_at_known_pose_is_recovered(template, angles, device):
    V, theta, beta = template
    R = torch.as_tensor(viewpoint_to_rotation(*angles), dtype=torch.float32)
    T = _object_pose(V, R)
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
    good = PoseEstimator(FixedFeatures(render_features(V, theta, beta, R, _object_pose(V, R))), theta, V, beta,
                         size=S, cfg=PoseConfig(prior_weight=0, grid=512, refine_steps=5))
    img = tmp_path / "car.png"
    Image.fromarray(np.full((S, S, 3), 120, np.uint8)).save(img)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros((S, S), np.uint8)).save(empty)
    out = list(good.estimate_files([str(img), str(broken), str(img)], masks=[None, None, str(empty)], progress=False))
    assert [o[1] is not None for o in out] == [True, False, False]
    assert str(broken) in out[1][2] and "decode" in out[1][2]
    assert "mask is empty" in out[2][2] and str(img) in out[2][2]
    with pytest.raises(DataFormatError, match="cannot decode"):
        from catpose.pose.estimate import load_image

        load_image(broken)
    # an image with no object: every pixel looks like background
    nothing = PoseEstimator(FixedFeatures(F.normalize(beta[0].view(1, -1, 1, 1).expand(1, -1, 24, 24), dim=1)),
                            theta, V, beta, size=S, cfg=PoseConfig(prior_weight=0))
    with pytest.raises(NoObjectError, match="no object found"):
        nothing.estimate(np.zeros((S, S, 3), np.uint8), source="street.jpg")
    with pytest.raises(NoObjectError, match="box .* is empty"):
        good.estimate(np.zeros((S, S, 3), np.uint8), bbox=[10, 10, 10, 40])

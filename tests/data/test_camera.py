"""catpose's Camera against CO3D's documented camera convention (PyTorch3D NDC cameras)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from catpose.data.camera import Camera, look_at_rotation


def reference_projection(R, T, f_ndc, p_ndc, hw, fmt, X):
    """CO3D/PyTorch3D, written out step by step from their documentation:
    X_cam = X_world @ R + T;  x_ndc = f * X/Z + p  (NDC +x left, +y up);
    ndc -> screen: u = W/2 - s_x * x_ndc, v = H/2 - s_y * y_ndc with
    s = (W/2, H/2) for ndc_norm_image_bounds and s = min(H, W)/2 for ndc_isotropic."""
    H, W = hw
    Xc = X @ R + T
    ndc = f_ndc * Xc[:, :2] / Xc[:, 2:3] + p_ndc
    s = np.array([W / 2, H / 2]) if fmt == "ndc_norm_image_bounds" else np.full(2, min(H, W) / 2)
    return np.array([W / 2, H / 2]) - s * ndc


def random_camera(rng, hw=(120, 160), fmt="ndc_isotropic"):
    R = Rotation.random(random_state=rng).as_matrix()
    T = np.array([0.1, -0.2, 6.0]) + rng.normal(0, 0.1, 3)
    return Camera(R, T, rng.uniform(1.5, 3.0, 2), rng.uniform(-0.1, 0.1, 2), hw, fmt)


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
@pytest.mark.parametrize("hw", [(120, 160), (160, 120), (100, 100)])
def test_projection_matches_co3d_convention(fmt, hw):
    rng = np.random.default_rng(0)
    cam = random_camera(rng, hw, fmt)
    X = rng.normal(0, 1, (50, 3))
    uv, z = cam.project(X)
    ref = reference_projection(cam.R, cam.T, cam.focal_length, cam.principal_point, hw, fmt, X)
    np.testing.assert_allclose(uv, ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(z, (X @ cam.R + cam.T)[:, 2])


def test_camera_axes_x_left_y_up():
    cam = Camera(np.eye(3), [0, 0, 5], (2.0, 2.0), (0, 0), (100, 200), "ndc_isotropic")
    (centre, left, up), _ = cam.project(np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_allclose(centre, [100, 50])  # principal point 0 = image centre (W/2, H/2)
    assert left[0] < centre[0] and abs(left[1] - centre[1]) < 1e-9  # camera +X is image-left
    assert up[1] < centre[1]  # camera +Y is image-up (rows grow downwards)
    # ndc_isotropic: focal 2 in NDC is 2 * min(H, W)/2 = 100 px: 1/5 * 100 = 20 px
    np.testing.assert_allclose(centre[0] - left[0], 20.0)


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
def test_formats_describe_the_same_camera(fmt):
    rng = np.random.default_rng(1)
    cam = random_camera(rng, (90, 170), fmt)
    other = cam.with_intrinsics_format("ndc_norm_image_bounds" if fmt == "ndc_isotropic" else "ndc_isotropic")
    X = rng.normal(0, 1, (20, 3))
    np.testing.assert_allclose(cam.project(X)[0], other.project(X)[0], atol=1e-9)
    np.testing.assert_allclose(cam.K, other.K, atol=1e-9)


def test_opencv_round_trip_and_projection():
    rng = np.random.default_rng(2)
    cam = random_camera(rng, (120, 160), "ndc_norm_image_bounds")
    K, R_cv, t_cv = cam.to_opencv()
    assert np.linalg.det(R_cv) == pytest.approx(1.0)
    X = rng.normal(0, 1, (20, 3))
    x = (X @ R_cv.T + t_cv) @ K.T
    np.testing.assert_allclose(x[:, :2] / x[:, 2:], cam.project(X)[0], atol=1e-9)
    back = Camera.from_opencv(K, R_cv, t_cv, cam.image_size, cam.intrinsics_format)
    for a in ("R", "T", "focal_length", "principal_point"):
        np.testing.assert_allclose(getattr(back, a), getattr(cam, a), atol=1e-12)


def test_unproject_inverts_project_and_center():
    rng = np.random.default_rng(3)
    cam = random_camera(rng)
    X = rng.normal(0, 1, (30, 3))
    uv, z = cam.project(X)
    np.testing.assert_allclose(cam.unproject(uv, z), X, atol=1e-9)
    np.testing.assert_allclose(cam.world_to_camera(cam.center[None]), [[0, 0, 0]], atol=1e-12)


def test_resized_camera_scales_pixels():
    rng = np.random.default_rng(4)
    cam = random_camera(rng, (120, 160))
    small = cam.resized((60, 80))
    X = rng.normal(0, 1, (10, 3))
    np.testing.assert_allclose(small.project(X)[0], cam.project(X)[0] / 2, atol=1e-9)


def test_points_behind_camera_get_nan():
    cam = Camera(np.eye(3), [0, 0, 0], (1.0, 1.0), (0, 0), (10, 10))
    uv, z = cam.project(np.array([[0, 0, -1.0], [0, 0, 1.0]]))
    assert np.isnan(uv[0]).all() and np.isfinite(uv[1]).all() and z[0] < 0


def test_look_at_rotation_centres_target_and_keeps_up():
    eye, target = np.array([3.0, -2.0, 1.5]), np.array([0.2, 0.1, 0.3])
    R = look_at_rotation(eye, target)
    assert np.linalg.det(R) == pytest.approx(1.0)
    cam = Camera(R, -eye @ R, (2.0, 2.0), (0, 0), (64, 64))
    (c, up), _ = cam.project(np.stack([target, target + [0, 0, 0.1]]))
    np.testing.assert_allclose(c, [32, 32], atol=1e-9)
    assert up[1] < c[1]  # world +z appears upwards


def test_pixel_rays_pass_through_pixel_centres():
    rng = np.random.default_rng(5)
    cam = random_camera(rng, (6, 8))
    o, d = cam.pixel_rays()
    uv, _ = cam.project(o + 3.0 * d)
    v, u = np.mgrid[0:6, 0:8] + 0.5
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], -1), atol=1e-9)


def test_to_pytorch3d_matches_when_installed():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch3d", reason="pytorch3d is an optional extra, not installable here")
    rng = np.random.default_rng(6)
    cam = random_camera(rng, (120, 160), "ndc_norm_image_bounds")
    X = rng.normal(0, 1, (10, 3))
    p3d = cam.to_pytorch3d()
    uv = p3d.transform_points_screen(torch.tensor(X, dtype=torch.float32)[None])[0, :, :2].numpy()
    np.testing.assert_allclose(uv, cam.project(X)[0], atol=1e-3)


def test_rejects_unknown_intrinsics_format():
    with pytest.raises(ValueError, match="intrinsics_format"):
        Camera(np.eye(3), [0, 0, 1], (1, 1), (0, 0), (4, 4), "pixels")

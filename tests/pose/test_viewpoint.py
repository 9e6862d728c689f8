"""PASCAL3D+/ObjectNet3D viewpoint angles ↔ catpose camera rotations."""

import numpy as np

from catpose.data.camera import Camera
from catpose.pose.viewpoint import rotation_to_viewpoint, viewpoint_to_rotation


def _pascal3d_project(X, a, e, theta, d, f, viewport, px, py):
    """PASCAL3D+'s published projection (project_3d.m), written out: MATLAB pixel coordinates."""
    a, e, theta = np.radians([a, e, theta])
    C = d * np.array([np.cos(e) * np.sin(a), -np.cos(e) * np.cos(a), np.sin(e)])
    az, el = -a, -(np.pi / 2 - e)
    Rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]])
    R = Rx @ Rz
    P = np.diag([viewport * f, viewport * f, -1.0]) @ np.hstack([R, -R @ C[:, None]])
    x = P @ np.vstack([X.T, np.ones(len(X))])
    x = x[:2] / x[2]
    R2 = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    x = (R2 @ x).T
    x[:, 1] *= -1
    return x + [px, py]


def test_viewpoint_rotation_projects_like_pascal3d():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)) * 0.5
    for _ in range(10):
        a, e, t = rng.uniform(0, 360), rng.uniform(-30, 80), rng.uniform(-60, 60)
        d, f, vp, px, py = (
            rng.uniform(4, 8),
            1.0,
            rng.uniform(200, 3000),
            rng.uniform(50, 300),
            rng.uniform(50, 200),
        )
        R = viewpoint_to_rotation(a, e, t)
        C = d * np.array(
            [
                np.cos(np.radians(e)) * np.sin(np.radians(a)),
                -np.cos(np.radians(e)) * np.cos(np.radians(a)),
                np.sin(np.radians(e)),
            ]
        )
        H, W = 400, 600
        s = min(H, W) / 2
        # catpose pixel = MATLAB pixel − 0.5
        cam = Camera(
            R, -C @ R, (f * vp / s, f * vp / s), ((W / 2 - (px - 0.5)) / s, (H / 2 - (py - 0.5)) / s), (H, W)
        )
        uv, z = cam.project(X)
        assert (z > 0).all()
        np.testing.assert_allclose(uv + 0.5, _pascal3d_project(X, a, e, t, d, f, vp, px, py), atol=1e-6)


def test_viewpoint_angles_round_trip():
    rng = np.random.default_rng(1)
    a, e, t = rng.uniform(0, 360, 50), rng.uniform(-85, 85, 50), rng.uniform(-179, 179, 50)
    R = viewpoint_to_rotation(a, e, t)
    np.testing.assert_allclose(
        np.einsum("nij,nkj->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-9
    )
    a2, e2, t2 = rotation_to_viewpoint(R)
    np.testing.assert_allclose(a2, a, atol=1e-6)
    np.testing.assert_allclose(e2, e, atol=1e-6)
    np.testing.assert_allclose(t2, t, atol=1e-6)

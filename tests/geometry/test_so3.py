"""The SO(3) grid, geodesic distances, projection onto SO(3) and the robust frame fit
(catpose.geometry.so3)."""

import math

import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from catpose.geometry import fit_frame, geodesic_deg, project_so3, so3_grid


def test_so3_grid_is_rotations_on_every_device(device):
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        R = so3_grid(1024, device=device, dtype=dtype)
        assert R.shape == (1024, 3, 3) and R.dtype == dtype and R.device.type == torch.device(device).type
        eye = torch.eye(3, dtype=dtype, device=device).expand(1024, 3, 3)
        torch.testing.assert_close(R @ R.transpose(1, 2), eye, rtol=tol, atol=tol)
        torch.testing.assert_close(
            torch.det(R), torch.ones(1024, dtype=dtype, device=device), rtol=tol, atol=tol
        )
    np.testing.assert_allclose(so3_grid(256, device=device).cpu().numpy(), so3_grid(256).numpy(), atol=1e-6)


def test_so3_grid_covers_so3_evenly():
    R = so3_grid(1024, dtype=torch.float64)
    probes = roma.random_rotmat(500, dtype=torch.float64, device="cpu")
    cos = ((torch.einsum("pij,gij->pg", probes, R) - 1) / 2).clamp(-1, 1)
    worst = torch.rad2deg(torch.arccos(cos.max(dim=1).values)).max()
    # 1024 uniform rotations: covering radius about 1.5 x (8 pi^2 / 1024)^(1/3) rad
    assert worst < 1.6 * math.degrees((8 * math.pi**2 / 1024) ** (1 / 3))
    g = R.numpy()
    # no near-duplicates
    assert geodesic_deg(g[:200, None], g[None, :200])[~np.eye(200, dtype=bool)].min() > 2.0


@pytest.mark.parametrize("n, spacing_deg", [(1024, 22.5), (4096, 10.7), (32768, 5.5)])
def test_so3_grid_spacing_is_what_the_docs_say(n, spacing_deg):
    """The median nearest-neighbour distance quoted in so3_grid's docstring and the configs (±0.5°)."""
    g = so3_grid(n, dtype=torch.float64)
    sub = g[:: max(1, n // 400)]  # a sample of grid points against the whole grid
    cos = ((torch.einsum("pij,gij->pg", sub, g) - 1) / 2).clamp(-1, 1)
    cos[cos > 1 - 1e-12] = -1  # the point itself
    nearest = torch.rad2deg(torch.arccos(cos.max(1).values))
    assert abs(float(nearest.median()) - spacing_deg) <= 0.5


def test_geodesic_and_projection_onto_so3():
    A = Rotation.random(50, random_state=0).as_matrix()
    ang = np.random.default_rng(1).uniform(0, 179, 50)
    axis = Rotation.random(50, random_state=2).as_rotvec()
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    B = Rotation.from_rotvec(axis * np.radians(ang)[:, None]).as_matrix() @ A
    np.testing.assert_allclose(geodesic_deg(A, B), ang, atol=1e-6)
    noisy = A + np.random.default_rng(3).normal(0, 0.05, A.shape)
    P = project_so3(noisy)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.broadcast_to(np.eye(3), P.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(P), 1.0, atol=1e-12)
    assert geodesic_deg(P, A).max() < 10
    np.testing.assert_allclose(project_so3(noisy[0]), P[0], atol=1e-12)  # one matrix or a stack
    # a det −1 input (a reflection) goes to a rotation, the nearest one in Frobenius norm: no rotation among
    # 2000 random ones nor among small turns of the projection lies closer
    M = -A[:3]
    Pm = project_so3(M)
    np.testing.assert_allclose(np.linalg.det(Pm), 1.0, atol=1e-12)
    np.testing.assert_allclose(Pm @ np.swapaxes(Pm, 1, 2), np.broadcast_to(np.eye(3), Pm.shape), atol=1e-12)
    best = np.linalg.norm(Pm - M, axis=(1, 2))
    others = Rotation.random(2000, random_state=7).as_matrix()
    assert np.all(np.linalg.norm(others[None] - M[:, None], axis=(2, 3)).min(1) >= best - 1e-9)
    turns = Rotation.from_rotvec(np.random.default_rng(8).normal(0, 0.05, (200, 3))).as_matrix()
    near = np.einsum("tij,mjk->mtik", turns, Pm)
    assert np.all(np.linalg.norm(near - M[:, None], axis=(2, 3)).min(1) >= best - 1e-9)


def test_fit_frame_recovers_the_rotation_despite_outliers():
    rng = np.random.default_rng(3)
    G = Rotation.random(random_state=4).as_matrix()
    R_est = Rotation.random(40, random_state=5).as_matrix()
    noise = Rotation.from_rotvec(rng.normal(0, np.radians(3), (40, 3))).as_matrix()
    R_gt = noise @ G @ R_est
    R_gt[:12] = Rotation.random(12, random_state=6).as_matrix()  # 30 % wrong estimates
    assert geodesic_deg(fit_frame(R_est, R_gt), G) < 2.0

"""Projection, z-buffer and visibility (catpose.geometry.projection) on CPU and ``--device cuda``, and
gradcheck of what the pose refinement differentiates."""

import numpy as np
import roma
import torch

from catpose.data.camera import Camera, look_at_rotation
from catpose.geometry import project, visibility, zbuffer


def fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], -1)


def cams_looking_at_origin(eyes, size=(64, 64)):
    out = []
    for e in eyes:
        R = look_at_rotation(
            e, np.zeros(3), up=(0, 0, 1) if abs(e[2]) < 0.9 * np.linalg.norm(e) else (0, 1, 0)
        )
        out.append(Camera(R, -np.asarray(e) @ R, (2.5, 2.5), (0, 0), size))
    return out


def tensors(cams, device):
    t = lambda a: torch.tensor(np.stack(a), dtype=torch.float32, device=device)
    return (t([c.R for c in cams]), t([c.T for c in cams]), t([c.focal_px for c in cams]),
            t([c.principal_point_px for c in cams]))


def test_project_matches_camera(device):
    rng = np.random.default_rng(0)
    cams = cams_looking_at_origin([[4, 1, 1], [-3, 2, 2], [0.5, -4, 1]], (48, 80))
    X = rng.normal(0, 0.5, (40, 3))
    uv, z = project(torch.tensor(X, dtype=torch.float32, device=device), *tensors(cams, device))
    for k, c in enumerate(cams):
        ruv, rz = c.project(X)
        np.testing.assert_allclose(uv[k].cpu().numpy(), ruv, atol=1e-3)
        np.testing.assert_allclose(z[k].cpu().numpy(), rz, atol=1e-4)


def test_hidden_vertices_are_not_visible(device):
    """On a sphere, exactly the side facing the camera is visible (up to a thin rim)."""
    dense = fibonacci_sphere(6000)
    verts = fibonacci_sphere(300)
    eyes = np.array([[5.0, 0, 0], [0, -5.0, 1.0], [-3.0, 3.0, -2.0]])
    cams = cams_looking_at_origin(eyes)
    R, T, f, p = tensors(cams, device)
    uv, z = project(torch.tensor(verts, dtype=torch.float32, device=device), R, T, f, p)
    duv, dz = project(torch.tensor(dense, dtype=torch.float32, device=device), R, T, f, p)
    vis = visibility(uv, z, (64, 64), zbuffer(duv, dz, (64, 64), margin=0.2), tol=0.1).cpu().numpy()
    for k, e in enumerate(eyes):
        facing = (verts * (e - verts)).sum(1)  # normal . direction to the camera
        cos = facing / np.linalg.norm(e - verts, axis=1)
        clear = np.abs(cos) > 0.25  # away from the silhouette rim
        assert (vis[k][clear] == (cos[clear] > 0)).mean() > 0.97
        assert not vis[k][np.argmin(verts @ e)]  # the far pole is hidden
        assert vis[k][np.argmax(verts @ e)]  # the near pole is visible


def test_gradcheck_projection_and_the_refinement_rotation(device):
    """The pose refinement differentiates uv = project(X, exp([ω]) R, T) with respect to ω and T."""
    torch.manual_seed(0)
    X = torch.randn(7, 3, dtype=torch.float64, device=device)
    R0 = roma.random_rotmat(2, dtype=torch.float64, device=device)
    T = torch.tensor(
        [[0.1, -0.2, 5.0], [0.0, 0.3, 4.0]], dtype=torch.float64, device=device, requires_grad=True
    )
    omega = (0.1 * torch.randn(2, 3, dtype=torch.float64, device=device)).requires_grad_(True)
    f = torch.tensor([[60.0, 60.0]] * 2, dtype=torch.float64, device=device)
    pp = torch.tensor([[32.0, 32.0]] * 2, dtype=torch.float64, device=device)

    def uv_of(w, t):
        uv, z = project(X, roma.rotvec_to_rotmat(w) @ R0, t, f, pp)
        return uv, z

    assert torch.autograd.gradcheck(uv_of, (omega, T), eps=1e-6, atol=1e-5)


def test_zbuffer_and_visibility_with_a_cell_size_per_frame(device):
    """A [K] tensor of cell sizes gives each frame the z-buffer and visibility that a call with its own
    one cell size gives (the buffer padded with inf to the smallest cell's shape)."""
    verts = torch.tensor(fibonacci_sphere(300), dtype=torch.float32, device=device)
    dense = torch.tensor(fibonacci_sphere(3000), dtype=torch.float32, device=device)
    cams = cams_looking_at_origin(np.array([[5.0, 0, 0], [0, -5.0, 1.0], [-3.0, 3.0, -2.0], [0, 0, 4.0]]))
    R, T, f, p = tensors(cams, device)
    uv, z = project(verts, R, T, f, p)
    duv, dz = project(dense, R, T, f, p)
    cells = torch.tensor([1, 3, 2, 3], device=device)
    zb = zbuffer(duv, dz, (64, 64), cell=cells, fill=2, margin=0.2)
    vis = visibility(uv, z, (64, 64), zb, tol=0.1, cell=cells)
    assert zb.shape == (4, 64, 64) and vis.shape == (4, 300)
    for k, c in enumerate(cells.tolist()):
        one = zbuffer(duv[k:k + 1], dz[k:k + 1], (64, 64), cell=c, fill=2, margin=0.2)
        h, w = one.shape[1:]
        torch.testing.assert_close(zb[k, :h, :w], one[0])
        assert torch.isinf(zb[k, h:]).all() and torch.isinf(zb[k, :, w:]).all()
        ref = visibility(uv[k:k + 1], z[k:k + 1], (64, 64), one, tol=0.1, cell=c)[0]
        assert torch.equal(vis[k], ref) and 20 < int(ref.sum()) < 180  # some of the near half shows

"""Vertices, projection and visibility of the surface features."""

import numpy as np
import pytest
import torch

from catpose.data.camera import Camera, look_at_rotation
from catpose.data.co3d import Co3dCategory
from catpose.features.backbones import ColorSift
from catpose.features.surface import (
    SurfaceFeatures,
    compute_surface_features,
    farthest_point_sample,
    project,
    remove_outliers,
    visibility,
    zbuffer,
)
from catpose.storage import Store


def fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], -1)


def cams_looking_at_origin(eyes, size=(64, 64)):
    out = []
    for e in eyes:
        R = look_at_rotation(e, np.zeros(3), up=(0, 0, 1) if abs(e[2]) < 0.9 * np.linalg.norm(e) else (0, 1, 0))
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


def rendered_visibility(sf, seq):
    """Per frame of ``sf``: (pixel rows, columns, mask, ground-truth visibility from the rendered depth)."""
    frames = {f.frame_number: f for f in seq.frames}
    for fn in sf.frame_numbers:
        fr = frames[fn]
        uv, z = fr.camera.project(sf.vertices)
        mask, depth = fr.load_mask(), fr.load_depth()
        u, v = np.floor(uv[:, 0]).astype(int).clip(0, 95), np.floor(uv[:, 1]).astype(int).clip(0, 95)
        yield v, u, mask, (mask[v, u] > 0.5) & (np.abs(depth[v, u] - z) < 0.05 * sf.meta["diameter"]) & (z > 0)


def test_visible_vertices_land_in_masks_and_agree_with_depth(synth_root):
    seq = next(iter(Co3dCategory(synth_root, "car")))
    sf = compute_surface_features(seq, ColorSift(), n_vertices=400, n_frames=6)
    assert sf.features.shape == (6, 400, ColorSift().dim) and sf.features.dtype == np.float16
    assert 0.1 < sf.visible.mean() < 0.7
    agree = []
    for k, (v, u, mask, gt) in enumerate(rendered_visibility(sf, seq)):
        vis = sf.visible[k]
        assert (mask[v[vis], u[vis]] > 0.5).all()  # visible vertices land in the mask
        assert not sf.features[k][~vis].any()  # and only they carry features
        agree.append((gt == vis).mean())
    assert np.mean(agree) > 0.95


def test_visibility_without_depth_maps_still_matches_rendered_depth(synth_root, tmp_path):
    """Raw-frame (SfM) data has no depth maps: the z-buffer alone must do."""
    import shutil

    from catpose.data.types import dump_annotations, load_frame_annotations

    root = tmp_path / "d"
    shutil.copytree(synth_root, root)
    fa = load_frame_annotations(root / "car" / "frame_annotations.jgz")
    for a in fa:
        a.depth = None
    dump_annotations(root / "car" / "frame_annotations.jgz", fa)
    sf = compute_surface_features(next(iter(Co3dCategory(root, "car"))), ColorSift(), n_vertices=400, n_frames=6)
    truth = rendered_visibility(sf, next(iter(Co3dCategory(synth_root, "car"))))
    assert np.mean([(gt == sf.visible[k]).mean() for k, (_, _, _, gt) in enumerate(truth)]) > 0.9


def test_outliers_removed_and_fps_spreads():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (2000, 3))
    far = np.array([[30.0, 0, 0], [0, -40.0, 0], [0, 0, 50.0]])
    keep = remove_outliers(np.concatenate([pts, far]))
    assert not keep[-3:].any() and keep[:-3].mean() > 0.95
    idx = farthest_point_sample(pts, 100)
    assert len(np.unique(idx)) == 100
    sub = pts[idx]
    d = np.linalg.norm(sub[:, None] - sub[None], axis=-1) + np.eye(100) * 1e9
    rand = pts[rng.choice(2000, 100, replace=False)]
    dr = np.linalg.norm(rand[:, None] - rand[None], axis=-1) + np.eye(100) * 1e9
    assert d.min() > 2 * dr.min()  # FPS keeps samples apart


@pytest.mark.parametrize("where", ["local", "s3"])
def test_surface_features_round_trip_through_the_store(where, tmp_path, request):
    rng = np.random.default_rng(0)
    sf = SurfaceFeatures("seq_1", rng.normal(size=(50, 3)).astype(np.float32),
                         rng.normal(size=(4, 50, 16)).astype(np.float16), rng.random((4, 50)) > 0.5,
                         np.arange(4), rng.normal(size=(50, 3)).astype(np.float32), {"backbone": "x"})
    if where == "local":
        store = Store(str(tmp_path / "store"))
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        store = Store(f"s3://{bucket}/feat", endpoint)
    store.write_bytes("car/seq_1.npz", sf.to_bytes())
    back = SurfaceFeatures.from_bytes(store.read_bytes("car/seq_1.npz"))
    assert back.sequence == "seq_1" and back.meta == {"backbone": "x"}
    for a in ("vertices", "features", "visible", "frame_numbers", "normals"):
        np.testing.assert_array_equal(getattr(back, a), getattr(sf, a))
